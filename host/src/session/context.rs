//! What every session shares: the config it started with, the spool, the queue, TLS and
//! plugins. Built by the server; replaced for new sessions on reload.

use crate::clients::Clients;
use crate::config::Config;
use crate::delivery::QueueHandle;
use crate::metrics::Metrics;
use crate::plugin::PluginSet;
use crate::spool::Spool;
use std::sync::Arc;
use tokio::sync::watch;

pub struct Context {
    pub config: Arc<Config>,
    pub spool: Spool,
    pub queue: QueueHandle,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub shutdown: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
    /// Per-client accounting (connections, failed authentications), across reloads.
    pub clients: Arc<Clients>,
    /// The loaded plugins; `None` without `[[plugin]]`.
    pub plugins: Option<Arc<PluginSet>>,
    /// Sender authentication of received mail; `None` when `authentication.verify` is off.
    pub verifier: Option<Arc<crate::mailauth::Verifier>>,
    /// The `[[dkim]]` keys that sign our users' mail.
    pub signers: Arc<crate::mailauth::Signers>,
    /// The client configs of `tls = "required"` routes, for delivery.
    pub route_tls: Arc<crate::tls::RouteTls>,
}
