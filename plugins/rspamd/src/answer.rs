//! Rspamd's `/checkv2` reply and what the gateway answers for it.

use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use wasmtp_sdk::{Change, DataResult, DataVerdict, Header, Verdict};

/// What the gateway does for an Rspamd action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// `550 5.7.1` with Rspamd's message.
    Reject,
    /// `451 4.7.1` with Rspamd's message.
    Tempfail,
    /// Deliver with `X-Spam: Yes`.
    AddHeader,
    /// Deliver with the subject Rspamd gives.
    RewriteSubject,
    /// Accept and hold in the spool.
    Quarantine,
    /// Accept and drop.
    Discard,
    /// Deliver.
    Continue,
}

/// Rspamd's actions (its `action` values) and what they mean by default.
pub fn defaults() -> HashMap<String, Answer> {
    [
        ("reject", Answer::Reject),
        ("soft reject", Answer::Tempfail),
        ("greylist", Answer::Tempfail),
        ("add header", Answer::AddHeader),
        ("rewrite subject", Answer::RewriteSubject),
        ("no action", Answer::Continue),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b))
    .collect()
}

/// The parts of the reply used (the rest, such as `symbols`, is ignored).
#[derive(Debug, Deserialize)]
pub struct Scan {
    action: String,
    #[serde(default)]
    score: f64,
    #[serde(default)]
    required_score: f64,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    messages: HashMap<String, Value>,
    #[serde(default)]
    milter: Option<Milter>,
}

/// Rspamd's milter block: header fields to add and to remove.
#[derive(Debug, Default, Deserialize)]
struct Milter {
    /// Name → a value, `{"value": .., "order": ..}`, or a list of either.
    #[serde(default)]
    add_headers: HashMap<String, Value>,
    /// Name → which occurrence (0: all); every occurrence is removed here.
    #[serde(default)]
    remove_headers: HashMap<String, Value>,
}

/// Reply text from Rspamd: one line of printable characters, bounded.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect::<String>()
        .trim()
        .to_string()
}

/// The values of one `add_headers` entry.
fn values(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Object(o) => o
            .get("value")
            .and_then(Value::as_str)
            .map(|s| vec![s.to_string()])
            .unwrap_or_default(),
        Value::Array(list) => list.iter().flat_map(values).collect(),
        _ => Vec::new(),
    }
}

