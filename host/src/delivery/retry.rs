//! One message's life in the queue: wait for its next attempt (or a flush), try it, record
//! each recipient's outcome, schedule the next attempt per `[delivery] retry`, send
//! delivery status reports, give up at `delivery.max_age`.

use super::bounce;
use super::route::attempt;
use super::shared::Delivery;
use crate::spool::{Envelope, QueueState, RecipientStatus, Spool, SpoolId};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Recipients that failed in this attempt, with their last reply.
fn newly_failed(before: &[RecipientStatus], after: &[RecipientStatus]) -> Vec<(usize, String)> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter_map(|(i, (b, a))| match (b, a) {
            (RecipientStatus::Failed(_), _) => None,
            (_, RecipientStatus::Failed(reply)) => Some((i, reply.clone())),
            _ => None,
        })
        .collect()
}

/// Queues a delivery status report to the sender, when one is due (see `bounce`).
async fn report(
    d: &Delivery,
    envelope: &Envelope,
    content: &[u8],
    recipients: &[(usize, String)],
    kind: bounce::Kind,
) {
    if recipients.is_empty() || envelope.sender.is_none() {
        return;
    }
    let hostname = d.config.borrow().hostname.clone();
    match bounce::send(&d.spool, &hostname, envelope, content, recipients, kind).await {
        Ok(Some(report)) => {
            tracing::info!(id = %envelope.id, %report, ?kind, "delivery status report queued");
            d.queue.submit(report);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(id = %envelope.id, error = %e, "cannot queue a delivery status report")
        }
    }
}

/// Re-reads the state `wasmtp queue` may have changed; false when the message was removed
/// or is held (its task ends; `queue release` starts a new one).
fn refresh(spool: &Spool, envelope: &Envelope, state: &mut QueueState) -> bool {
    let id = &envelope.id;
    match spool.load_state(id, envelope) {
        Ok(on_disk) => *state = on_disk,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => tracing::warn!(%id, error = %e, "cannot re-read delivery state"),
    }
    !state.held
}

/// Drives one message until every recipient is delivered or failed.
pub(super) async fn run_message(d: Arc<Delivery>, id: SpoolId) {
    let (envelope, mut state) = match d.spool.load_envelope(&id) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(%id, error = %e, "cannot read spooled message; left in the spool");
            return;
        }
    };
    let mut flush = d.flush.subscribe();
    let mut shutdown = d.shutdown.clone();
    loop {
        // The state in hand was just loaded or just saved (with any hold merged in).
        if state.held {
            return;
        }
        let wait = state.next_attempt - unix_now();
        if wait > 0 {
            let domains: Vec<String> = state
                .pending()
                .map(|i| envelope.recipients[i].address.domain_lower())
                .collect();
            let sleep = tokio::time::sleep(Duration::from_secs(wait as u64));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = shutdown.wait_for(|s| *s) => return,
                    event = flush.recv() => match event {
                        Ok(None) => break,
                        Ok(Some(domain)) if domains.contains(&domain.to_lowercase()) => break,
                        Ok(Some(_)) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        }
        // `wasmtp queue` may have held, removed or rescheduled it meanwhile.
        if !refresh(&d.spool, &envelope, &mut state) {
            return;
        }
        // Read once per attempt; the reports below return it to the sender.
        let content = match d.spool.load_content(&id).await {
            Ok(content) => content,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::error!(%id, error = %e, "cannot read message content; will retry");
                Vec::new()
            }
        };
        let before = state.recipients.clone();
        if !content.is_empty() {
            attempt(&d, &envelope, &content, &mut state).await;
        }
        let failed = newly_failed(&before, &state.recipients);
        report(&d, &envelope, &content, &failed, bounce::Kind::Failed).await;
        if state.pending().next().is_none() {
            if let Err(e) = d.spool.remove(&id).await {
                tracing::error!(%id, error = %e, "cannot remove delivered message");
            }
            return;
        }
        state.attempts += 1;
        let config = d.config.borrow().clone();
        let retry = &config.delivery.retry;
        let delay = retry[(state.attempts as usize - 1).min(retry.len() - 1)].0;
        state.next_attempt = unix_now() + delay.as_secs() as i64;
        let age = unix_now() - envelope.received_at;
        if age > config.delivery.max_age.0.as_secs() as i64 {
            let before = state.recipients.clone();
            for i in state.pending().collect::<Vec<_>>() {
                let last = match &state.recipients[i] {
                    RecipientStatus::Deferred(e) => e.clone(),
                    _ => String::new(),
                };
                state.recipients[i] =
                    RecipientStatus::Failed(format!("expired after delivery.max_age: {last}"));
                tracing::warn!(%id, rcpt = %envelope.recipients[i].address, "gave up: delivery.max_age reached");
            }
            let expired = newly_failed(&before, &state.recipients);
            report(&d, &envelope, &content, &expired, bounce::Kind::Failed).await;
            let _ = d.spool.remove(&id).await;
            return;
        }
        if !state.delay_warned && age >= config.delivery.delay_warning.0.as_secs() as i64 {
            let deferred: Vec<(usize, String)> = state
                .recipients
                .iter()
                .enumerate()
                .filter_map(|(i, s)| match s {
                    RecipientStatus::Deferred(e) => Some((i, e.clone())),
                    _ => None,
                })
                .collect();
            report(&d, &envelope, &content, &deferred, bounce::Kind::Delayed).await;
            state.delay_warned = true;
        }
        // A hold placed while the attempt ran survives it.
        if let Ok(on_disk) = d.spool.load_state(&id, &envelope) {
            state.held |= on_disk.held;
            state.hold_reason = state.hold_reason.take().or(on_disk.hold_reason);
        }
        if let Err(e) = d.spool.save_state(&id, &state).await {
            tracing::error!(%id, error = %e, "cannot save delivery state");
        }
    }
}
