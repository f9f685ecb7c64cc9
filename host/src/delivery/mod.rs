//! Delivery: each spooled message gets a task that tries its pending recipients, grouped by
//! route, and sleeps between attempts per `[delivery] retry`. At most
//! `delivery.concurrency` attempts run at once. The spool is the only source of truth: the
//! tasks are rebuilt from it at start, so a crash loses no message.

mod bounce;
mod client;
mod maildir;
mod mx;

use crate::config::{Config, Target, TlsPolicy};
use crate::metrics::Metrics;
use crate::proto::Reply;
use crate::spool::{Envelope, QueueState, RecipientStatus, Spool, SpoolId};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};

/// The result for one recipient of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered(Reply),
    Transient(Reply),
    Permanent(Reply),
}

impl DeliveryOutcome {
    /// Classifies a reply from a next hop by its first digit.
    pub fn from_reply(reply: Reply) -> DeliveryOutcome {
        match reply.code {
            200..=399 => DeliveryOutcome::Delivered(reply),
            400..=499 => DeliveryOutcome::Transient(reply),
            _ => DeliveryOutcome::Permanent(reply),
        }
    }
}

/// What a transport is asked to deliver: one message, some of its recipients.
pub struct Outgoing<'a> {
    pub envelope: &'a Envelope,
    pub content: &'a [u8],
    /// Indices into `envelope.recipients`.
    pub recipients: &'a [usize],
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A way to move a message one hop further. Returns one outcome per recipient, in order.
pub trait Transport: Send + Sync {
    fn deliver<'a>(&'a self, msg: &'a Outgoing<'a>) -> BoxFuture<'a, Vec<DeliveryOutcome>>;
}

/// Builds the transport for a route; `domain` is the recipients' domain (for MX routes).
fn transport_for(
    d: &Delivery,
    config: &Config,
    target: &Target,
    tls: TlsPolicy,
    domain: &str,
) -> Box<dyn Transport> {
    match target {
        Target::Smtp(host, port) => Box::new(client::SmtpTransport::new(
            &config.hostname,
            host,
            *port,
            tls,
            false,
        )),
        Target::Lmtp(host, port) => Box::new(client::SmtpTransport::new(
            &config.hostname,
            host,
            *port,
            tls,
            true,
        )),
        Target::Maildir(path) => Box::new(maildir::MaildirTransport::new(path, &config.hostname)),
        Target::Mx => Box::new(mx::MxTransport::new(
            config,
            domain,
            tls,
            d.resolver(config),
        )),
    }
}

enum QueueEvent {
    Submit(SpoolId),
    Flush(Option<String>),
}

/// How sessions and commands reach the queue.
#[derive(Clone)]
pub struct QueueHandle {
    events: mpsc::UnboundedSender<QueueEvent>,
}

impl QueueHandle {
    /// A newly spooled message: deliver now.
    pub fn submit(&self, id: SpoolId) {
        let _ = self.events.send(QueueEvent::Submit(id));
    }

    /// Retry deferred mail now (all, or that for one domain): ETRN.
    pub fn flush(&self, domain: Option<String>) {
        let _ = self.events.send(QueueEvent::Flush(domain));
    }
}

struct Delivery {
    /// The current config; SIGHUP replaces it (routes, retries) for the next attempt.
    config: watch::Receiver<Arc<Config>>,
    spool: Spool,
    metrics: Arc<Metrics>,
    permits: Semaphore,
    flush: broadcast::Sender<Option<String>>,
    shutdown: watch::Receiver<bool>,
    /// For delivery status reports, which are queued like any message.
    queue: QueueHandle,
    /// The resolver for MX routes and the nameservers it was built for; rebuilt only when
    /// a reload changes `[dns] nameservers`, so its cache lives across deliveries.
    resolver: std::sync::Mutex<Option<(Vec<std::net::SocketAddr>, crate::dns::Dns)>>,
}

impl Delivery {
    fn resolver(&self, config: &Config) -> Result<crate::dns::Dns, String> {
        let mut cached = self.resolver.lock().expect("resolver lock");
        match cached.as_ref() {
            Some((servers, dns)) if *servers == config.dns.nameservers => Ok(dns.clone()),
            _ => {
                let dns = crate::dns::Dns::new(&config.dns.nameservers)?;
                *cached = Some((config.dns.nameservers.clone(), dns.clone()));
                Ok(dns)
            }
        }
    }
}