impl Scan {
    fn smtp_message(&self, default: &str) -> String {
        self.messages
            .get("smtp_message")
            .and_then(Value::as_str)
            .map(one_line)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| default.to_string())
    }

    /// `X-Spam-Status` says Yes for what Rspamd counts as spam (its own milter_headers rule:
    /// any action but `no action` and `greylist`).
    fn is_spam(&self) -> bool {
        self.action != "no action" && self.action != "greylist"
    }

    /// The verdict and changes for this reply, with `actions` (Rspamd action → answer).
    pub fn result(&self, actions: &HashMap<String, Answer>) -> DataResult {
        let answer = actions
            .get(self.action.as_str())
            .copied()
            .unwrap_or(Answer::Continue);
        let verdict: DataVerdict = match answer {
            Answer::Reject => {
                let text = self.smtp_message("Spam message rejected");
                return DataResult::verdict(Verdict::reject(550, "5.7.1", &text));
            }
            Answer::Tempfail => {
                let text = self.smtp_message("Try again later");
                return DataResult::verdict(Verdict::tempfail(451, "4.7.1", &text));
            }
            Answer::Quarantine => DataVerdict::Quarantine(format!(
                "rspamd: {} (score {:.2})",
                self.action, self.score
            )),
            Answer::Discard => return DataResult::verdict(DataVerdict::Discard),
            Answer::AddHeader | Answer::RewriteSubject | Answer::Continue => DataVerdict::Continue,
        };
        let mut changes = Vec::new();
        let add = |changes: &mut Vec<Change>, name: &str, value: String| {
            changes.push(Change::AddHeader(Header {
                name: name.to_string(),
                value: one_line(&value),
            }))
        };
        if let Some(milter) = &self.milter {
            for name in milter.remove_headers.keys() {
                changes.push(Change::RemoveHeader(name.clone()));
            }
            for (name, v) in &milter.add_headers {
                changes.push(Change::RemoveHeader(name.clone()));
                for value in values(v) {
                    add(&mut changes, name, value);
                }
            }
        }
        for name in ["X-Spam", "X-Spam-Score", "X-Spam-Status"] {
            changes.push(Change::RemoveHeader(name.into()));
        }
        if answer == Answer::AddHeader {
            add(&mut changes, "X-Spam", "Yes".into());
        }
        if answer == Answer::RewriteSubject
            && let Some(subject) = &self.subject
        {
            changes.push(Change::RemoveHeader("Subject".into()));
            add(&mut changes, "Subject", subject.clone());
        }
        add(&mut changes, "X-Spam-Score", format!("{:.2}", self.score));
        let status = format!(
            "{}, score={:.2} required={:.2} action={}",
            if self.is_spam() { "Yes" } else { "No" },
            self.score,
            self.required_score,
            self.action
        );
        add(&mut changes, "X-Spam-Status", status);
        DataResult { verdict, changes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(json: &str) -> DataResult {
        let scan: Scan = serde_json::from_str(json).unwrap();
        scan.result(&defaults())
    }

    fn added(r: &DataResult, name: &str) -> Vec<String> {
        r.changes
            .iter()
            .filter_map(|c| match c {
                Change::AddHeader(h) if h.name == name => Some(h.value.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn reject_uses_rspamds_message() {
        let r = scan(
            r#"{"action":"reject","score":15,"required_score":15,"messages":{"smtp_message":"Gtube\r\npattern"}}"#,
        );
        match r.verdict {
            DataVerdict::Reject(reply) => {
                assert_eq!((reply.code, reply.text.as_str()), (550, "Gtube  pattern"))
            }
            other => panic!("{other:?}"),
        }
        let r = scan(r#"{"action":"soft reject","score":1}"#);
        assert!(
            matches!(r.verdict, DataVerdict::Tempfail(ref p) if p.code == 451 && p.text == "Try again later")
        );
    }

    #[test]
    fn clean_mail_gets_the_status_fields_and_the_milter_block() {
        let r = scan(
            r#"{"action":"no action","score":-0.1,"required_score":15,
                "milter":{"remove_headers":{"X-Spam":0},
                          "add_headers":{"X-A":{"value":"1","order":0},"X-B":["2",{"value":"3"}]}}}"#,
        );
        assert!(matches!(r.verdict, DataVerdict::Continue));
        assert_eq!(added(&r, "X-Spam-Score"), ["-0.10"]);
        assert_eq!(
            added(&r, "X-Spam-Status"),
            ["No, score=-0.10 required=15.00 action=no action"]
        );
        assert_eq!(added(&r, "X-A"), ["1"]);
        assert_eq!(added(&r, "X-B"), ["2", "3"]);
        assert!(added(&r, "X-Spam").is_empty());
        assert!(
            r.changes
                .iter()
                .any(|c| matches!(c, Change::RemoveHeader(n) if n == "X-Spam"))
        );
    }

    #[test]
    fn add_header_and_rewrite_subject() {
        let r = scan(r#"{"action":"add header","score":6,"required_score":15}"#);
        assert_eq!(added(&r, "X-Spam"), ["Yes"]);
        assert!(added(&r, "X-Spam-Status")[0].starts_with("Yes, score=6.00"));
        let r = scan(r#"{"action":"rewrite subject","score":0,"subject":"*** SPAM *** hi"}"#);
        assert_eq!(added(&r, "Subject"), ["*** SPAM *** hi"]);
    }

    #[test]
    fn overrides_change_the_answer() {
        let mut actions = defaults();
        actions.insert("add header".into(), Answer::Quarantine);
        let scan: Scan = serde_json::from_str(r#"{"action":"add header","score":6}"#).unwrap();
        assert!(matches!(
            scan.result(&actions).verdict,
            DataVerdict::Quarantine(_)
        ));
    }
}
