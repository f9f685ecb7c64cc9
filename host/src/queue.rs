//! `wasmtp queue`: lists and acts on the spool, whether or not the server runs. A running
//! server is the only writer of delivery state, so changes are asked of it (`control`);
//! without one, they are made here under the spool's lock.

use crate::control::{self, Request};
use crate::spool::{QueueState, RecipientStatus, Spool, SpoolId};
use std::fmt::Write as _;
use std::io;

/// Why a queue command failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0:?} is not a queue id")]
    NotAnId(String),
    #[error("no message {0} in the queue")]
    NoSuchMessage(SpoolId),
    /// The request was refused (by the running server, or the spool).
    #[error("{0}")]
    Refused(String),
    #[error("spool: {0}")]
    Io(#[from] io::Error),
}

fn parse_id(id: &str) -> Result<SpoolId, QueueError> {
    SpoolId::parse(id).ok_or_else(|| QueueError::NotAnId(id.to_string()))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn age(seconds: i64) -> String {
    match seconds.max(0) {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Each recipient's state as the listing shows it: (state, last error).
fn recipient_state(state: &QueueState, status: &RecipientStatus) -> (&'static str, Option<String>) {
    let name = match status {
        RecipientStatus::Queued | RecipientStatus::Deferred(_) if state.held => "held",
        // Not delivered before the scan after the queue.
        RecipientStatus::Queued | RecipientStatus::Deferred(_) if state.scan.is_some() => {
            "scanning"
        }
        RecipientStatus::Queued => "queued",
        RecipientStatus::Deferred(_) => "deferred",
        RecipientStatus::Delivered(_) => "delivered",
        RecipientStatus::Failed(_) => "failed",
        RecipientStatus::Expired(_) => "expired",
    };
    (name, status.reply().map(ToString::to_string))
}

/// One line per message: id, age, size, sender, recipients with their state.
pub fn list(spool: &Spool, json: bool) -> Result<String, QueueError> {
    let mut out = String::new();
    for id in spool.list() {
        // A message delivered (and removed) while we list is simply gone.
        let Ok((envelope, state)) = spool.load_envelope(&id) else {
            continue;
        };
        let size = spool.message_size(&id).unwrap_or(0);
        let sender = envelope
            .sender
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let recipients: Vec<_> = envelope
            .recipients
            .iter()
            .zip(&state.recipients)
            .map(|(r, s)| (r.address.to_string(), recipient_state(&state, s)))
            .collect();
        if json {
            let value = serde_json::json!({
                "id": id.as_str(),
                "age_seconds": now() - envelope.received_at,
                "size": size,
                "sender": sender,
                "held": state.held,
                "hold_reason": state.hold_reason,
                "attempts": state.attempts,
                "scan_pending": state.scan.is_some(),
                "recipients": recipients.iter().map(|(a, (s, e))| serde_json::json!({"address": a, "state": s, "error": e})).collect::<Vec<_>>(),
            });
            writeln!(out, "{value}").ok();
        } else {
            let rcpts: Vec<String> = recipients
                .iter()
                .map(|(a, (s, e))| match e {
                    Some(e) if matches!(*s, "deferred" | "failed" | "scanning") => {
                        format!("<{a}> {s} ({e})")
                    }
                    _ => format!("<{a}> {s}"),
                })
                .collect();
            let held = match (&state.held, &state.hold_reason) {
                (true, Some(r)) => format!("  [held: {r}]"),
                _ => String::new(),
            };
            writeln!(
                out,
                "{id}  {}  {size}  <{sender}>  {}{held}",
                age(now() - envelope.received_at),
                rcpts.join(", ")
            )
            .ok();
        }
    }
    Ok(out)
}

/// Carries out `request`: through the running server when there is one (it holds the
/// spool's lock and is then the only writer), else on the spool directly, under the lock.
fn carry_out(spool: &Spool, request: Request) -> Result<String, QueueError> {
    let answer = match spool.take_over()? {
        None => control::ask(spool, &request)?,
        Some((spool, _lock)) => apply_offline(&spool, &request)?,
    };
    answer.map(|text| text + "\n").map_err(QueueError::Refused)
}

/// Without a server: changes the spool itself.
fn apply_offline(spool: &Spool, request: &Request) -> Result<control::Answer, QueueError> {
    let with_state = |id: &SpoolId, f: &dyn Fn(&mut QueueState) -> control::Answer| {
        let Ok((_, mut state)) = spool.load_envelope(id) else {
            return Ok(Err(QueueError::NoSuchMessage(id.clone()).to_string()));
        };
        let answer = f(&mut state);
        if answer.is_ok() {
            spool.save_state_sync(id, &state)?;
        }
        Ok::<_, QueueError>(answer)
    };
    match request {
        Request::Flush { domain } => {
            for (id, mut state) in due(spool, domain.as_deref())? {
                state.next_attempt = now();
                spool.save_state_sync(&id, &state)?;
            }
            Ok(Ok("flush requested".into()))
        }
        Request::Hold { id } => with_state(id, &|s| {
            s.hold();
            Ok(format!("held {id}"))
        }),
        Request::Release { id } => with_state(id, &|s| {
            s.release(now()).map_err(|e| e.to_string())?;
            Ok(format!("released {id}"))
        }),
        Request::Remove { id } => Ok(match spool.remove_sync(id) {
            Ok(()) => Ok(format!("removed {id}")),
            Err(_) => Err(QueueError::NoSuchMessage(id.clone()).to_string()),
        }),
    }
}

/// Messages a flush would retry: not held, with pending recipients (in `domain`).
fn due(spool: &Spool, domain: Option<&str>) -> Result<Vec<(SpoolId, QueueState)>, QueueError> {
    let mut out = Vec::new();
    for id in spool.list() {
        let Ok((envelope, state)) = spool.load_envelope(&id) else {
            continue;
        };
        let matches = domain.is_none_or(|d| {
            state.pending().any(|i| {
                envelope.recipients[i]
                    .address
                    .domain
                    .eq_ignore_ascii_case(d)
            })
        });
        if matches && !state.held && state.pending().next().is_some() {
            out.push((id, state));
        }
    }
    Ok(out)
}

/// Retries deferred mail now (all, or that with recipients in `domain`).
pub fn flush(spool: &Spool, domain: Option<&str>) -> Result<String, QueueError> {
    let count = due(spool, domain)?.len();
    carry_out(
        spool,
        Request::Flush {
            domain: domain.map(str::to_string),
        },
    )?;
    Ok(format!("flush requested for {count} message(s)\n"))
}

pub fn remove(spool: &Spool, id: &str) -> Result<String, QueueError> {
    carry_out(spool, Request::Remove { id: parse_id(id)? })
}

pub fn hold(spool: &Spool, id: &str) -> Result<String, QueueError> {
    carry_out(spool, Request::Hold { id: parse_id(id)? })
}

/// Releases a held message (only a held one).
pub fn release(spool: &Spool, id: &str) -> Result<String, QueueError> {
    carry_out(spool, Request::Release { id: parse_id(id)? })
}
