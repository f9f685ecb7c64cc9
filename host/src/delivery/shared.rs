//! What the queue and every message task share: the current config, the spool, the
//! concurrency permits, the flush signal, and the way back into the queue.

use crate::config::Config;
use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolId};
use std::sync::Arc;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};

pub(super) enum QueueEvent {
    Submit(SpoolId),
    Flush(Option<String>),
}

/// How sessions and commands reach the queue.
#[derive(Clone)]
pub struct QueueHandle {
    events: mpsc::UnboundedSender<QueueEvent>,
}

impl QueueHandle {
    pub(super) fn new(events: mpsc::UnboundedSender<QueueEvent>) -> QueueHandle {
        QueueHandle { events }
    }

    /// A newly spooled message: deliver now.
    pub fn submit(&self, id: SpoolId) {
        let _ = self.events.send(QueueEvent::Submit(id));
    }

    /// Retry deferred mail now (all, or that for one domain): ETRN.
    pub fn flush(&self, domain: Option<String>) {
        let _ = self.events.send(QueueEvent::Flush(domain));
    }
}

pub(super) struct Delivery {
    /// The current config; SIGHUP replaces it (routes, retries) for the next attempt.
    pub(super) config: watch::Receiver<Arc<Config>>,
    pub(super) spool: Spool,
    pub(super) metrics: Arc<Metrics>,
    pub(super) permits: Semaphore,
    pub(super) flush: broadcast::Sender<Option<String>>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// For delivery status reports, which are queued like any message.
    pub(super) queue: QueueHandle,
    /// The resolver for MX routes and the nameservers it was built for; rebuilt only when
    /// a reload changes `[dns] nameservers`, so its cache lives across deliveries.
    pub(super) resolver: std::sync::Mutex<Option<(Vec<std::net::SocketAddr>, crate::dns::Dns)>>,
}

impl Delivery {
    pub(super) fn resolver(
        &self,
        config: &Config,
    ) -> Result<crate::dns::Dns, crate::dns::ResolverError> {
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
