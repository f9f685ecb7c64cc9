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

/// The epoch deadline, in ticks, for a call that may take `timeout`.
pub fn ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

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
        .max_memory_size(max_memory as usize);
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

/// Compiles `wasm`, or loads the compiled form cached by an earlier run.
#[allow(unsafe_code)]
pub fn compile_cached(
    engine: &Engine,
    wasm: &[u8],
    cache_dir: &Path,
) -> wasmtime::Result<Component> {
    use sha2::Digest;
    use std::hash::{Hash, Hasher};
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let digest = sha2::Sha256::digest(wasm);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let path = cache_dir.join(format!("{hex}-{:016x}.cwasm", compat.finish()));
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of this same engine
        // configuration (the name carries its compatibility hash) into the server's own
        // spool directory; wasmtime checks its header and refuses a mismatch.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "stale compiled plugin; recompiling")
            }
        }
    }
    let component = Component::new(engine, wasm)?;
    let compiled = component.serialize()?;
    let tmp = path.with_extension("tmp");
    let written = std::fs::create_dir_all(cache_dir)
        .and_then(|_| std::fs::write(&tmp, compiled))
        .and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(dir = %cache_dir.display(), error = %e, "cannot cache compiled plugin");
    }
    Ok(component)
}
