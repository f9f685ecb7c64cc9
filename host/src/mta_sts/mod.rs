//! MTA-STS (RFC 8461) for delivery by MX: a domain that publishes a policy is delivered to
//! only over TLS with a certificate valid for an MX host its policy names (`enforce`), or is
//! reported on (`testing`). Policies are kept for their `max_age` and fetched again when
//! the `_mta-sts` record's id changes (RFC 8461 5.1); a policy that cannot be fetched again
//! is used while it is still valid, so an attacker who blocks the fetch or removes the
//! record cannot downgrade a domain we have seen.

mod fetch;
mod policy;

pub use fetch::Fetcher;
pub use policy::{Mode, Policy};

use crate::dns::DnsError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Domains whose policies are kept (a sender can make us deliver to many domains).
const CACHED_DOMAINS: usize = 10_000;

#[derive(Clone)]
struct Cached {
    id: String,
    policy: Arc<Policy>,
    until: Instant,
}

/// The policies seen, by domain (lower case).
pub struct Policies {
    cache: quick_cache::sync::Cache<String, Cached>,
}

impl Default for Policies {
    fn default() -> Policies {
        Policies {
            cache: quick_cache::sync::Cache::new(CACHED_DOMAINS),
        }
    }
}

/// What to do with a domain's record id and its policy still in the cache (RFC 8461 5.1).
#[derive(Debug, PartialEq)]
enum Next {
    /// The cached policy is current (same id), or nothing says otherwise (no record, or no
    /// answer): keep it.
    Keep,
    /// A new or changed id: fetch, and keep the cached one if the fetch fails.
    Fetch(String),
}

fn next(id: Option<String>, cached: Option<&Cached>) -> Next {
    match (id, cached) {
        (Some(id), Some(c)) if c.id == id => Next::Keep,
        (Some(id), _) => Next::Fetch(id),
        (None, _) => Next::Keep,
    }
}

impl Policies {
    /// The policy in force for `domain` (lower case), or `None`; a `none` policy counts as
    /// none.
    pub async fn policy(&self, fetcher: &Fetcher, domain: &str) -> Option<Arc<Policy>> {
        let now = Instant::now();
        let cached = self.cache.get(domain).filter(|c| c.until > now);
        let record = fetcher.dns.txt(&format!("_mta-sts.{domain}")).await;
        let id = match record {
            Ok(records) => policy::record_id(&records),
            Err(DnsError::NotFound) => None,
            Err(e) => {
                tracing::debug!(%domain, error = %e, "MTA-STS record lookup failed");
                None
            }
        };
        let kept = cached.as_ref().map(|c| c.policy.clone());
        let policy = match next(id, cached.as_ref()) {
            Next::Keep => kept,
            Next::Fetch(id) => match fetcher.fetch(domain).await.and_then(|t| policy::parse(&t)) {
                Ok(policy) => {
                    let policy = Arc::new(policy);
                    let until = now + Duration::from_secs(policy.max_age);
                    let entry = Cached {
                        id,
                        policy: policy.clone(),
                        until,
                    };
                    self.cache.insert(domain.to_string(), entry);
                    tracing::info!(%domain, mode = policy.mode.as_str(), max_age = policy.max_age, "MTA-STS policy fetched");
                    Some(policy)
                }
                Err(e) => {
                    tracing::warn!(%domain, error = %e, "MTA-STS policy fetch failed");
                    kept
                }
            },
        };
        policy.filter(|p| p.mode != Mode::None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_id_is_fetched_and_nothing_else_drops_a_cached_policy() {
        let cached = Cached {
            id: "1".into(),
            policy: Arc::new(Policy {
                mode: Mode::Enforce,
                mx: vec!["mx.test".into()],
                max_age: 60,
            }),
            until: Instant::now(),
        };
        assert_eq!(next(Some("1".into()), Some(&cached)), Next::Keep);
        assert_eq!(
            next(Some("2".into()), Some(&cached)),
            Next::Fetch("2".into())
        );
        assert_eq!(next(Some("1".into()), None), Next::Fetch("1".into()));
        // The record removed, or its lookup blocked: the policy stays until max_age.
        assert_eq!(next(None, Some(&cached)), Next::Keep);
        assert_eq!(next(None, None), Next::Keep);
    }
}
