//! What the spool keeps of a message's delivery: its queue state and each recipient's
//! status, with the reply that decided it as a value (code, enhanced code, text and who
//! gave it), so reports and listings never parse text back.

use super::Envelope;
use crate::proto::{EnhancedCode, Reply};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A reply as the spool keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub struct StoredReply {
    /// 0 only for a reply read from an old spool whose text does not start with a code.
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enhanced: Option<EnhancedCode>,
    pub text: String,
    /// The server that gave it (its name: a report's Remote-MTA, RFC 3464 2.3.5), or `None`
    /// when we did (a connection that failed, a loop, a message that hop cannot take).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
}

/// The forms a stored reply has had: fields, or (spools written before) the text
/// `Reply`'s `Display` gave, such as "550 5.1.1 no such user".
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Fields {
        code: u16,
        #[serde(default)]
        enhanced: Option<EnhancedCode>,
        text: String,
        #[serde(default)]
        remote: Option<String>,
    },
    Text(String),
}

impl From<Stored> for StoredReply {
    fn from(stored: Stored) -> StoredReply {
        match stored {
            Stored::Fields {
                code,
                enhanced,
                text,
                remote,
            } => StoredReply {
                code,
                enhanced,
                text,
                remote,
            },
            Stored::Text(text) => StoredReply::from_text(text),
        }
    }
}

impl StoredReply {
    pub fn new(reply: &Reply, remote: Option<&str>) -> StoredReply {
        StoredReply {
            code: reply.code,
            enhanced: reply.enhanced,
            text: reply.text.replace('\n', " / "),
            remote: remote.map(str::to_string),
        }
    }

    /// An old spool's text. Who gave it is unknown, so it counts as ours (a report then
    /// names no remote server). The code is the text's; a text that quotes a reply after a
    /// prefix ("expired after delivery.max_age: 451 4.4.4 ...") keeps that reply's enhanced
    /// code, and code 0, so that it shows as it was.
    fn from_text(text: String) -> StoredReply {
        let parse = |s: &str| {
            Reply::parse(format!("{s}\r\n").as_bytes())
                .ok()
                .flatten()
                .map(|(r, _)| r)
        };
        match parse(&text) {
            Some(r) => StoredReply::new(&r, None),
            None => {
                let quoted = text.split_once(": ").and_then(|(_, rest)| parse(rest));
                StoredReply {
                    code: 0,
                    enhanced: quoted.and_then(|r| r.enhanced),
                    text,
                    remote: None,
                }
            }
        }
    }
}

impl fmt::Display for StoredReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.enhanced) {
            (0, _) => f.write_str(&self.text),
            (code, Some(e)) => write!(f, "{code} {e} {}", self.text),
            (code, None) => write!(f, "{code} {}", self.text),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reply", rename_all = "lowercase")]
pub enum RecipientStatus {
    Queued,
    /// Last attempt failed temporarily; the reply is the last one.
    Deferred(StoredReply),
    Delivered(StoredReply),
    Failed(StoredReply),
    /// Given up at `delivery.max_age`; the reply is the last attempt's (or ours, when none
    /// was made).
    Expired(StoredReply),
}

impl RecipientStatus {
    /// The reply that decided it, for all but a recipient never tried.
    pub fn reply(&self) -> Option<&StoredReply> {
        match self {
            RecipientStatus::Queued => None,
            RecipientStatus::Deferred(r)
            | RecipientStatus::Delivered(r)
            | RecipientStatus::Failed(r)
            | RecipientStatus::Expired(r) => Some(r),
        }
    }

    /// Failed for good, by a reply or by age.
    pub fn is_final_failure(&self) -> bool {
        matches!(
            self,
            RecipientStatus::Failed(_) | RecipientStatus::Expired(_)
        )
    }
}

/// The mutable delivery state of one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueState {
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt: i64,
    pub held: bool,
    /// Why the message is held (a plugin's quarantine reason, or the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_reason: Option<String>,
    /// A delay report (NOTIFY=DELAY) went out already.
    #[serde(default)]
    pub delay_warned: bool,
    pub recipients: Vec<RecipientStatus>,
    /// Waiting for the after-queue plugins' scan: nothing is delivered until its outcome
    /// is committed (the state without it, or the message rewritten with its changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<PendingScan>,
}

