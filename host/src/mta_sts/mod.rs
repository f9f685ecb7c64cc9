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

/// How long a failed fetch for a record id is not tried again (RFC 8461 3.3 asks for at
/// least 5 minutes), so a policy server that hangs costs one fetch per domain and id.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

#[derive(Clone)]
struct Cached {
    id: String,
    policy: Arc<Policy>,
    fetched: Instant,
    until: Instant,
}

impl Cached {
    /// Past half its life: fetched again (the cached one stays if that fails), so that a
    /// fetch blocked at the very end cannot let a domain's policy lapse (RFC 8461 10.2).
    fn stale(&self, now: Instant) -> bool {
        now.duration_since(self.fetched) > (self.until - self.fetched) / 2
    }
}

/// What is known of a domain's policy.
pub enum Lookup {
    /// In force (`enforce` or `testing`).
    Policy(Arc<Policy>),
    /// None published (no record, or `mode: none`).
    Absent,
    /// A record is there, or the lookup failed, and no valid policy could be had: RFC 8461
    /// 5.1 delivers as without one; a REQUIRETLS message waits.
    Unknown,
}

impl Lookup {
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        match self {
            Lookup::Policy(p) => Some(p),
            _ => None,
        }
    }
}

/// The policies seen, by domain (lower case).
pub struct Policies {
    cache: quick_cache::sync::Cache<String, Cached>,
    /// Record ids whose fetch failed, by domain, and until when they are not tried again.
    failed: quick_cache::sync::Cache<String, (String, Instant)>,
}

impl Default for Policies {
    fn default() -> Policies {
        Policies {
            cache: quick_cache::sync::Cache::new(CACHED_DOMAINS),
            failed: quick_cache::sync::Cache::new(CACHED_DOMAINS),
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

fn next(id: Option<String>, cached: Option<&Cached>, now: Instant) -> Next {
    match (id, cached) {
        (Some(id), Some(c)) if c.id == id && !c.stale(now) => Next::Keep,
        (Some(id), _) => Next::Fetch(id),
        (None, _) => Next::Keep,
    }
}

impl Policies {
    /// What is known of `domain`'s (lower case) policy now.
    pub async fn policy(&self, fetcher: &Fetcher, domain: &str) -> Lookup {
        let now = Instant::now();
        let cached = self.cache.get(domain).filter(|c| c.until > now);
        let record = fetcher.dns.txt(&format!("_mta-sts.{domain}")).await;
        let (id, answered) = match record {
            Ok(records) => (policy::record_id(&records), true),
            Err(DnsError::NotFound) => (None, true),
            Err(e) => {
                tracing::debug!(%domain, error = %e, "MTA-STS record lookup failed");
                (None, false)
            }
        };
        let kept = cached.as_ref().map(|c| c.policy.clone());
        let policy = match next(id, cached.as_ref(), now) {
            Next::Keep => match kept {
                Some(policy) => Some(policy),
                None if answered => return Lookup::Absent,
                None => return Lookup::Unknown,
            },
            Next::Fetch(id) => match self.fetch(fetcher, domain, id, now).await {
                Some(policy) => Some(policy),
                None => kept,
            },
        };
        match policy {
            Some(p) if p.mode == Mode::None => Lookup::Absent,
            Some(p) => Lookup::Policy(p),
            None => Lookup::Unknown,
        }
    }

    /// Fetches the policy of record `id`, unless that failed a moment ago; keeps it.
    async fn fetch(
        &self,
        fetcher: &Fetcher,
        domain: &str,
        id: String,
        now: Instant,
    ) -> Option<Arc<Policy>> {
        if self
            .failed
            .get(domain)
            .is_some_and(|(failed, until)| failed == id && until > now)
        {
            return None;
        }
        match fetcher.fetch(domain).await.and_then(|t| policy::parse(&t)) {
            Ok(policy) => {
                let policy = Arc::new(policy);
                let until = now + Duration::from_secs(policy.max_age);
                let entry = Cached {
                    id,
                    policy: policy.clone(),
                    fetched: now,
                    until,
                };
                self.cache.insert(domain.to_string(), entry);
                self.failed.remove(domain);
                tracing::info!(%domain, mode = policy.mode.as_str(), max_age = policy.max_age, "MTA-STS policy fetched");
                Some(policy)
            }
            Err(e) => {
                tracing::warn!(%domain, error = %e, "MTA-STS policy fetch failed");
                self.failed
                    .insert(domain.to_string(), (id, now + RETRY_AFTER_FAILURE));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_id_is_fetched_and_nothing_else_drops_a_cached_policy() {
        let now = Instant::now();
        let cached = Cached {
            id: "1".into(),
            policy: Arc::new(Policy {
                mode: Mode::Enforce,
                mx: vec!["mx.test".into()],
                max_age: 60,
            }),
            fetched: now,
            until: now + Duration::from_secs(60),
        };
        let next = |id: Option<&str>, cached, at| next(id.map(String::from), cached, at);
        assert_eq!(next(Some("1"), Some(&cached), now), Next::Keep);
        assert_eq!(next(Some("2"), Some(&cached), now), Next::Fetch("2".into()));
        assert_eq!(next(Some("1"), None, now), Next::Fetch("1".into()));
        // Past half its life, the same id is fetched again (the cached one kept meanwhile).
        let later = now + Duration::from_secs(31);
        assert_eq!(
            next(Some("1"), Some(&cached), later),
            Next::Fetch("1".into())
        );
        // The record removed, or its lookup blocked: the policy stays until max_age.
        assert_eq!(next(None, Some(&cached), later), Next::Keep);
        assert_eq!(next(None, None, now), Next::Keep);
    }
}
