//! What the queue and every message task share: the current config, the spool, the
//! delivery slots, the flush signal, and the way back into the queue.

use super::flush::Flush;
use crate::config::Config;
use crate::control::Answer;
use crate::metrics::Metrics;
use crate::proto::Reply;
use crate::spool::{Spool, SpoolId};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub(super) enum QueueEvent {
    Submit(SpoolId),
    Flush(Option<String>),
}

/// A change to one message, sent to its task (the only writer of its state).
pub(super) enum Order {
    Hold(oneshot::Sender<Answer>),
    /// Refused unless held.
    Release(oneshot::Sender<Answer>),
    Remove(oneshot::Sender<Answer>),
}

/// How sessions and commands reach the queue.
#[derive(Clone)]
pub struct QueueHandle {
    events: mpsc::UnboundedSender<QueueEvent>,
    odmr: Arc<super::odmr::Odmr>,
}

impl QueueHandle {
    pub(super) fn new(
        events: mpsc::UnboundedSender<QueueEvent>,
        odmr: Arc<super::odmr::Odmr>,
    ) -> QueueHandle {
        QueueHandle { events, odmr }
    }

    /// ATRN (RFC 2645): reserves `domains` (lower case) for the authenticated `user`'s
    /// session, or the reply that refuses it.
    pub fn atrn(&self, domains: Vec<String>, user: &str) -> Result<super::odmr::Grant, Reply> {
        self.odmr.reserve(domains, user)
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

/// What delivery takes of the current config's loaded parts: the after-queue scan's plugins
/// (`None`: no `[[plugin]]`) and DKIM keys, and the routes' TLS client configs. The server
/// publishes them once loaded, and again on each reload.
pub struct Loaded {
    pub plugins: Option<Arc<crate::plugin::PluginSet>>,
    pub signers: Arc<crate::mailauth::Signers>,
    pub route_tls: Arc<crate::tls::RouteTls>,
}

pub(super) struct Delivery {
    /// The current config; SIGHUP replaces it (routes, retries) for the next attempt.
    pub(super) config: watch::Receiver<Arc<Config>>,
    pub(super) spool: Spool,
    pub(super) metrics: Arc<Metrics>,
    /// `delivery.concurrency` in all, `delivery.destination_concurrency` per destination.
    pub(super) slots: Arc<super::slots::Slots>,
    pub(super) flush: broadcast::Sender<Flush>,
    pub(super) shutdown: watch::Receiver<bool>,
    /// For delivery status reports, which are queued like any message.
    pub(super) queue: QueueHandle,
    /// The resolver for MX routes and the nameservers it was built for; rebuilt only when
    /// a reload changes `[dns] nameservers`, so its cache lives across deliveries.
    /// Where our listeners are bound: a next hop there is a loop.
    pub(super) own_addrs: Vec<SocketAddr>,
    pub(super) resolver: std::sync::Mutex<Option<(Vec<std::net::SocketAddr>, crate::dns::Dns)>>,
    /// Which messages wait for ATRN, and the links of the customers collecting now.
    pub(super) odmr: Arc<super::odmr::Odmr>,
    /// The MTA-STS policies seen, kept across deliveries for their `max_age`.
    pub(super) mta_sts: Arc<crate::mta_sts::Policies>,
    /// Idle connections to next hops, for the next message to the same hop.
    pub(super) pool: Arc<super::pool::Pool>,
    /// The plugins and keys of the scan after the queue; `None` until the server has
    /// loaded them.
    pub(super) loaded: watch::Receiver<Option<Arc<super::Loaded>>>,
}

impl Delivery {
    /// The loaded parts of the current config, once the server has published them (a
    /// message recovered at start may come first); `None` when the server stops meanwhile.
    pub(super) async fn loaded(&self) -> Option<Arc<Loaded>> {
        let mut loaded = self.loaded.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            s = loaded.wait_for(Option::is_some) => s.ok().and_then(|s| s.clone()),
            _ = shutdown.wait_for(|s| *s) => None,
        }
    }

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
