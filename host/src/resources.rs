//! What a config names outside itself, loaded in one place: the `[tls]` certificate and
//! key, the `[[dkim]]` keys, the resolver, and with it the plugins (read, compiled,
//! probed) and the sender verifier. The server loads them at start-up and on SIGHUP;
//! `check-config` loads them to report every problem.

use crate::config::Config;
use crate::mailauth::{KeyError, Signers, Verifier};
use crate::metrics::Metrics;
use crate::plugin::kv::Kv;
use crate::plugin::{self, PluginSet};
use crate::tls::{self, TlsError};
use std::sync::Arc;

/// The loaded form of a config's outside parts.
pub struct Resources {
    /// The server's TLS config; `None` without `[tls]`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The loaded plugins; `None` without `[[plugin]]`.
    pub plugins: Option<Arc<PluginSet>>,
    /// `None` when `authentication.verify` is off.
    pub verifier: Option<Arc<Verifier>>,
    pub signers: Arc<Signers>,
    /// The client configs of `tls = "required"` routes.
    pub route_tls: Arc<tls::RouteTls>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// A `tls = "required"` route whose trust anchors cannot be loaded.
    #[error("route[{0}].ca: {1}")]
    RouteCa(usize, TlsError),
    #[error(transparent)]
    Plugins(#[from] plugin::LoadError),
    #[error(transparent)]
    Dkim(#[from] KeyError),
    /// Sender verification is on but there is no resolver to verify with.
    #[error("authentication.verify: {0} (set [dns] nameservers, or verify = false)")]
    Resolver(crate::dns::ResolverError),
}

/// Every problem found while loading (a bad certificate and a bad plugin are both named).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.problems().join("\n"))]
pub struct ResourceErrors(pub Vec<ResourceError>);

impl ResourceErrors {
    /// One line per problem, each starting with its key path, as `check-config` lists them.
    pub fn problems(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|e| match e {
                ResourceError::Plugins(plugin::LoadError::Plugins(each)) => {
                    each.iter().map(ToString::to_string).collect()
                }
                other => vec![other.to_string()],
            })
            .collect()
    }
}

impl Resources {
    pub async fn load(
        config: &Config,
        kv: Kv,
        metrics: Arc<Metrics>,
    ) -> Result<Resources, ResourceErrors> {
        let mut errors = Vec::new();
        let tls = config.tls.as_ref().and_then(|t| {
            tls::load_server_config(t)
                .map_err(|e| errors.push(e.into()))
                .ok()
        });
        let signers = Signers::load(&config.dkim, config.arc.as_ref()).unwrap_or_else(|e| {
            errors.extend(e.into_iter().map(ResourceError::from));
            Signers::default()
        });
        let route_tls =
            tls::RouteTls::load(&config.route, config.delivery.mta_sts).unwrap_or_else(|e| {
                let bad = e.into_iter().map(|(i, e)| ResourceError::RouteCa(i, e));
                errors.extend(bad);
                tls::RouteTls::default()
            });
        let verify = config.authentication.verify;
        let dns = if config.plugin.is_empty() && !verify {
            None
        } else {
            match crate::dns::Dns::new(&config.dns.nameservers) {
                Ok(dns) => Some(dns),
                // Mail would go through unchecked: refused like any broken config.
                Err(e) if verify => {
                    errors.push(ResourceError::Resolver(e));
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no DNS resolver; plugin DNS lookups will fail");
                    None
                }
            }
        };
        let verifier = dns.clone().filter(|_| verify).map(|dns| {
            Arc::new(Verifier::new(
                dns,
                &config.hostname,
                config.authentication.timeout.0,
            ))
        });
        let plugins = if config.plugin.is_empty() {
            None
        } else {
            let cache = plugin::cache_dir(config);
            match PluginSet::load(config, &cache, kv, dns, metrics).await {
                Ok(set) => Some(Arc::new(set)),
                Err(e) => {
                    errors.push(e.into());
                    None
                }
            }
        };
        if errors.is_empty() {
            Ok(Resources {
                tls,
                plugins,
                verifier,
                signers: Arc::new(signers),
                route_tls: Arc::new(route_tls),
            })
        } else {
            Err(ResourceErrors(errors))
        }
    }
}