/// Starts the queue: recovers every spooled message, then serves new ones.
pub fn start(
    config: watch::Receiver<Arc<Config>>,
    spool: Spool,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(QueueHandle, tokio::task::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let concurrency = config.borrow().delivery.concurrency;
    let recovered = spool.list()?;
    if !recovered.is_empty() {
        tracing::info!(count = recovered.len(), "recovered spooled messages");
    }
    let delivery = Arc::new(Delivery {
        permits: Semaphore::new(concurrency),
        config,
        spool,
        metrics,
        flush: broadcast::channel(64).0,
        shutdown,
        queue: QueueHandle { events: tx.clone() },
        resolver: std::sync::Mutex::new(None),
    });
    let task = tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for id in recovered {
            tasks.spawn(run_message(delivery.clone(), id));
        }
        let mut shutdown = delivery.shutdown.clone();
        let mut control = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = control.tick() => {
                    for request in read_control(&delivery.spool) {
                        match request {
                            QueueEvent::Submit(id) => {
                                tasks.spawn(run_message(delivery.clone(), id));
                            }
                            QueueEvent::Flush(domain) => {
                                let _ = delivery.flush.send(domain);
                            }
                        }
                    }
                }
                event = rx.recv() => match event {
                    Some(QueueEvent::Submit(id)) => {
                        tasks.spawn(run_message(delivery.clone(), id));
                    }
                    Some(QueueEvent::Flush(domain)) => {
                        let _ = delivery.flush.send(domain);
                    }
                    None => break,
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        // Attempts in flight get a moment to finish; the spool keeps the rest.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    });
    Ok((QueueHandle { events: tx }, task))
}

/// Takes the requests `wasmtp queue` left in `spool/control/`: `flush` (its content an
/// optional domain) and `release-ID`. Each file is removed once read.
fn read_control(spool: &Spool) -> Vec<QueueEvent> {
    let Ok(entries) = std::fs::read_dir(spool.control_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let content = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        if name.starts_with("flush") {
            let domain = content.trim();
            out.push(QueueEvent::Flush(
                (!domain.is_empty()).then(|| domain.to_string()),
            ));
        } else if let Some(id) = name.strip_prefix("release-").and_then(SpoolId::parse) {
            out.push(QueueEvent::Submit(id));
        }
    }
    out
}

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
    recipients: &[(usize, String)],
    kind: bounce::Kind,
) {
    if recipients.is_empty() || envelope.sender.is_none() {
        return;
    }
    let hostname = d.config.borrow().hostname.clone();
    let sent = match d.spool.load_content(&envelope.id).await {
        Ok(content) => {
            bounce::send(&d.spool, &hostname, envelope, &content, recipients, kind).await
        }
        Err(e) => Err(e),
    };
    match sent {
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
fn refresh(spool: &Spool, id: &SpoolId, state: &mut QueueState) -> bool {
    match spool.load_envelope(id) {
        Ok((_, on_disk)) => *state = on_disk,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
        Err(e) => tracing::warn!(%id, error = %e, "cannot re-read delivery state"),
    }
    !state.held
}

/// Drives one message until every recipient is delivered or failed.
async fn run_message(d: Arc<Delivery>, id: SpoolId) {
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
        if !refresh(&d.spool, &id, &mut state) {
            return;
        }
        let permit = tokio::select! {
            p = d.permits.acquire() => p,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let Ok(_permit) = permit else { return };
        let before = state.recipients.clone();
        if let Err(e) = attempt(&d, &envelope, &mut state).await {
            tracing::error!(%id, error = %e, "cannot read message content; will retry");
        }
        let failed = newly_failed(&before, &state.recipients);
        report(&d, &envelope, &failed, bounce::Kind::Failed).await;
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
            report(&d, &envelope, &expired, bounce::Kind::Failed).await;
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
            report(&d, &envelope, &deferred, bounce::Kind::Delayed).await;
            state.delay_warned = true;
        }
        // A hold placed while the attempt ran survives it.
        if let Ok((_, on_disk)) = d.spool.load_envelope(&id) {
            state.held |= on_disk.held;
            state.hold_reason = state.hold_reason.take().or(on_disk.hold_reason);
        }
        if let Err(e) = d.spool.save_state(&id, &state).await {
            tracing::error!(%id, error = %e, "cannot save delivery state");
        }
    }
}

/// One attempt over every pending recipient, grouped by route.
async fn attempt(d: &Delivery, envelope: &Envelope, state: &mut QueueState) -> std::io::Result<()> {
    let content = d.spool.load_content(&envelope.id).await?;
    let config = d.config.borrow().clone();
    let mut groups: BTreeMap<String, (Target, TlsPolicy, Vec<usize>)> = BTreeMap::new();
    for i in state.pending() {
        let (target, tls) = config.route_for(&envelope.recipients[i].address.domain);
        // One connection per next hop; MX routes group per domain.
        let key = match &target {
            Target::Mx => format!("mx:{}", envelope.recipients[i].address.domain_lower()),
            other => format!("{other:?}{tls:?}"),
        };
        groups
            .entry(key)
            .or_insert((target, tls, Vec::new()))
            .2
            .push(i);
    }
    for (target, tls, recipients) in groups.into_values() {
        let domain = envelope.recipients[recipients[0]].address.domain_lower();
        let transport = transport_for(d, &config, &target, tls, &domain);
        let outgoing = Outgoing {
            envelope,
            content: &content,
            recipients: &recipients,
        };
        let outcomes = transport.deliver(&outgoing).await;
        for (&i, outcome) in recipients.iter().zip(outcomes) {
            let rcpt = &envelope.recipients[i].address;
            state.recipients[i] = match outcome {
                DeliveryOutcome::Delivered(r) => {
                    Metrics::inc(&d.metrics.deliveries_total);
                    tracing::info!(id = %envelope.id, %rcpt, route = ?target, reply = %r, "delivered");
                    RecipientStatus::Delivered(r.to_string())
                }
                DeliveryOutcome::Transient(r) => {
                    Metrics::inc(&d.metrics.deferrals_total);
                    tracing::warn!(id = %envelope.id, %rcpt, route = ?target, reply = %r, "deferred");
                    RecipientStatus::Deferred(r.to_string())
                }
                DeliveryOutcome::Permanent(r) => {
                    Metrics::inc(&d.metrics.failures_total);
                    tracing::warn!(id = %envelope.id, %rcpt, route = ?target, reply = %r, "failed permanently");
                    RecipientStatus::Failed(r.to_string())
                }
            };
        }
    }
    Ok(())
}
