//! The wasmtime engine shared by every plugin: pooling allocator sized from the config,
//! epoch interruption driven by a ticker thread, and compiled code cached on disk.

use crate::config::Config;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::Engine;
use wasmtime::component::Component;

/// How often the epoch advances; per-call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Octets of each pooled linear memory kept resident between instances.
const KEEP_RESIDENT: usize = 1 << 20;

/// The engine for `config`'s plugins: enough pooled instances for every connection.
pub fn engine(config: &Config) -> wasmtime::Result<Engine> {
    let max_memory = config
        .plugin
        .iter()
        .map(|p| p.memory.0)
        .max()
        .unwrap_or(64 << 20);
    let instances = (config.limits.connections.clamp(1, 2000) * config.plugin.len().max(1)) as u32;
    let mut pool = wasmtime::PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        .total_stacks(instances)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_core_instances_per_component(16)
        .max_memory_size(max_memory as usize)
        // Most MX connections carry one message, so an instance is set up and torn down
        // per message: keep the low pages of memories and tables resident and reset them
        // with memset (only the pages actually dirtied, found with PAGEMAP_SCAN where the
        // kernel has it) instead of madvise, which costs page faults and TLB shootdowns.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .decommit_batch_size(32);
    let mut cfg = wasmtime::Config::new();
    cfg.wasm_component_model(true)
        .epoch_interruption(true)
        // Explicit bounds checks instead of 4 GiB reservations: thousands of pooled
        // memories stay cheap in address space.
        .memory_reservation(max_memory)
        .memory_guard_size(64 << 10)
        .allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&cfg)
}

/// Advances the engine's epoch every `EPOCH_TICK` until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    pub fn start(engine: &Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Where compiled plugins are cached: beside the queue, under the spool directory.
pub fn cache_dir(config: &Config) -> PathBuf {
    config.spool.path.join("plugin-cache")
}

/// Length of the MAC that starts every cached file (HMAC-SHA-256).
const MAC_LEN: usize = 32;

type Mac = hmac::Hmac<sha2::Sha256>;

/// The key that signs the compile cache. It lives beside the cache directory, not in it,
/// readable by the server's user only; made at the first compile.
fn cache_key(cache_dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = cache_dir.with_extension("key");
    match std::fs::read(&path) {
        Ok(key) if key.len() == MAC_LEN => return Ok(key),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: not a cache key; remove it", path.display()),
            ));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let mut key = [0u8; MAC_LEN];
    argon2::password_hash::rand_core::RngCore::fill_bytes(
        &mut argon2::password_hash::rand_core::OsRng,
        &mut key,
    );
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(key.to_vec())
        }
        // Made meanwhile by another process (check-config beside a server): use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let key = std::fs::read(&path)?;
            if key.len() != MAC_LEN {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: not a cache key", path.display()),
                ));
            }
            Ok(key)
        }
        Err(e) => Err(e),
    }
}

/// The MAC of a cached file: over its name (which says which wasm and engine it is for)
/// and its content, so that a signed file cannot pass for another plugin's either.
fn mac(key: &[u8], path: &Path, payload: &[u8]) -> Mac {
    use hmac::Mac as _;
    let mut mac = Mac::new_from_slice(key).expect("HMAC takes any key length");
    let name = path.file_name().unwrap_or_default().as_encoded_bytes();
    mac.update(&(name.len() as u64).to_le_bytes());
    mac.update(name);
    mac.update(payload);
    mac
}

/// Compiles `wasm`, or loads the compiled form cached by an earlier run. Cached files are
/// native code: each is signed with a key kept outside the cache directory, and one that
/// does not verify (written by someone else) is never loaded, only replaced.
#[allow(unsafe_code)]
pub fn compile_cached(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: &Path,
) -> wasmtime::Result<Component> {
    use hmac::Mac as _;
    use sha2::Digest;
    use std::hash::{Hash, Hasher};
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let digest = sha2::Sha256::digest(wasm);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let path = cache_dir.join(format!("{hex}-{:016x}.cwasm", compat.finish()));
    let key = match cache_key(cache_dir) {
        Ok(key) => Some(key),
        Err(e) => {
            tracing::warn!(dir = %cache_dir.display(), error = %e, "no compile cache key; compiling without the cache");
            None
        }
    };
    if let Some(key) = &key
        && let Ok(file) = std::fs::read(&path)
    {
        let verified = file
            .split_at_checked(MAC_LEN)
            .filter(|(tag, payload)| mac(key, &path, payload).verify_slice(tag).is_ok());
        match verified {
            // SAFETY: these octets are what `Component::serialize` of this engine
            // configuration wrote (the name carries its compatibility hash), signed with
            // the server's own key; wasmtime checks the header and refuses a mismatch.
            Some((_, payload)) => match unsafe { Component::deserialize(engine, payload) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "stale compiled plugin; recompiling")
                }
            },
            None => tracing::warn!(
                path = %path.display(),
                "compiled plugin does not verify (not written by this server); recompiling"
            ),
        }
    }
    let component = Component::new(engine, wasm)?;
    if let Some(key) = &key {
        let compiled = component.serialize()?;
        let tag = mac(key, &path, &compiled).finalize().into_bytes();
        let tmp = path.with_extension("tmp");
        let written = create_private_dir(cache_dir)
            .and_then(|_| std::fs::write(&tmp, [&tag[..], &compiled].concat()))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(dir = %cache_dir.display(), error = %e, "cannot cache compiled plugin");
        }
    }
    Ok(component)
}

/// The cache directory, writable by the server's user only.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
