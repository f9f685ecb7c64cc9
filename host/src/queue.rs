//! `wasmtp queue`: lists and acts on the spool, whether or not the server runs. Changes are
//! written to the messages' state files, which delivery re-reads before every attempt;
//! `flush` and `release` also leave a request in `spool/control/` that a running server
//! picks up within a second.

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
    match status {
        RecipientStatus::Queued if state.held => ("held", None),
        RecipientStatus::Deferred(e) if state.held => ("held", Some(e.clone())),
        RecipientStatus::Queued => ("queued", None),
        RecipientStatus::Deferred(e) => ("deferred", Some(e.clone())),
        RecipientStatus::Delivered(r) => ("delivered", Some(r.clone())),
        RecipientStatus::Failed(e) => ("failed", Some(e.clone())),
    }
}

/// One line per message: id, age, size, sender, recipients with their state.
pub fn list(spool: &Spool, json: bool) -> Result<String, QueueError> {
    let mut out = String::new();
    for id in spool.list()? {
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
                "recipients": recipients.iter().map(|(a, (s, e))| serde_json::json!({"address": a, "state": s, "error": e})).collect::<Vec<_>>(),
            });
            writeln!(out, "{value}").ok();
        } else {
            let rcpts: Vec<String> = recipients
                .iter()
                .map(|(a, (s, e))| match e {
                    Some(e) if *s == "deferred" || *s == "failed" => format!("<{a}> {s} ({e})"),
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

fn with_state(
    spool: &Spool,
    id: &str,
    f: impl FnOnce(&mut QueueState),
) -> Result<SpoolId, QueueError> {
    let id = parse_id(id)?;
    let (_, mut state) = spool
        .load_envelope(&id)
        .map_err(|_| QueueError::NoSuchMessage(id.clone()))?;
    f(&mut state);
    spool.save_state_sync(&id, &state)?;
    Ok(id)
}

fn request(spool: &Spool, name: &str, content: &str) -> Result<(), QueueError> {
    Ok(std::fs::write(spool.control_dir().join(name), content)?)
}

/// Retries deferred mail now (all, or that with recipients in `domain`).
pub fn flush(spool: &Spool, domain: Option<&str>) -> Result<String, QueueError> {
    let mut count = 0;
    for id in spool.list()? {
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
            with_state(spool, id.as_str(), |s| s.next_attempt = now())?;
            count += 1;
        }
    }
    request(
        spool,
        &format!("flush-{}", SpoolId::generate()),
        domain.unwrap_or(""),
    )?;
    Ok(format!("flush requested for {count} message(s)\n"))
}

pub fn remove(spool: &Spool, id: &str) -> Result<String, QueueError> {
    let parsed = parse_id(id)?;
    spool
        .remove_sync(&parsed)
        .map_err(|_| QueueError::NoSuchMessage(parsed.clone()))?;
    Ok(format!("removed {id}\n"))
}

pub fn hold(spool: &Spool, id: &str) -> Result<String, QueueError> {
    let id = with_state(spool, id, |s| {
        s.held = true;
        s.hold_reason
            .get_or_insert_with(|| "held by the operator".into());
    })?;
    Ok(format!("held {id}\n"))
}

pub fn release(spool: &Spool, id: &str) -> Result<String, QueueError> {
    let id = with_state(spool, id, |s| {
        s.held = false;
        s.hold_reason = None;
        s.next_attempt = now();
    })?;
    request(spool, &format!("release-{id}"), "")?;
    Ok(format!("released {id}\n"))
}
