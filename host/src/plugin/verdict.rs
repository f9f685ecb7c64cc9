//! What plugins answer, checked before the host acts on it: a verdict's reply must fit the
//! verdict, and a change must be one the host can apply safely.

use super::bindings::types::{self, Change, DataVerdict, Verdict};
use super::fault::GuestFault;
use crate::proto::Reply;

/// What the chain of plugins decided for one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No plugin objected: the host goes on.
    Continue,
    /// A plugin accepted explicitly (skipping the rest); for VRFY/EXPN the host's own answer.
    Accept,
    Refuse(Reply),
    /// Reply, then close the connection.
    Disconnect(Reply),
    /// At data only: accept, but hold the message.
    Quarantine(String),
    /// At data only: accept and drop.
    Discard,
}

impl Decision {
    /// The names of the kinds in metrics and logs, in `index` order.
    pub const KINDS: [&'static str; 6] = [
        "continue",
        "accept",
        "refuse",
        "disconnect",
        "quarantine",
        "discard",
    ];

    /// Where its kind is in `KINDS`.
    pub fn index(&self) -> usize {
        match self {
            Decision::Continue => 0,
            Decision::Accept => 1,
            Decision::Refuse(_) => 2,
            Decision::Disconnect(_) => 3,
            Decision::Quarantine(_) => 4,
            Decision::Discard => 5,
        }
    }

    /// Its name in metrics and logs.
    pub fn kind(&self) -> &'static str {
        Self::KINDS[self.index()]
    }
}

/// The data hook's decision with the changes asked for by the plugins that ran: those of
/// their `data-result`s, then their `edit` calls, the last new body written, and the text
/// of the 250 (the last set).
pub struct DataOutcome {
    pub decision: Decision,
    pub changes: Vec<Change>,
    pub edits: Vec<super::Edit>,
    pub body: Option<super::NewBody>,
    pub reply: Option<Vec<String>>,
}

impl Default for DataOutcome {
    fn default() -> Self {
        DataOutcome {
            decision: Decision::Continue,
            changes: Vec::new(),
            edits: Vec::new(),
            body: None,
            reply: None,
        }
    }
}

impl From<Verdict> for DataVerdict {
    fn from(v: Verdict) -> DataVerdict {
        match v {
            Verdict::Continue => DataVerdict::Continue,
            Verdict::Accept => DataVerdict::Accept,
            Verdict::Reject(r) => DataVerdict::Reject(r),
            Verdict::Tempfail(r) => DataVerdict::Tempfail(r),
            Verdict::Disconnect(r) => DataVerdict::Disconnect(r),
        }
    }
}

/// Longest reply or quarantine text taken from a plugin.
const MAX_TEXT: usize = 500;

/// Checks that a reply fits its verdict: reject 5xx with 5.x.y, tempfail 4xx with 4.x.y,
/// disconnect 421 with 4.x.y. Text is kept to one line.
pub fn validate(v: DataVerdict) -> Result<Decision, GuestFault> {
    Ok(match v {
        DataVerdict::Continue => Decision::Continue,
        DataVerdict::Accept => Decision::Accept,
        DataVerdict::Reject(r) => Decision::Refuse(check_reply(r, 5, None)?),
        DataVerdict::Tempfail(r) => Decision::Refuse(check_reply(r, 4, None)?),
        DataVerdict::Disconnect(r) => Decision::Disconnect(check_reply(r, 4, Some(421))?),
        DataVerdict::Quarantine(reason) => Decision::Quarantine(
            reason
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_TEXT)
                .collect(),
        ),
        DataVerdict::Discard => Decision::Discard,
    })
}

fn check_reply(r: types::Reply, class: u16, exact: Option<u16>) -> Result<Reply, GuestFault> {
    let bad = |why: &'static str| GuestFault::BadReply {
        code: r.code,
        enhanced: r.enhanced.clone(),
        text: r.text.clone(),
        why,
    };
    if r.code / 100 != class || exact.is_some_and(|c| c != r.code) || r.code % 100 > 59 {
        return Err(bad(if class == 5 {
            "code does not fit the verdict (needs 5xx)"
        } else {
            "code does not fit the verdict (needs 4xx)"
        }));
    }
    let parts: Vec<u16> = r
        .enhanced
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    let [c, s, d] = parts[..] else {
        return Err(bad("enhanced code must be class.subject.detail"));
    };
    if c != class || s > 999 || d > 999 {
        return Err(bad("enhanced code class does not match the reply code"));
    }
    let text: String = r
        .text
        .chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .take(MAX_TEXT)
        .collect();
    let text = if text.trim().is_empty() {
        "Refused by policy".to_string()
    } else {
        text
    };
    Ok(Reply::dynamic(r.code, s, d, text))
}

/// Most header octets one plugin may add at once.
const MAX_ADDED_HEADERS: usize = 64 * 1024;

/// Header names are RFC 5322 `ftext`; values one line; recipients valid mailboxes.
pub fn validate_changes(changes: &[Change]) -> Result<(), GuestFault> {
    let bad = |why: String| Err(GuestFault::BadChange(why));
    let mut added = 0;
    for c in changes {
        match c {
            Change::AddHeader(h) => {
                added += h.name.len() + h.value.len() + 4;
                if !is_field_name(&h.name) {
                    return bad(format!("bad header name {:?}", truncate(&h.name)));
                }
                if h.value.contains(['\r', '\n']) {
                    return bad(format!("header {} has a line break", h.name));
                }
            }
            Change::RemoveHeader(name) if !is_field_name(name) => {
                return bad(format!("bad header name {:?}", truncate(name)));
            }
            Change::RemoveHeader(_) => {}
            Change::AddRecipient(r) | Change::RemoveRecipient(r) => {
                if crate::proto::address::parse_mailbox(r).is_err() {
                    return bad(format!("bad recipient {:?}", truncate(r)));
                }
            }
        }
    }
    if added > MAX_ADDED_HEADERS {
        return bad(format!(
            "adds {added} octets of header fields (limit {MAX_ADDED_HEADERS})"
        ));
    }
    Ok(())
}

pub(super) fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 76
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}
