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

/// A cached record: the parsed form, until when it holds, and the octets of its answer.
#[derive(Clone)]
pub struct Entry<T> {
    txt: T,
    until: Instant,
    octets: u64,
}

/// Weighs an entry by its answer's size, so that huge records (DNS allows 64 KiB) cannot
/// make the cache large.
#[derive(Clone)]
pub struct BySize;

impl<T> quick_cache::Weighter<String, Entry<T>> for BySize {
    fn weight(&self, name: &String, entry: &Entry<T>) -> u64 {
        name.len() as u64 + entry.octets + 64
    }
}

/// Records by their (absolute) DNS name, bounded in octets: mail-auth's parsed form
/// (DKIM keys, DMARC records), or another (our SPF records).
pub struct TxtCache<T = Txt>(quick_cache::sync::Cache<String, Entry<T>, BySize>);

impl<T: Clone> TxtCache<T> {
    /// About `octets` of answers, for names of about `typical` octets of record each.
    pub fn new(octets: u64, typical: u64) -> TxtCache<T> {
        let items = usize::try_from(octets / typical).unwrap_or(usize::MAX);
        TxtCache(quick_cache::sync::Cache::with_weighter(
            items, octets, BySize,
        ))
    }

    pub fn get(&self, name: &str) -> Option<T> {
        match self.0.get(name) {
            Some(e) if e.until > Instant::now() => Some(e.txt),
            Some(_) => {
                self.0.remove(name);
                None
            }
            None => None,
        }
    }

    /// Keeps `txt`, parsed from an answer of `octets`, until `valid_until` (at most an
    /// hour).
    pub fn insert(&self, name: String, txt: T, valid_until: Instant, octets: usize) {
        let until = valid_until.min(Instant::now() + MAX_TTL);
        if until > Instant::now() {
            let octets = octets as u64;
            self.0.insert(name, Entry { txt, until, octets });
        }
    }
}

/// One message's keys, all looked up (or found in the shared cache) before mail-auth
/// verifies: failures are kept too, so mail-auth sees a server failure as such. Any other
/// name mail-auth would look up (a report address for `r=y`, a third-party signature's
/// record) is an error here: mail-auth never asks DNS itself, so nothing it does can wait.
pub struct MessageKeys {
    pub looked_up: Mutex<HashMap<String, Txt>>,
}

impl ResolverCache<String, Txt> for MessageKeys {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let found = self.looked_up.lock().expect("keys lock").get(name).cloned();
        Some(
            found.unwrap_or_else(|| Txt::Error(mail_auth::Error::DnsError("not looked up".into()))),
        )
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        String: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.looked_up.lock().expect("keys lock").remove(name)
    }

    fn insert(&self, _: String, _: Txt, _: Instant) {}
}
