//! What the plugins see of an envelope, and what their data-hook changes do to a message:
//! header fields added and removed, recipients added and removed, and their `edit` calls
//! (fields inserted and changed in place, the sender, recipients with parameters). The same
//! before the 250 (`session`) and after the queue (`delivery`).

use crate::plugin::{Edit, PluginChange, PluginParam, PluginSender};
use crate::proto::header;
use crate::proto::params::Param;
use crate::proto::{MailParams, Mailbox};
use crate::spool::Recipient;
use std::borrow::Cow;
use std::collections::HashSet;

/// Parameters as plugins see them: names and values as on the wire.
pub fn plugin_params(params: Vec<Param>) -> Vec<PluginParam> {
    params
        .into_iter()
        .map(|p| PluginParam {
            name: p.keyword.as_str().into(),
            value: p.value,
        })
        .collect()
}

/// The sender and its parameters as plugins see them.
pub fn sender_record(from: &Option<Mailbox>, params: &MailParams) -> PluginSender {
    PluginSender {
        address: from.as_ref().map(|m| m.to_string()).unwrap_or_default(),
        params: plugin_params(params.to_wire()),
    }
}

/// Header fields to add and names to remove, from the plugins' changes.
pub struct HeaderEdits {
    pub add: String,
    pub remove: Vec<String>,
}

pub fn header_edits(changes: &[PluginChange]) -> HeaderEdits {
    let mut edits = HeaderEdits {
        add: String::new(),
        remove: Vec::new(),
    };
    for c in changes {
        match c {
            PluginChange::AddHeader(h) => {
                edits.add.push_str(&format!("{}: {}\r\n", h.name, h.value))
            }
            PluginChange::RemoveHeader(name) => edits.remove.push(name.to_ascii_lowercase()),
            _ => {}
        }
    }
    edits
}

/// Drops every header field (with its continuation lines) whose name is in `names`.
pub fn remove_fields(content: &[u8], names: &[String]) -> Option<Vec<u8>> {
    crate::proto::header::without(content, |f| {
        names
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(f.name))
    })
}

/// Adds and removes envelope recipients as plugins asked (milter-like), in their order, in
/// linear time; added ones count against `limits.recipients` (beyond it they are dropped).
pub fn apply_recipient_changes(
    recipients: &mut Vec<Recipient>,
    changes: &[PluginChange],
    limit: usize,
) {
    let key = |a: &str| a.to_ascii_lowercase();
    let mut present: HashSet<String> = recipients
        .iter()
        .map(|r| key(&r.address.to_string()))
        .collect();
    let mut removed: HashSet<String> = HashSet::new();
    for c in changes {
        match c {
            PluginChange::AddRecipient(r) => {
                let k = key(r);
                if present.len() < limit && removed.remove(&k) {
                    // Removed, then added again: the original stays, with its parameters.
                    present.insert(k);
                } else if present.len() < limit
                    && !present.contains(&k)
                    && let Ok(address) = crate::proto::address::parse_mailbox(r)
                {
                    present.insert(k);
                    recipients.push(Recipient {
                        address,
                        params: Default::default(),
                    });
                }
            }
            PluginChange::RemoveRecipient(r) => {
                let k = key(r);
                if present.remove(&k) {
                    removed.insert(k);
                }
            }
            _ => {}
        }
    }
    if !removed.is_empty() {
        recipients.retain(|x| !removed.contains(&key(&x.address.to_string())));
    }
}

/// Applies the plugins' `edit` calls, in order, to the header section (with its empty
/// line) and the envelope. The header section is taken apart into fields once and put
/// together once, so each edit costs a pass over the fields (not their octets), and a hook
/// asks for at most `plugin::edit::MAX_EDITS`. Added recipients count against `limit`;
/// the sender's SIZE stays the host's.
pub fn apply_edits(
    edits: &[Edit],
    header: &mut Vec<u8>,
    sender: &mut Option<Mailbox>,
    params: &mut MailParams,
    recipients: &mut Vec<Recipient>,
    limit: usize,
) {
    edit_fields(edits, header);
    let key = |r: &Recipient| r.address.to_string().to_ascii_lowercase();
    let mut present: Option<HashSet<String>> = None;
    for e in edits {
        match e {
            Edit::SetSender {
                sender: new,
                params: new_params,
            } => {
                *sender = new.clone();
                let size = params.size;
                *params = new_params.clone();
                params.size = size;
            }
            Edit::AddRecipient(r) => {
                let present = present.get_or_insert_with(|| recipients.iter().map(key).collect());
                if recipients.len() < limit && present.insert(key(r)) {
                    recipients.push(r.clone());
                }
            }
            Edit::InsertHeader { .. } | Edit::ChangeHeader { .. } => {}
        }
    }
}

/// A header field's text, line ends included.
type Text<'a> = Cow<'a, [u8]>;

