//! One message's life in the queue: wait for its next attempt (or a flush), try it, record
//! each recipient's outcome, schedule the next attempt per `[delivery] retry`, send
//! delivery status reports, give up at `delivery.max_age`.

use super::bounce;
use super::route::attempt;
use super::scan::{Scanned, scan};
use super::shared::{Delivery, Order};
use crate::config::Target;
use crate::metrics::{Phase, Queue};
use crate::proto::Reply;
use crate::spool::{
    Content, Durability, Envelope, QueueState, RecipientStatus, SpoolId, StoredReply,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Recipients that failed for good in this attempt (or by age), with their status.
fn newly_failed(
    before: &[RecipientStatus],
    after: &[RecipientStatus],
) -> Vec<(usize, RecipientStatus)> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (b, a))| !b.is_final_failure() && a.is_final_failure())
        .map(|(i, (_, a))| (i, a.clone()))
        .collect()
}

/// What became of the message after an order.
enum After {
    Kept,
    Removed,
}

/// Applies a `wasmtp queue` order to the state in hand and saves it (this task is the only
/// writer of the message's state).
async fn apply(d: &Delivery, envelope: &Envelope, state: &mut QueueState, order: Order) -> After {
    let id = &envelope.id;
    let (ack, answer) = match order {
        Order::Remove(ack) => {
            // Still in the spool when removal failed: the task keeps it.
            let (answer, after) = match d.spool.remove(id, Durability::Now).await {
                Ok(()) => (Ok(format!("removed {id}")), After::Removed),
                Err(e) => (Err(format!("cannot remove {id}: {e}")), After::Kept),
            };
            let _ = ack.send(answer);
            return after;
        }
        Order::Hold(ack) => {
            state.hold();
            (ack, format!("held {id}"))
        }
        Order::Release(ack) => match state.release(unix_now()) {
            Ok(()) => (ack, format!("released {id}")),
            Err(why) => {
                let _ = ack.send(Err(format!("{id}: {why}")));
                return After::Kept;
            }
        },
    };
    let answer = match d.spool.save_state(id, state, Durability::Now).await {
        Ok(()) => Ok(answer),
        Err(e) => Err(format!("cannot save the state of {id}: {e}")),
    };
    let _ = ack.send(answer);
    After::Kept
}

/// A message in `wasmtp_queue_messages` for as long as its task runs.
struct Tracked<'a> {
    queue: &'a Queue,
    id: &'a SpoolId,
    received_at: i64,
}

impl Tracked<'_> {
    fn phase(&self, phase: Phase) {
        self.queue.set(self.id, phase, self.received_at);
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.queue.remove(self.id);
    }
}

