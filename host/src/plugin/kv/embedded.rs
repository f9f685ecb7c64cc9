//! The embedded backend of the kv capability (the default): in memory, with TTLs and a
//! quota per plugin, persisted as JSON under the spool directory (values base64; written
//! atomically, at most once a second while dirty, from a snapshot so the lock is not held
//! while writing).

use super::{Quota, QuotaExceeded};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    #[serde(serialize_with = "to_base64", deserialize_with = "from_base64")]
    value: Vec<u8>,
    /// Unix seconds; `None` never expires.
    expires: Option<u64>,
}

fn to_base64<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&B64.encode(value))
}

/// Base64 text, or the array of numbers that earlier versions wrote.
fn from_base64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Text(String),
        Octets(Vec<u8>),
    }
    match Stored::deserialize(d)? {
        Stored::Text(t) => B64.decode(t).map_err(serde::de::Error::custom),
        Stored::Octets(v) => Ok(v),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When an entry with this TTL expires (a guest's absurd TTL is "never", not an overflow).
fn expiry(ttl: Duration) -> u64 {
    now().saturating_add(ttl.as_secs().max(1))
}

fn full_key(namespace: &str, key: &str) -> String {
    format!("{namespace}\u{0}{key}")
}

fn namespace_of(full: &str) -> &str {
    full.split('\0').next().unwrap_or_default()
}

/// What a namespace holds.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    keys: usize,
    bytes: u64,
}

fn size(full: &str, e: &Entry) -> u64 {
    (full.len() + e.value.len()) as u64
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    usage: HashMap<String, Usage>,
    quotas: HashMap<String, Quota>,
    /// Unix second of the last sweep of expired entries.
    swept: u64,
}

impl Inner {
    fn account(&mut self, full: &str, keys: isize, bytes: i64) {
        let u = self
            .usage
            .entry(namespace_of(full).to_string())
            .or_default();
        u.keys = u.keys.saturating_add_signed(keys);
        u.bytes = u.bytes.saturating_add_signed(bytes);
    }

    fn remove(&mut self, full: &str) -> Option<Entry> {
        let e = self.entries.remove(full)?;
        self.account(full, -1, -(size(full, &e) as i64));
        Some(e)
    }

    /// The live entry under `full`; an expired one is dropped.
    fn live(&mut self, full: &str) -> Option<&mut Entry> {
        let t = now();
        if self
            .entries
            .get(full)
            .is_some_and(|e| e.expires.is_some_and(|x| x <= t))
        {
            self.remove(full);
        }
        self.entries.get_mut(full)
    }

    /// Drops every expired entry (their space counts until then).
    fn sweep(&mut self) {
        let t = now();
        self.swept = t;
        let expired: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.expires.is_some_and(|x| x <= t))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            self.remove(&k);
        }
    }

    /// Would `full` with `new` octets take its namespace past its quota? (`old`: the size
    /// of the entry it replaces.)
    fn over_quota(&self, full: &str, old: Option<u64>, new: u64) -> Option<QuotaExceeded> {
        let ns = namespace_of(full);
        let q = self.quotas.get(ns)?;
        let u = self.usage.get(ns).copied().unwrap_or_default();
        let keys = u.keys + usize::from(old.is_none());
        let bytes = u.bytes - old.unwrap_or(0) + new;
        (keys > q.keys || bytes > q.bytes).then_some(QuotaExceeded {
            keys: q.keys,
            bytes: q.bytes,
        })
    }

    /// Stores `e` under `full` unless that takes the namespace past its quota. At the quota,
    /// expired entries are swept first (at most once a second, it walks every entry).
    fn insert(&mut self, full: String, e: Entry) -> Result<(), QuotaExceeded> {
        let new = size(&full, &e);
        let old = self.live(&full).map(|old| size(&full, old));
        if self.over_quota(&full, old, new).is_some() && now() > self.swept {
            self.sweep();
        }
        if let Some(exceeded) = self.over_quota(&full, old, new) {
            return Err(exceeded);
        }
        self.account(
            &full,
            isize::from(old.is_none()),
            new as i64 - old.unwrap_or(0) as i64,
        );
        self.entries.insert(full, e);
        Ok(())
    }
}

pub struct EmbeddedKv {
    inner: Mutex<Inner>,
    path: PathBuf,
    dirty: AtomicBool,
}