/// The `insert-header` and `change-header` edits, in order. Positions count the fields as
/// the edits before left them; lines before the first field and the empty line stay.
fn edit_fields(edits: &[Edit], header: &mut Vec<u8>) {
    let edits_fields =
        |e: &&Edit| matches!(e, Edit::InsertHeader { .. } | Edit::ChangeHeader { .. });
    if !edits.iter().any(|e| edits_fields(&e)) {
        return;
    }
    let found: Vec<header::Field<'_>> = header::fields(header).collect();
    let (lead, tail) = match (found.first(), found.last()) {
        (Some(first), Some(last)) => (first.range.start, last.range.end),
        _ => (0, 0),
    };
    let mut fields: Vec<(Cow<'_, [u8]>, Text<'_>)> = found
        .iter()
        .map(|f| {
            (
                Cow::Borrowed(f.name),
                Cow::Borrowed(&header[f.range.clone()]),
            )
        })
        .collect();
    let text = |name: &str, value: &str| Cow::Owned(format!("{name}: {value}\r\n").into_bytes());
    for e in edits.iter().filter(edits_fields) {
        match e {
            Edit::InsertHeader { index, name, value } => {
                let at = (*index as usize).min(fields.len());
                fields.insert(
                    at,
                    (Cow::Owned(name.as_bytes().to_vec()), text(name, value)),
                );
            }
            Edit::ChangeHeader {
                name,
                occurrence,
                value,
            } => {
                let Some(nth) = (*occurrence as usize).checked_sub(1) else {
                    continue;
                };
                let found = (fields.iter().enumerate())
                    .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name.as_bytes()))
                    .nth(nth)
                    .map(|(i, _)| i);
                match (found, value) {
                    (Some(i), Some(v)) => fields[i].1 = text(name, v),
                    (Some(i), None) => {
                        fields.remove(i);
                    }
                    (None, _) => {}
                }
            }
            Edit::SetSender { .. } | Edit::AddRecipient(_) => {}
        }
    }
    let mut out = Vec::with_capacity(header.len() + fields.len());
    out.extend_from_slice(&header[..lead]);
    for (_, field) in &fields {
        out.extend_from_slice(field);
    }
    out.extend_from_slice(&header[tail..]);
    drop(fields);
    *header = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::PluginChange as C;

    fn rcpt(a: &str) -> Recipient {
        Recipient {
            address: crate::proto::address::parse_mailbox(a).unwrap(),
            params: Default::default(),
        }
    }

    fn addresses(r: &[Recipient]) -> Vec<String> {
        r.iter().map(|r| r.address.to_string()).collect()
    }

    #[test]
    fn removes_folded_fields_only_in_the_header() {
        let msg = b"A: 1\r\nX-Drop: a\r\n b\r\nB: 2\r\n\r\nX-Drop: body stays\r\n";
        let out = remove_fields(msg, &["x-drop".into()]).unwrap();
        assert_eq!(out, b"A: 1\r\nB: 2\r\n\r\nX-Drop: body stays\r\n");
    }

    #[test]
    fn recipient_changes_in_order_bounded_and_linear() {
        let mut r = vec![rcpt("a@x.test"), rcpt("b@x.test")];
        let changes = [
            C::RemoveRecipient("A@x.test".into()),
            C::AddRecipient("c@x.test".into()),
            C::AddRecipient("c@x.test".into()),
            C::AddRecipient("a@x.test".into()),
            C::RemoveRecipient("b@x.test".into()),
            C::AddRecipient("d@x.test".into()),
        ];
        apply_recipient_changes(&mut r, &changes, 2);
        // a comes back too late (b and c fill the limit of 2 then); d fits once b is gone.
        assert_eq!(addresses(&r), ["c@x.test", "d@x.test"]);
        // 100,000 changes take a moment, not minutes.
        let mut r = vec![rcpt("a@x.test")];
        let many: Vec<_> = (0..100_000)
            .map(|i| C::AddRecipient(format!("u{i}@x.test")))
            .chain((0..100_000).map(|i| C::RemoveRecipient(format!("u{i}@x.test"))))
            .collect();
        let started = std::time::Instant::now();
        apply_recipient_changes(&mut r, &many, 100);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(addresses(&r), ["a@x.test"]);
    }

    #[test]
    fn edits_insert_change_and_delete_fields_in_place() {
        let mut header = b"A: 1\r\nB: 2\r\nA: 3\r\n folded\r\n\r\n".to_vec();
        let edits = [
            Edit::InsertHeader {
                index: 1,
                name: "X".into(),
                value: "in".into(),
            },
            Edit::InsertHeader {
                index: 99,
                name: "Z".into(),
                value: "end".into(),
            },
            Edit::ChangeHeader {
                name: "a".into(),
                occurrence: 2,
                value: Some("three".into()),
            },
            Edit::ChangeHeader {
                name: "B".into(),
                occurrence: 1,
                value: None,
            },
            Edit::ChangeHeader {
                name: "B".into(),
                occurrence: 5,
                value: Some("none".into()),
            },
            Edit::AddRecipient(Recipient {
                address: crate::proto::address::parse_mailbox("n@x.test").unwrap(),
                params: crate::proto::RcptParams::parse("NOTIFY=NEVER").unwrap(),
            }),
            Edit::SetSender {
                sender: None,
                params: MailParams::parse("RET=HDRS").unwrap(),
            },
        ];
        let (mut sender, mut params) = (
            Some(crate::proto::address::parse_mailbox("s@x.test").unwrap()),
            MailParams::parse("SIZE=100").unwrap(),
        );
        let mut r = vec![rcpt("a@x.test")];
        apply_edits(&edits, &mut header, &mut sender, &mut params, &mut r, 2);
        assert_eq!(
            String::from_utf8(header).unwrap(),
            "A: 1\r\nX: in\r\na: three\r\nZ: end\r\n\r\n"
        );
        assert_eq!(addresses(&r), ["a@x.test", "n@x.test"]);
        assert!(r[1].params.notify.is_some());
        assert_eq!(
            (sender, params.size, params.ret.is_some()),
            (None, Some(100), true)
        );
    }
}