/// Drives one message until every recipient is delivered or failed, or it is removed. Held,
/// it waits for a release. `orders` are the `wasmtp queue` requests for it.
pub(super) async fn run_message(
    d: Arc<Delivery>,
    id: SpoolId,
    mut orders: mpsc::UnboundedReceiver<Order>,
) {
    let (mut envelope, mut state) = match d.spool.load_envelope(&id) {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(%id, error = %e, "cannot read spooled message; left in the spool");
            return;
        }
    };
    let tracked = Tracked {
        queue: &d.metrics.queue,
        id: &id,
        received_at: envelope.received_at,
    };
    // What an ATRN session needs to know of this message (RFC 2645).
    let odmr = d.odmr.watch(&id);
    let mut flush = d.flush.subscribe();
    let mut shutdown = d.shutdown.clone();
    // Flushes asked for before this are answered by the attempt that started then.
    let mut attempted_at: Option<Instant> = None;
    loop {
        let domains: Vec<String> = state
            .pending()
            .map(|i| envelope.recipients[i].address.domain_lower())
            .collect();
        // Only a config with an odmr route has any to note (this runs for every message).
        let config = d.config.borrow().clone();
        let collected: Vec<String> = match config.route.iter().any(|r| r.to == Target::Odmr) {
            true => domains
                .iter()
                .filter(|d| config.route_for(d).to == Target::Odmr)
                .cloned()
                .collect(),
            false => Vec::new(),
        };
        odmr.note(&collected, state.held, attempted_at);
        loop {
            tracked.phase(if state.held {
                Phase::Held
            } else {
                Phase::Waiting
            });
            let wait = state.next_attempt - unix_now();
            if !state.held && wait <= 0 {
                break;
            }
            // Held: no timer, only an order moves it.
            let sleep = tokio::time::sleep(Duration::from_secs(wait.max(0) as u64));
            let order = tokio::select! {
                _ = sleep, if !state.held => break,
                _ = shutdown.wait_for(|s| *s) => return,
                order = orders.recv() => order,
                event = flush.recv() => match event {
                    Ok(f) if !state.held
                        && attempted_at.is_none_or(|t| f.at > t)
                        && f.concerns(&domains) => break,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) if !state.held => break,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            let Some(order) = order else { return };
            if let After::Removed = apply(&d, &envelope, &mut state, order).await {
                return;
            }
            // Held or released: an ATRN session waits for it, or not.
            odmr.note(&collected, state.held, attempted_at);
        }
        attempted_at = Some(Instant::now());
        // Read once per attempt; the reports below return it to the sender.
        let mut content = match d.spool.content(&id).await {
            Ok(content) => Some(content),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::error!(%id, error = %e, "cannot read message content; will retry");
                None
            }
        };
        // Not delivered before the scan after the queue has committed its outcome.
        if let Some(c) = content.as_mut().filter(|_| state.scan.is_some()) {
            tracked.phase(Phase::Scanning);
            match scan(&d, &mut envelope, c, &mut state).await {
                Scanned::Deliver | Scanned::Deferred => {}
                Scanned::Held => continue,
                Scanned::Gone | Scanned::Stopped => return,
            }
        }
        tracked.phase(Phase::Delivering);
        let before = state.recipients.clone();
        let successes = match &content {
            Some(content) if state.scan.is_none() => {
                attempt(&d, &envelope, content, &mut state).await
            }
            _ => Vec::new(),
        };
        let content = content.unwrap_or_else(|| Content::from(Vec::new()));
        let failed = newly_failed(&before, &state.recipients);
        bounce::report(&d, &envelope, &content, &failed, bounce::Kind::Failed).await;
        for kind in [bounce::Kind::Delivered, bounce::Kind::Relayed] {
            let these: Vec<(usize, RecipientStatus)> = successes
                .iter()
                .filter(|s| s.2 == kind)
                .map(|(i, r, _)| (*i, r.clone()))
                .collect();
            bounce::report(&d, &envelope, &content, &these, kind).await;
        }
        if state.pending().next().is_none() {
            if let Err(e) = d.spool.remove(&id, Durability::Soon).await {
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
                // RFC 3463 4.4.7: delivery time expired, when no attempt left a reply.
                let last = match &state.recipients[i] {
                    RecipientStatus::Deferred(r) => r.clone(),
                    _ => StoredReply::new(
                        &Reply::dynamic(451, 4, 7, "delivery time expired before an attempt"),
                        None,
                    ),
                };
                state.recipients[i] = RecipientStatus::Expired(last);
                tracing::warn!(%id, rcpt = %envelope.recipients[i].address, "gave up: delivery.max_age reached");
            }
            let expired = newly_failed(&before, &state.recipients);
            bounce::report(&d, &envelope, &content, &expired, bounce::Kind::Failed).await;
            let _ = d.spool.remove(&id, Durability::Soon).await;
            return;
        }
        if !state.delay_warned && age >= config.delivery.delay_warning.0.as_secs() as i64 {
            let deferred: Vec<(usize, RecipientStatus)> = state
                .recipients
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s, RecipientStatus::Deferred(_)))
                .map(|(i, s)| (i, s.clone()))
                .collect();
            bounce::report(&d, &envelope, &content, &deferred, bounce::Kind::Delayed).await;
            state.delay_warned = true;
        }
        // Orders that came during the attempt apply now, before the state is saved.
        while let Ok(order) = orders.try_recv() {
            if let After::Removed = apply(&d, &envelope, &mut state, order).await {
                return;
            }
        }
        if let Err(e) = d.spool.save_state(&id, &state, Durability::Soon).await {
            tracing::error!(%id, error = %e, "cannot save delivery state");
        }
    }
}
