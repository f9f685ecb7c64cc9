//! The key-value store behind the plugins' `kv` capability: a trait, so that a shared
//! backend can be added, and the embedded backend: in memory, with TTLs, persisted as JSON
//! under the spool directory (written atomically, at most once a second while dirty).

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One namespace per plugin; keys are the plugin's own.
pub trait KvStore: Send + Sync {
    fn get(&self, namespace: &str, key: &str) -> Option<Vec<u8>>;
    fn set(&self, namespace: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>);
    /// Atomically adds `delta` to the integer stored as decimal text (absent or not a number
    /// counts as 0); `ttl` applies when the key is created.
    fn increment(&self, namespace: &str, key: &str, delta: i64, ttl: Option<Duration>) -> i64;
    fn delete(&self, namespace: &str, key: &str);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    value: Vec<u8>,
    /// Unix seconds; `None` never expires.
    expires: Option<u64>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn full_key(namespace: &str, key: &str) -> String {
    format!("{namespace}\u{0}{key}")
}

pub struct EmbeddedKv {
    entries: Mutex<HashMap<String, Entry>>,
    path: PathBuf,
    dirty: AtomicBool,
}

impl EmbeddedKv {
    /// Loads `path` if it exists (expired entries dropped).
    pub fn open(path: &Path) -> std::io::Result<EmbeddedKv> {
        let mut entries: HashMap<String, Entry> = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "kv store unreadable; starting empty");
                HashMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e),
        };
        let t = now();
        entries.retain(|_, e| e.expires.is_none_or(|x| x > t));
        Ok(EmbeddedKv {
            entries: Mutex::new(entries),
            path: path.to_path_buf(),
            dirty: AtomicBool::new(false),
        })
    }

    /// Writes the store if it changed: temp file, fsync, rename.
    pub fn flush(&self) -> std::io::Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let bytes = {
            let mut entries = self.entries.lock().expect("kv lock");
            let t = now();
            entries.retain(|_, e| e.expires.is_none_or(|x| x > t));
            serde_json::to_vec(&*entries)?
        };
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }

    fn live<'a>(entries: &'a mut HashMap<String, Entry>, k: &str) -> Option<&'a mut Entry> {
        let t = now();
        if entries
            .get(k)
            .is_some_and(|e| e.expires.is_some_and(|x| x <= t))
        {
            entries.remove(k);
        }
        entries.get_mut(k)
    }
}

impl KvStore for EmbeddedKv {
    fn get(&self, namespace: &str, key: &str) -> Option<Vec<u8>> {
        let mut entries = self.entries.lock().expect("kv lock");
        Self::live(&mut entries, &full_key(namespace, key)).map(|e| e.value.clone())
    }

    fn set(&self, namespace: &str, key: &str, value: Vec<u8>, ttl: Option<Duration>) {
        let expires = ttl.map(|t| now() + t.as_secs().max(1));
        self.entries
            .lock()
            .expect("kv lock")
            .insert(full_key(namespace, key), Entry { value, expires });
        self.dirty.store(true, Ordering::Release);
    }

    fn increment(&self, namespace: &str, key: &str, delta: i64, ttl: Option<Duration>) -> i64 {
        let k = full_key(namespace, key);
        let mut entries = self.entries.lock().expect("kv lock");
        let next = match Self::live(&mut entries, &k) {
            Some(e) => {
                let n = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0)
                    .saturating_add(delta);
                e.value = n.to_string().into_bytes();
                n
            }
            None => {
                let expires = ttl.map(|t| now() + t.as_secs().max(1));
                entries.insert(
                    k,
                    Entry {
                        value: delta.to_string().into_bytes(),
                        expires,
                    },
                );
                delta
            }
        };
        self.dirty.store(true, Ordering::Release);
        next
    }

    fn delete(&self, namespace: &str, key: &str) {
        self.entries
            .lock()
            .expect("kv lock")
            .remove(&full_key(namespace, key));
        self.dirty.store(true, Ordering::Release);
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
        kv.set("a", "k", b"1".to_vec(), None);
        assert_eq!(kv.get("b", "k"), None, "namespaces are separate");
        assert_eq!(kv.increment("a", "k", 4, None), 5);
        assert_eq!(kv.increment("a", "n", 2, Some(Duration::from_secs(60))), 2);
        kv.set("a", "gone", b"x".to_vec(), Some(Duration::from_secs(1)));
        kv.entries
            .lock()
            .unwrap()
            .get_mut(&full_key("a", "gone"))
            .unwrap()
            .expires = Some(now() - 1);
        assert_eq!(kv.get("a", "gone"), None);
        kv.delete("a", "n");
        kv.flush().unwrap();
        let again = EmbeddedKv::open(&path).unwrap();
        assert_eq!(again.get("a", "k"), Some(b"5".to_vec()));
        assert_eq!(again.get("a", "n"), None);
    }
}