/// What the after-queue plugins are told of the session a message came in (the envelope
/// keeps the rest), kept until its scan's outcome is committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingScan {
    pub client_port: u16,
    pub listener: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
    /// The authentication results the session found, as the plugin contract's record.
    pub auth: serde_json::Value,
    /// Ours to DKIM-sign: the signature is made once the scan's changes are in.
    #[serde(default)]
    pub sign: bool,
    /// Ours to ARC-seal (`[arc]`, mail we verified): sealed once the scan's changes are in.
    #[serde(default)]
    pub seal: bool,
    /// Octets of our own fields on top of the message (Authentication-Results,
    /// `Received:`, those added before the queue): the scan's edits leave them as they are.
    #[serde(default)]
    pub head: u64,
    /// Octets of the whole header section as spooled (ours and the message's, with the
    /// empty line that ends it): where the body starts. 0 in spools written before it was
    /// kept (the scan then finds the end of the header section itself).
    #[serde(default)]
    pub header: u64,
}

/// `queue release` of a message that is not held.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the message is not held")]
pub struct NotHeld;

impl QueueState {
    pub fn new(envelope: &Envelope) -> QueueState {
        QueueState {
            attempts: 0,
            next_attempt: envelope.received_at,
            held: false,
            hold_reason: None,
            delay_warned: false,
            recipients: vec![RecipientStatus::Queued; envelope.recipients.len()],
            scan: None,
        }
    }

    /// Keeps it from delivery until released (the reason stays if a plugin gave one).
    pub fn hold(&mut self) {
        self.held = true;
        self.hold_reason
            .get_or_insert_with(|| "held by the operator".into());
    }

    /// Lets a held message go, due now; a message that is not held stays as it is.
    pub fn release(&mut self, now: i64) -> Result<(), NotHeld> {
        if !self.held {
            return Err(NotHeld);
        }
        self.held = false;
        self.hold_reason = None;
        self.next_attempt = now;
        Ok(())
    }

    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.recipients.iter().enumerate().filter_map(|(i, s)| {
            matches!(s, RecipientStatus::Queued | RecipientStatus::Deferred(_)).then_some(i)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_strings_of_spools_written_before() {
        let old: Vec<RecipientStatus> = serde_json::from_str(
            r#"[{"status":"queued"},
                {"status":"deferred","reply":"451 4.4.4 talking to [::1]:25: timed out"},
                {"status":"failed","reply":"550 5.1.1 no such user"},
                {"status":"failed","reply":"expired after delivery.max_age: 451 4.4.4 later"},
                {"status":"delivered","reply":"250 ok"},
                {"status":"failed","reply":"no code here"}]"#,
        )
        .unwrap();
        let reply = |code, enhanced, text: &str| StoredReply {
            code,
            enhanced,
            text: text.into(),
            remote: None,
        };
        assert_eq!(
            old,
            vec![
                RecipientStatus::Queued,
                RecipientStatus::Deferred(reply(
                    451,
                    Some(EnhancedCode(4, 4, 4)),
                    "talking to [::1]:25: timed out"
                )),
                RecipientStatus::Failed(reply(550, Some(EnhancedCode(5, 1, 1)), "no such user")),
                RecipientStatus::Failed(reply(
                    0,
                    Some(EnhancedCode(4, 4, 4)),
                    "expired after delivery.max_age: 451 4.4.4 later"
                )),
                RecipientStatus::Delivered(reply(250, None, "ok")),
                RecipientStatus::Failed(reply(0, None, "no code here")),
            ]
        );
        assert_eq!(
            old[2].reply().unwrap().to_string(),
            "550 5.1.1 no such user"
        );
        assert_eq!(old[5].reply().unwrap().to_string(), "no code here");
        assert_eq!(
            old[3].reply().unwrap().to_string(),
            "expired after delivery.max_age: 451 4.4.4 later"
        );
    }

    #[test]
    fn keeps_a_reply_as_fields() {
        let status = RecipientStatus::Expired(StoredReply::new(
            &Reply::dynamic(451, 4, 1, "no answer\nat all"),
            Some("mx.test"),
        ));
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(
            json,
            r#"{"status":"expired","reply":{"code":451,"enhanced":"4.4.1","text":"no answer / at all","remote":"mx.test"}}"#
        );
        assert_eq!(
            serde_json::from_str::<RecipientStatus>(&json).unwrap(),
            status
        );
    }
}
