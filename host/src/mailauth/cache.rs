//! Parsed DNS records (SPF and DMARC records, DKIM keys) kept for their TTL, and one
//! message's view of the keys it needs, for mail-auth's verifiers.

use mail_auth::{ResolverCache, Txt};
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries kept at most this long whatever the TTL says.
const MAX_TTL: Duration = Duration::from_secs(3600);

/// Records by their (absolute) DNS name, bounded in count.
pub struct TxtCache(quick_cache::sync::Cache<String, (Txt, Instant)>);

impl TxtCache {
    pub fn new(capacity: usize) -> TxtCache {
        TxtCache(quick_cache::sync::Cache::new(capacity))
    }

    pub fn get(&self, name: &str) -> Option<Txt> {
        match self.0.get(name) {
            Some((txt, until)) if until > Instant::now() => Some(txt),
            Some(_) => {
                self.0.remove(name);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, name: String, txt: Txt, valid_until: Instant) {
        let until = valid_until.min(Instant::now() + MAX_TTL);
        if until > Instant::now() {
            self.0.insert(name, (txt, until));
        }
    }
}

/// One message's keys, all looked up (or found in the shared cache) before mail-auth
/// verifies: failures are kept too, so mail-auth sees a server failure as such and never
/// asks DNS itself.
pub struct MessageKeys<'a> {
    pub shared: &'a TxtCache,
    pub looked_up: Mutex<HashMap<String, Txt>>,
}

impl ResolverCache<String, Txt> for MessageKeys<'_> {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.looked_up.lock().expect("keys lock").get(name).cloned()
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.looked_up.lock().expect("keys lock").remove(name)
    }

    fn insert(&self, key: String, value: Txt, valid_until: Instant) {
        self.shared.insert(key, value, valid_until);
    }
}
