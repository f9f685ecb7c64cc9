//! How lookups survive a lossy or a dead resolver. A query without an answer is sent
//! again after 1 s, then 2 s, then 4 s (retransmission as unbound and systemd-resolved do
//! it, where hickory would wait its whole timeout), the first answer winning, until
//! `LOOKUP_LIMIT`. When `DEAD_AFTER` lookups in a row got no answer, the resolver counts as
//! dead: lookups then take only what the cache answers at once (anything else is a timeout,
//! which checks take as `temperror`), while a probe asks the resolver at once and then
//! every `PROBE_EVERY`; its first answer brings it back. An outage costs one timeout, not
//! one per message.

use super::DnsError;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// The first retransmission; each next one waits twice as long.
const RETRANSMIT: Duration = Duration::from_secs(1);
/// A lookup gets no more time than this, whatever its caller allows.
pub(super) const LOOKUP_LIMIT: Duration = Duration::from_secs(5);
/// Lookups in a row without an answer that make the resolver dead.
const DEAD_AFTER: u32 = 3;
/// A lookup given up by its caller after this long without an answer counts as unanswered.
const UNANSWERED_AFTER: Duration = Duration::from_secs(2);
/// How often a dead resolver is asked whether it is back, and how long it has to answer.
const PROBE_EVERY: Duration = Duration::from_secs(3);
const PROBE_WAIT: Duration = Duration::from_secs(2);
/// While the resolver is dead: what the cache answers within this is used.
const CACHE_ONLY: Duration = Duration::from_millis(50);

/// What the server's lookups know of the resolver, shared by every clone of `Dns`.
#[derive(Default)]
pub(super) struct Health {
    unanswered: AtomicU32,
    dead: AtomicBool,
    probing: AtomicBool,
}

impl Health {
    pub(super) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    fn answered(&self) {
        self.unanswered.store(0, Ordering::Relaxed);
    }

    /// One more lookup without an answer: `true` when that makes the resolver dead (a
    /// probe is then to be started).
    fn unanswered(&self) -> bool {
        let n = self.unanswered.fetch_add(1, Ordering::Relaxed) + 1;
        n >= DEAD_AFTER
            && !self.dead.swap(true, Ordering::Relaxed)
            && !self.probing.swap(true, Ordering::Relaxed)
    }

    fn revive(&self) {
        self.unanswered.store(0, Ordering::Relaxed);
        self.dead.store(false, Ordering::Relaxed);
        self.probing.store(false, Ordering::Relaxed);
    }
}

/// A lookup in progress, for the books: one dropped by its caller after
/// `UNANSWERED_AFTER` without an answer counts as unanswered too.
struct Waiting<'a, P: Probe> {
    health: &'a Arc<Health>,
    probe: &'a P,
    started: Instant,
    settled: bool,
}

impl<P: Probe> Waiting<'_, P> {
    fn settle(&mut self, answered: bool) {
        self.settled = true;
        if answered {
            self.health.answered();
        } else if self.health.unanswered() {
            tracing::warn!(
                after = DEAD_AFTER,
                "DNS resolver not answering: lookups fail at once until it answers a probe"
            );
            start_probe(Arc::downgrade(self.health), self.probe.clone());
        }
    }
}

impl<P: Probe> Drop for Waiting<'_, P> {
    fn drop(&mut self) {
        if !self.settled && self.started.elapsed() >= UNANSWERED_AFTER {
            self.settle(false);
        }
    }
}

/// A query that tells whether the resolver answers at all (any answer, even "no such
/// name", is one).
pub(super) trait Probe: Clone + Send + Sync + 'static {
    fn ask(&self) -> impl Future<Output = Result<(), DnsError>> + Send;
}

fn start_probe<P: Probe>(health: Weak<Health>, probe: P) {
    tokio::spawn(async move {
        // At once first: lookups that went unanswered because the names' own servers
        // never answer (a sender can pick such names) must not switch the resolver off for
        // long; only a resolver that fails the probe too stays dead.
        loop {
            let Some(health) = health.upgrade() else {
                return;
            };
            match tokio::time::timeout(PROBE_WAIT, probe.ask()).await {
                Ok(Ok(())) | Ok(Err(DnsError::NotFound | DnsError::Failure(_))) => {
                    tracing::info!("DNS resolver answering again");
                    health.revive();
                    return;
                }
                Ok(Err(DnsError::Timeout)) | Err(_) => {}
            }
            drop(health);
            tokio::time::sleep(PROBE_EVERY).await;
        }
    });
}

/// Runs `lookup`, sent again with backoff while unanswered, within `LOOKUP_LIMIT`.
pub(super) async fn lookup<T, F, Fut, P>(
    health: &Arc<Health>,
    probe: &P,
    lookup: F,
) -> Result<T, DnsError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, DnsError>>,
    P: Probe,
{
    if health.is_dead() {
        return tokio::time::timeout(CACHE_ONLY, lookup())
            .await
            .unwrap_or(Err(DnsError::Timeout));
    }
    let started = Instant::now();
    let mut waiting = Waiting {
        health,
        probe,
        started,
        settled: false,
    };
    let mut attempts = FuturesUnordered::new();
    attempts.push(lookup());
    let (mut again, mut wait) = (started + RETRANSMIT, RETRANSMIT);
    let limit = tokio::time::sleep_until(started + LOOKUP_LIMIT);
    tokio::pin!(limit);
    loop {
        tokio::select! {
            Some(result) = attempts.next() => match result {
                // One attempt ran out of time: the others, or the next, may still answer.
                Err(DnsError::Timeout) => {}
                answer => {
                    waiting.settle(true);
                    return answer;
                }
            },
            _ = tokio::time::sleep_until(again) => {
                attempts.push(lookup());
                wait *= 2;
                again += wait;
            }
            _ = &mut limit => {
                waiting.settle(false);
                return Err(DnsError::Timeout);
            }
        }
    }
}
