//! `[kv]`: where the plugins' kv capability keeps its data.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kv {
    #[serde(default)]
    pub backend: KvBackend,
    /// With `backend = "redis"`: `redis://[user:password@]host:port[/db]`, `rediss://` for
    /// TLS, or `unix:///path`.
    pub url: Option<String>,
    /// Put before every key the gateway writes to Redis, so several deployments (or other
    /// applications) can share one server.
    #[serde(default = "Kv::default_prefix")]
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// In memory, persisted as `kv.json` under the spool: one gateway's own.
    #[default]
    Embedded,
    /// Shared by every gateway that names the same Redis.
    Redis,
}

impl Kv {
    fn default_prefix() -> String {
        "wasmtp:".into()
    }

    pub(super) fn validate(&self, p: &mut Vec<String>) {
        match (self.backend, &self.url) {
            (KvBackend::Redis, None) => p.push("kv.url: required with backend = \"redis\"".into()),
            (KvBackend::Redis, Some(url)) => {
                // The rest of the URL is the redis crate's to read, at start.
                let schemes = ["redis://", "redis+unix://", "unix://"];
                if url.starts_with("rediss://") {
                    p.push(format!(
                        "kv.url: {url:?}: TLS to Redis (rediss://) is not supported; use redis:// on a trusted network or a local unix socket"
                    ));
                } else if !schemes.iter().any(|s| url.starts_with(s)) {
                    p.push(format!(
                        "kv.url: {url:?} is not a Redis URL (redis://HOST[:PORT][/DB] or unix:///PATH)"
                    ));
                }
            }
            (KvBackend::Embedded, Some(_)) => {
                p.push("kv.url: only with backend = \"redis\"".into())
            }
            (KvBackend::Embedded, None) => {}
        }
    }
}

impl Default for Kv {
    fn default() -> Self {
        Kv {
            backend: KvBackend::default(),
            url: None,
            prefix: Kv::default_prefix(),
        }
    }
}