impl EmbeddedKv {
    /// Loads `path` if it exists (expired entries dropped).
    pub fn open(path: &Path) -> std::io::Result<EmbeddedKv> {
        let entries: HashMap<String, Entry> = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "kv store unreadable; starting empty");
                HashMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e),
        };
        let t = now();
        let mut inner = Inner::default();
        for (k, e) in entries {
            if e.expires.is_none_or(|x| x > t) {
                inner.account(&k, 1, size(&k, &e) as i64);
                inner.entries.insert(k, e);
            }
        }
        Ok(EmbeddedKv {
            inner: Mutex::new(inner),
            path: path.to_path_buf(),
            dirty: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("kv lock")
    }

    /// Writes the store if it changed: temp file, fsync, rename. The lock is held only to
    /// take a snapshot; encoding and writing happen without it. Run it off the async workers.
    pub fn flush(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let snapshot = {
            let mut inner = self.lock();
            inner.sweep();
            inner.entries.clone()
        };
        let written = (|| {
            let bytes = serde_json::to_vec(&snapshot)?;
            let tmp = self.path.with_extension("tmp");
            std::fs::write(&tmp, &bytes)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if written.is_err() {
            // Not on disk: the next flush tries again.
            self.changed();
        }
        written
    }

    fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Sets the quota of a namespace (at plugin load; a reload may change it).
    pub fn set_quota(&self, namespace: &str, quota: Quota) {
        self.lock().quotas.insert(namespace.to_string(), quota);
    }

    pub fn get(&self, namespace: &str, key: &str) -> Option<Vec<u8>> {
        self.lock()
            .live(&full_key(namespace, key))
            .map(|e| e.value.clone())
    }

    pub fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), QuotaExceeded> {
        let expires = ttl.map(expiry);
        self.lock()
            .insert(full_key(namespace, key), Entry { value, expires })?;
        self.changed();
        Ok(())
    }

    pub fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, (i64, QuotaExceeded)> {
        let full = full_key(namespace, key);
        let mut inner = self.lock();
        let (next, expires) = match inner.live(&full) {
            Some(e) => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0)
                    .saturating_add(delta);
                (n, e.expires)
            }
            None => (delta, ttl.map(expiry)),
        };
        let value = next.to_string().into_bytes();
        inner
            .insert(full, Entry { value, expires })
            .map_err(|e| (next, e))?;
        drop(inner);
        self.changed();
        Ok(next)
    }

    pub fn delete(&self, namespace: &str, key: &str) {
        if self.lock().remove(&full_key(namespace, key)).is_some() {
            self.changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_ttl_increment_and_persistence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.json");
        let kv = EmbeddedKv::open(&path).unwrap();
        kv.set("a", "k", b"1".to_vec(), None).unwrap();
        assert_eq!(kv.get("b", "k"), None, "namespaces are separate");
        assert_eq!(kv.increment("a", "k", 4, None), Ok(5));
        assert_eq!(
            kv.increment("a", "n", 2, Some(Duration::from_secs(60))),
            Ok(2)
        );
        kv.set("a", "gone", b"x".to_vec(), Some(Duration::from_secs(1)))
            .unwrap();
        kv.lock()
            .entries
            .get_mut(&full_key("a", "gone"))
            .unwrap()
            .expires = Some(now() - 1);
        assert_eq!(kv.get("a", "gone"), None);
        kv.delete("a", "n");
        kv.set("a", "bin", vec![0, 255, 10], None).unwrap();
        kv.flush().unwrap();
        // Values are stored as text, not arrays of numbers.
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"AP8K\""), "{text}");
        let again = EmbeddedKv::open(&path).unwrap();
        assert_eq!(again.get("a", "k"), Some(b"5".to_vec()));
        assert_eq!(again.get("a", "n"), None);
        assert_eq!(again.get("a", "bin"), Some(vec![0, 255, 10]));
    }

    #[test]
    fn earlier_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.json");
        std::fs::write(&path, r#"{"a\u0000k":{"value":[49,50],"expires":null}}"#).unwrap();
        let kv = EmbeddedKv::open(&path).unwrap();
        assert_eq!(kv.get("a", "k"), Some(b"12".to_vec()));
    }

    #[test]
    fn quotas_bound_each_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let kv = EmbeddedKv::open(&dir.path().join("kv.json")).unwrap();
        kv.set_quota("p", Quota { keys: 2, bytes: 20 });
        kv.set("p", "a", b"1".to_vec(), None).unwrap();
        kv.set("p", "b", b"2".to_vec(), None).unwrap();
        assert!(
            kv.set("p", "c", b"3".to_vec(), None).is_err(),
            "a third key"
        );
        // Replacing a key is not a new key; growing past the octets is refused.
        kv.set("p", "a", b"11".to_vec(), None).unwrap();
        assert!(kv.set("p", "a", vec![b'x'; 30], None).is_err());
        assert_eq!(
            kv.increment("p", "c", 7, None),
            Err((7, QuotaExceeded { keys: 2, bytes: 20 }))
        );
        assert_eq!(kv.increment("p", "b", 1, None), Ok(3));
        // Deleting makes room; other namespaces are not counted.
        kv.delete("p", "a");
        kv.set("p", "c", b"3".to_vec(), None).unwrap();
        kv.set("q", "x", vec![0; 100], None).unwrap();
        // Expired entries make room once swept, without any read of them; absurd TTLs
        // mean "never".
        for k in ["b", "c"] {
            kv.lock()
                .entries
                .get_mut(&full_key("p", k))
                .unwrap()
                .expires = Some(now() - 1);
        }
        kv.lock().swept = 0;
        kv.set("p", "d", b"4".to_vec(), Some(Duration::MAX))
            .unwrap();
        kv.set("p", "e", b"5".to_vec(), None).unwrap();
    }
}
