//! The `edit` interface (0.2.3): what a milter can change, asked for by the guest during a
//! hook and kept in its store (`edits`) until the hook returns. Each edit is checked when
//! asked for (an error the guest reads; nothing of it kept) and bounded: a new body streams
//! into the spool in parts and counts against `limits.message_size`, added recipients
//! against `limits.recipients`, and a hook's edits against `edits::MAX_EDITS` and
//! `MAX_EDIT_OCTETS`.

use super::bindings::wasmtp::plugin::edit::{self, EditError};
use super::bindings::wasmtp::plugin::types::Param as WireParam;
use super::edits::{Edit, EditTarget, Edits, NewBody, Scope};
use super::host::HostState;
use crate::proto::address::parse_mailbox;
use crate::proto::{MailParams, RcptParams};
use crate::spool::Recipient;

/// Most lines of a reply a plugin sets.
const MAX_REPLY_LINES: usize = 20;
/// Longest line of it. RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its
/// code and CRLF; the last line of a 250 also carries " (queued as ID)" (`SpoolId`, at
/// most 64 characters): 10 + 420 + 12 + 64 + 1 + 2 = 509.
const MAX_REPLY_LINE: usize = 420;

/// A bound passed, as the guest reads it.
fn over(counted: Result<(), String>) -> Result<(), EditError> {
    counted.map_err(EditError::OverLimit)
}

fn invalid(why: impl Into<String>) -> EditError {
    EditError::Invalid(why.into())
}

/// A field name is RFC 5322 `ftext`; a value one line (folded by the host if long).
fn check_field(name: &str, value: Option<&str>) -> Result<(), EditError> {
    if !super::verdict::is_field_name(name) {
        return Err(invalid(format!("bad header name {name:?}")));
    }
    // RFC 5322 3.2.5, RFC 6532 3.2: text is visible characters, spaces and tabs.
    if value.is_some_and(|v| v.chars().any(|c| c.is_control() && c != '\t')) {
        return Err(invalid(format!(
            "header {name} has a line break or a control character"
        )));
    }
    Ok(())
}

/// ESMTP parameters as on the wire (`NAME=VALUE NAME`), each checked as a client's would be.
fn wire(params: &[WireParam]) -> Result<String, EditError> {
    let mut out = Vec::new();
    for p in params {
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'=');
        if !ok(&p.name)
            || p.value
                .as_deref()
                .is_some_and(|v| !v.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(invalid(format!("bad parameter {:?}", p.name)));
        }
        out.push(match &p.value {
            Some(v) => format!("{}={v}", p.name),
            None => p.name.clone(),
        });
    }
    Ok(out.join(" "))
}

/// `chunk` with every line ending CRLF (RFC 5321 2.3.8: a bare CR or LF is no line end on
/// the wire, and passed on could hide a `.` line from the next hop). `cr`: the text so far
/// ended with a CR whose LF may start this chunk; it says the same of this chunk after.
fn crlf(chunk: &[u8], cr: &mut bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 64);
    for &b in chunk {
        if *cr && b != b'\n' {
            out.push(b'\n');
        }
        if b == b'\n' && !*cr {
            out.push(b'\r');
        }
        out.push(b);
        *cr = b == b'\r';
    }
    out
}

impl HostState {
    /// The edits of the data call in progress, with its target.
    fn data_scope(&mut self) -> Result<(&mut Edits, EditTarget), EditError> {
        match &mut self.edit {
            Some(Scope {
                target: Some(target),
                edits,
            }) => Ok((edits, target.clone())),
            _ => Err(EditError::NotNow),
        }
    }
}

