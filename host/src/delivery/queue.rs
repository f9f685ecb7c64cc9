//! The queue: recovers every spooled message at start, takes new ones from sessions and
//! requests from `wasmtp queue` (`control`), and runs one task per message
//! (`retry::run_message`), which alone writes that message's state.

use super::flush::Flush;
use super::retry::run_message;
use super::shared::{Delivery, Order, QueueEvent, QueueHandle};
use crate::config::Config;
use crate::control::{self, Pending, Request};
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// Starts the queue: recovers every spooled message, then serves new ones.
pub fn start(
    config: watch::Receiver<Arc<Config>>,
    spool: Spool,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    own_addrs: Vec<std::net::SocketAddr>,
    loaded: watch::Receiver<Option<Arc<super::Loaded>>>,
) -> std::io::Result<(QueueHandle, tokio::task::JoinHandle<()>)> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let concurrency = config.borrow().delivery.concurrency;
    let recovered = spool.list();
    if !recovered.is_empty() {
        tracing::info!(count = recovered.len(), "recovered spooled messages");
    }
    let flush = broadcast::channel(64).0;
    let odmr = Arc::new(super::odmr::Odmr::new(flush.clone()));
    let delivery = Arc::new(Delivery {
        slots: Arc::new(super::slots::Slots::new(concurrency)),
        config,
        spool,
        metrics,
        flush,
        shutdown,
        queue: QueueHandle::new(tx.clone(), odmr.clone()),
        odmr: odmr.clone(),
        own_addrs,
        resolver: Default::default(),
        pool: Default::default(),
        mta_sts: Default::default(),
        loaded,
    });
    let task = tokio::spawn(async move {
        let mut tasks = Tasks::default();
        for id in recovered {
            tasks.spawn(&delivery, id);
        }
        let mut flushes = Coalesce::default();
        let mut shutdown = delivery.shutdown.clone();
        let mut control = tokio::time::interval(CONTROL_POLL);
        loop {
            tokio::select! {
                // Idle connections to next hops past `reuse_idle` are closed on this tick too.
                _ = control.tick() => {
                    for pending in control::take_requests(&delivery.spool) {
                        tasks.control(&delivery, &mut flushes, pending);
                    }
                    delivery.pool.expire(delivery.config.borrow().delivery.reuse_idle.0);
                }
                event = rx.recv() => match event {
                    Some(QueueEvent::Submit(id)) => tasks.spawn(&delivery, id),
                    Some(QueueEvent::Flush(domain)) => flushes.send(&delivery, domain),
                    None => break,
                },
                Some(done) = tasks.set.join_next_with_id(), if !tasks.set.is_empty() => {
                    let task = match done {
                        Ok((task, ())) => task,
                        Err(e) => e.id(),
                    };
                    if let Some(id) = tasks.ids.remove(&task) {
                        tasks.orders.remove(&id);
                    }
                }
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        // Attempts in flight get a moment to finish; the spool keeps the rest.
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.set.join_next().await.is_some() {}
        })
        .await;
    });
    Ok((QueueHandle::new(tx, odmr), task))
}

/// How often the control directory is read for `wasmtp queue` requests.
const CONTROL_POLL: Duration = Duration::from_millis(200);
/// Flushes of the same domain closer together than this are one (an ETRN storm is one run).
const FLUSH_COALESCE: Duration = Duration::from_secs(1);
/// How long a `wasmtp queue` request waits for a busy message's task before it is answered
/// as pending.
const ORDER_WAIT: Duration = Duration::from_secs(10);

/// The message tasks, at most one per message, ever: a message already in hand is not
/// started twice, whoever asks.
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    ids: HashMap<tokio::task::Id, SpoolId>,
    orders: HashMap<SpoolId, mpsc::UnboundedSender<Order>>,
}

impl Tasks {
    fn spawn(&mut self, d: &Arc<Delivery>, id: SpoolId) {
        if self.orders.contains_key(&id) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // Every line of the message's delivery carries its queue id.
        let span = tracing::info_span!("delivery", queue_id = %id);
        let task = tracing::Instrument::instrument(run_message(d.clone(), id.clone(), rx), span);
        let handle = self.set.spawn(task);
        self.ids.insert(handle.id(), id.clone());
        self.orders.insert(id, tx);
    }

    /// Carries out one `wasmtp queue` request; the answer goes back once the message's task
    /// applied it.
    fn control(&mut self, d: &Arc<Delivery>, flushes: &mut Coalesce, pending: Pending) {
        let (id, order): (SpoolId, fn(_) -> Order) = match &pending.request {
            Request::Flush { domain } => {
                flushes.send(d, domain.clone());
                pending.answer(&Ok("flush requested".into()));
                return;
            }
            Request::Hold { id } => (id.clone(), Order::Hold),
            Request::Release { id } => (id.clone(), Order::Release),
            Request::Remove { id } => (id.clone(), Order::Remove),
        };
        let (ack, done) = oneshot::channel();
        let sent = self.orders.get(&id).map(|task| task.send(order(ack)));
        if !matches!(sent, Some(Ok(()))) {
            pending.answer(&Err(format!("no message {id} in the queue")));
            return;
        }
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(ORDER_WAIT, done).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(format!("no message {id} in the queue")),
                Err(_) => Ok(format!(
                    "{id} is being delivered now; the request is pending and is carried out \
                     after this attempt, unless the attempt ends the message"
                )),
            };
            pending.answer(&answer);
        });
    }
}

/// Passes flush requests on to the message tasks, one per domain per `FLUSH_COALESCE`.
#[derive(Default)]
struct Coalesce {
    last: HashMap<Option<String>, Instant>,
}

impl Coalesce {
    fn send(&mut self, d: &Delivery, domain: Option<String>) {
        let domain = domain.map(|d| d.to_lowercase());
        let now = Instant::now();
        if self
            .last
            .get(&domain)
            .is_some_and(|&at| now.duration_since(at) < FLUSH_COALESCE)
        {
            return;
        }
        self.last
            .retain(|_, at| now.duration_since(*at) < FLUSH_COALESCE);
        self.last.insert(domain.clone(), now);
        let _ = d.flush.send(Flush { domain, at: now });
    }
}
