//! The key-value store behind the plugins' `kv` capability, one namespace per plugin, and
//! its backends (`[kv] backend`): `embedded` (in memory, persisted under the spool) and
//! `redis` (shared by several gateways). Both keep the same semantics: TTLs, atomic
//! increments, a quota per namespace.

mod embedded;
mod redis;
pub use embedded::EmbeddedKv;
pub use redis::RedisKv;

use crate::config::KvBackend;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How much one plugin may keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub keys: usize,
    /// Octets of keys and values together.
    pub bytes: u64,
}

/// A write that would take the namespace past its quota; nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kv quota reached ({keys} keys, {bytes} octets)")]
pub struct QuotaExceeded {
    pub keys: usize,
    pub bytes: u64,
}

/// Why a kv call did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// Over the namespace's quota; for an increment, the value it would have had.
    #[error("{0}")]
    OverQuota(QuotaExceeded, Option<i64>),
    /// The backend cannot be reached or failed.
    #[error("kv backend unavailable: {0}")]
    Down(String),
}

/// The store the server's plugins share.
#[derive(Clone)]
pub enum Kv {
    Embedded(Arc<EmbeddedKv>),
    Redis(Arc<RedisKv>),
}

impl Kv {
    /// The store `[kv]` names: the embedded one kept in `spool/kv.json`, or a Redis (not
    /// connected until first used).
    pub fn open(config: &crate::config::Kv, spool: &Path) -> std::io::Result<Kv> {
        Ok(match (config.backend, &config.url) {
            (KvBackend::Redis, Some(url)) => Kv::Redis(Arc::new(
                RedisKv::new(url, &config.prefix).map_err(std::io::Error::other)?,
            )),
            _ => Kv::Embedded(Arc::new(EmbeddedKv::open(&spool.join("kv.json"))?)),
        })
    }

    /// Writes what the embedded store holds if it changed (Redis keeps its own): run it off
    /// the async workers.
    pub fn flush(&self) -> std::io::Result<()> {
        match self {
            Kv::Embedded(kv) => kv.flush(),
            Kv::Redis(_) => Ok(()),
        }
    }

    /// Sets the quota of a namespace (at plugin load; a reload may change it).
    pub fn set_quota(&self, namespace: &str, quota: Quota) {
        match self {
            Kv::Embedded(kv) => kv.set_quota(namespace, quota),
            Kv::Redis(kv) => kv.set_quota(namespace, quota),
        }
    }

    pub async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        match self {
            Kv::Embedded(kv) => Ok(kv.get(namespace, key)),
            Kv::Redis(kv) => kv.get(namespace, key).await,
        }
    }

    /// Stores a value; with a TTL it expires after that.
    pub async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        match self {
            Kv::Embedded(kv) => kv
                .set(namespace, key, value, ttl)
                .map_err(|e| KvError::OverQuota(e, None)),
            Kv::Redis(kv) => kv.set(namespace, key, value, ttl).await,
        }
    }

    /// Atomically adds `delta` to the integer stored as decimal text (absent or not a number
    /// counts as 0); `ttl` applies when the key is created.
    pub async fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        match self {
            Kv::Embedded(kv) => kv
                .increment(namespace, key, delta, ttl)
                .map_err(|(n, e)| KvError::OverQuota(e, Some(n))),
            Kv::Redis(kv) => kv.increment(namespace, key, delta, ttl).await,
        }
    }

    pub async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        match self {
            Kv::Embedded(kv) => {
                kv.delete(namespace, key);
                Ok(())
            }
            Kv::Redis(kv) => kv.delete(namespace, key).await,
        }
    }
}