impl edit::Host for HostState {
    async fn write_body(&mut self, chunk: Vec<u8>) -> wasmtime::Result<Result<(), EditError>> {
        let (edits, target) = match self.data_scope() {
            Ok(scope) => scope,
            Err(e) => return Ok(Err(e)),
        };
        if edits.body_refused {
            return Ok(Err(invalid(
                "the new body was refused before; the message keeps its own",
            )));
        }
        let mut cr = edits.body.as_ref().is_some_and(|b| b.cr);
        let lines = crlf(&chunk, &mut cr);
        let written = edits.body.as_ref().map_or(0, |b| b.len);
        // Over the limit: the whole new body goes, not the part of it written so far.
        if written + lines.len() as u64 + u64::from(cr) > target.max_body {
            edits.body = None;
            edits.body_refused = true;
            return Ok(Err(EditError::OverLimit(format!(
                "the new body would take the message past limits.message_size ({} octets for the body); the message keeps its own",
                target.max_body
            ))));
        }
        let body = edits.body.get_or_insert_with(|| NewBody {
            incoming: target.spool.incoming(target.min_free),
            len: 0,
            cr: false,
        });
        body.len += lines.len() as u64;
        body.cr = cr;
        // A block at a time to the spool: one in memory, one on its way.
        let mut rest = &lines[..];
        while !rest.is_empty() {
            let block = body.incoming.block();
            let room = crate::spool::BLOCK.saturating_sub(block.len()).max(1);
            let (now, later) = rest.split_at(room.min(rest.len()));
            block.extend_from_slice(now);
            body.incoming.flush().await;
            rest = later;
        }
        Ok(Ok(()))
    }

    async fn set_sender(
        &mut self,
        address: String,
        params: Vec<WireParam>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        Ok((|| {
            let (edits, _) = self.data_scope()?;
            let sender = match address.as_str() {
                "" => None,
                a => Some(parse_mailbox(a).map_err(|e| invalid(format!("sender {a:?}: {e}")))?),
            };
            let params = MailParams::parse(&wire(&params)?)
                .map_err(|e| invalid(format!("sender parameters: {e:?}")))?;
            over(edits.count(address.len()))?;
            edits.edits.push(Edit::SetSender { sender, params });
            Ok(())
        })())
    }

    async fn insert_header(
        &mut self,
        index: u32,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), EditError>> {
        Ok((|| {
            check_field(&name, Some(&value))?;
            let (edits, _) = self.data_scope()?;
            over(edits.count(name.len() + value.len() + 4))?;
            edits.edits.push(Edit::InsertHeader { index, name, value });
            Ok(())
        })())
    }

    async fn change_header(
        &mut self,
        name: String,
        occurrence: u32,
        value: Option<String>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        Ok((|| {
            check_field(&name, value.as_deref())?;
            if occurrence == 0 {
                return Err(invalid("occurrences count from 1"));
            }
            let (edits, _) = self.data_scope()?;
            over(edits.count(name.len() + value.as_ref().map_or(0, String::len) + 4))?;
            edits.edits.push(Edit::ChangeHeader {
                name,
                occurrence,
                value,
            });
            Ok(())
        })())
    }

    async fn add_recipient(
        &mut self,
        address: String,
        params: Vec<WireParam>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        Ok((|| {
            let (edits, target) = self.data_scope()?;
            let address = parse_mailbox(&address)
                .map_err(|e| invalid(format!("recipient {address:?}: {e}")))?;
            let params = RcptParams::parse(&wire(&params)?)
                .map_err(|e| invalid(format!("recipient parameters: {e:?}")))?;
            if edits.recipients >= target.max_recipients {
                return Err(EditError::OverLimit("limits.recipients".into()));
            }
            over(edits.count(address.to_string().len()))?;
            edits.recipients += 1;
            edits
                .edits
                .push(Edit::AddRecipient(Recipient { address, params }));
            Ok(())
        })())
    }

    async fn set_reply(&mut self, lines: Vec<String>) -> wasmtime::Result<Result<(), EditError>> {
        Ok((|| {
            let Some(scope) = &mut self.edit else {
                return Err(EditError::NotNow);
            };
            if lines.is_empty() || lines.len() > MAX_REPLY_LINES {
                return Err(invalid(format!("a reply has 1 to {MAX_REPLY_LINES} lines")));
            }
            // RFC 5321 4.2: reply text is printable US-ASCII, with spaces and tabs.
            let printable =
                |l: &String| l.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
            if !lines.iter().all(printable) {
                return Err(invalid(
                    "a reply line has a control character or is not US-ASCII",
                ));
            }
            if lines.iter().any(|l| l.len() > MAX_REPLY_LINE) {
                return Err(invalid(format!(
                    "a reply line is at most {MAX_REPLY_LINE} octets"
                )));
            }
            over(scope.edits.count(lines.iter().map(String::len).sum()))?;
            scope.edits.reply = Some(lines);
            Ok(())
        })())
    }
}
