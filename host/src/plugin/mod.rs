//! The plugin runtime: WebAssembly components (wasmtime) called at each step of the SMTP
//! dialogue through the WIT contract in `wit/`.
//!
//! - One `Engine` with epoch interruption and the pooling allocator (`engine`).
//! - Each plugin compiled once; compiled code cached on disk under the spool directory,
//!   keyed by the wasm's SHA-256 and the engine's compatibility hash, so a restart does not
//!   recompile. One `PluginPre` per plugin.
//! - One store and instance per (session, plugin), created at the first hook that plugin
//!   wants, dropped with the session (`session`).
//! - A trap, timeout, memory overrun or bad reply costs that one hook: answered per
//!   `on_error`, the instance dropped, the fault logged and counted (`fault`). Other
//!   sessions never see it.

mod auth;
mod bindings;
mod breaker;
pub mod bundled;
pub mod capability;
mod edit;
mod edits;
pub use edits::{Edit, EditTarget, NewBody};
mod engine;
mod fault;
mod grants;
mod hooks;
mod host;
mod http;
pub mod kv;
mod limits;
mod message;
mod meter;
mod output;
pub use message::Message;
pub mod offline;
mod session;
mod verdict;

use crate::config::{Config, OnError};
pub use bindings::types::{
    ArcCheck, AuthResults, AuthStatus, Change as PluginChange, DkimCheck, DmarcCheck, DmarcPolicy,
    EnvelopeFrom as PluginSender, Hook, Param as PluginParam, Session as SessionInfo, SpfCheck,
    SpfResults, TlsInfo,
};
pub use capability::Capability;
pub use engine::cache_dir;
pub use fault::{Fault, GuestFault, HostFault};
pub use hooks::{Call, HookSet};
use host::{HostState, PluginShared};
pub use session::{DataCall, PluginSession};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use verdict::{DataOutcome, Decision};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Engine, Store, UpdateDeadline};

/// Why the plugins of a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("plugin engine: {0:#}")]
    Engine(wasmtime::Error),
    #[error("plugin epoch ticker: {0}")]
    Ticker(std::io::Error),
    /// Every plugin that failed, each named.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Plugins(Vec<PluginError>),
}

/// One `[[plugin]]` that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// Named by its config key: the path is what is wrong.
    #[error("plugin[{index}].path: {source}")]
    Source {
        index: usize,
        source: bundled::SourceError,
    },
    #[error("plugin[{index}] ({name}): not a valid plugin component: {source:#}")]
    Compile {
        index: usize,
        name: String,
        source: wasmtime::Error,
    },
    #[error(
        "plugin[{index}] ({name}): built for {contract}; this server speaks wasmtp:plugin@{}: rebuild it against wit/ (README: Migrating plugins)",
        bindings::CONTRACT_VERSION
    )]
    OldContract {
        index: usize,
        name: String,
        contract: String,
    },
    #[error("plugin[{index}] ({name}): does not fit the wasmtp:plugin world: {source:#}")]
    World {
        index: usize,
        name: String,
        source: wasmtime::Error,
    },
    #[error("plugin[{index}] ({name}): {source}")]
    Declaration {
        index: usize,
        name: String,
        source: capability::DeclarationError,
    },
    /// The component declares capabilities its config does not grant.
    #[error(
        "plugin[{index}] ({name}): needs {} that its config does not grant: set capabilities = [{}]",
        names(missing),
        quoted(wanted)
    )]
    NotGranted {
        index: usize,
        name: String,
        missing: Vec<Capability>,
        /// What to grant: what is granted now and what is missing.
        wanted: Vec<Capability>,
    },
    #[error("plugin[{index}] ({name}): {message}")]
    Grant {
        index: usize,
        name: String,
        message: String,
    },
    #[error("plugin[{index}] ({name}): init {fault}")]
    Init {
        index: usize,
        name: String,
        fault: Fault,
    },
}

fn names(caps: &[Capability]) -> String {
    let list: Vec<&str> = caps.iter().map(|c| c.name()).collect();
    let noun = if caps.len() > 1 {
        "capabilities"
    } else {
        "capability"
    };
    format!("the {} {noun}", list.join(" and "))
}

fn quoted(caps: &[Capability]) -> String {
    let list: Vec<String> = caps.iter().map(|c| format!("{:?}", c.name())).collect();
    list.join(", ")
}

struct Loaded {
    shared: Arc<PluginShared>,
    pre: bindings::PluginPre<HostState>,
    hooks: HookSet,
    on_error: OnError,
    timeout: Duration,
    memory: usize,
    /// `mode = "after-queue"`: only its data hook runs, on spooled messages, at most
    /// `scans` at once.
    after_queue: Option<tokio::sync::Semaphore>,
    /// `shadow = true`: its verdicts and changes are counted and logged, not applied.
    shadow: bool,
    breaker: breaker::Breaker,
    breaker_cooldown: Duration,
}

impl Loaded {
    /// Is it called at `hook` in the SMTP dialogue? One after the queue never is.
    fn in_session(&self, hook: Hook) -> bool {
        self.after_queue.is_none() && self.hooks.contains(hook)
    }

    fn wants_data(&self, after_queue: bool) -> bool {
        self.hooks.contains(Hook::Data) && self.after_queue.is_some() == after_queue
    }
}

struct Instance {
    store: Store<HostState>,
    bindings: bindings::Plugin,
}

/// Every plugin of the config, compiled and ready to instantiate.
pub struct PluginSet {
    engine: Engine,
    plugins: Vec<Loaded>,
    provider: grants::Provider,
    metrics: Arc<crate::metrics::Metrics>,
    /// Messages in an after-queue scan at once: as many as the plugins after the queue
    /// scan together (their `concurrency` summed), so one waiting holds no message.
    scans: tokio::sync::Semaphore,
    _ticker: engine::EpochTicker,
}

impl PluginSet {
    /// Compiles and probes every `[[plugin]]`: instantiates it once and calls `init` with
    /// its config, to learn the hooks it wants. Reports every plugin that fails.
    pub async fn load(
        config: &Config,
        cache_dir: &Path,
        kv: kv::Kv,
        dns: Option<crate::dns::Dns>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<PluginSet, LoadError> {
        let engine = engine::engine(config).map_err(LoadError::Engine)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(LoadError::Engine)?;
        // Linked for every plugin; each request is checked against the plugin's grant.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(LoadError::Engine)?;
        bindings::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(LoadError::Engine)?;
        let ticker = engine::EpochTicker::start(&engine).map_err(LoadError::Ticker)?;
        let mut set = PluginSet {
            engine,
            plugins: Vec::new(),
            provider: grants::Provider { kv, dns },
            metrics,
            scans: tokio::sync::Semaphore::new(0),
            _ticker: ticker,
        };
        let mut errors = Vec::new();
        for (index, p) in config.plugin.iter().enumerate() {
            match set.load_one(&linker, cache_dir, index, p).await {
                Ok(loaded) => {
                    let granted = loaded.shared.grants.names();
                    tracing::info!(plugin = p.name, hooks = %loaded.hooks, granted, mode = p.mode.as_str(), "plugin loaded");
                    set.plugins.push(loaded);
                }
                Err(e) => errors.push(e),
            }
        }
        let scans = config.plugin.iter();
        let scans = scans.filter(|p| p.mode == crate::config::PluginMode::AfterQueue);
        set.scans
            .add_permits(scans.map(|p| p.concurrency).sum::<usize>().max(1));
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(LoadError::Plugins(errors))
        }
    }

    async fn load_one(
        &self,
        linker: &Linker<HostState>,
        cache_dir: &Path,
        index: usize,
        p: &crate::config::Plugin,
    ) -> Result<Loaded, PluginError> {
        let name = || p.name.clone();
        let wasm =
            bundled::read_wasm(&p.path).map_err(|source| PluginError::Source { index, source })?;
        let component =
            engine::compile_cached(&self.engine, &wasm, cache_dir).map_err(|source| {
                PluginError::Compile {
                    index,
                    name: name(),
                    source,
                }
            })?;
        // Read once the wasm is known to be a component, so a broken file is named as such.
        let declared = capability::declared(&wasm).map_err(|source| PluginError::Declaration {
            index,
            name: name(),
            source,
        })?;
        let granted = match &p.capabilities {
            Some(granted) => granted.clone(),
            None if bundled::is_bundled(&p.path) => declared.clone().unwrap_or_default(),
            None => Vec::new(),
        };
        let missing = capability::missing(declared.as_deref().unwrap_or_default(), &granted);
        if !missing.is_empty() {
            let mut wanted = granted.clone();
            wanted.extend(&missing);
            return Err(PluginError::NotGranted {
                index,
                name: name(),
                missing,
                wanted,
            });
        }
        let grants = grants::Grants::new(p, &granted, &self.provider).map_err(|message| {
            PluginError::Grant {
                index,
                name: name(),
                message,
            }
        })?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(bindings::PluginPre::new)
            .map_err(
                |source| match bindings::other_contract(&component, &self.engine) {
                    Some(contract) => PluginError::OldContract {
                        index,
                        name: name(),
                        contract,
                    },
                    None => PluginError::World {
                        index,
                        name: name(),
                        source,
                    },
                },
            )?;
        // A TOML table always has a JSON form.
        let config_json = serde_json::to_string(&p.config).expect("TOML is JSON-compatible");
        let shared = PluginShared {
            name: p.name.as_str().into(),
            config_json: config_json.into(),
            grants,
            on_error: p.on_error,
            log: Default::default(),
            meter: Arc::new(meter::Meter::new(self.metrics.clone(), &p.name, p.shadow)),
        };
        let mut loaded = Loaded {
            shared: Arc::new(shared),
            pre,
            hooks: HookSet::default(),
            on_error: p.on_error,
            timeout: p.timeout(),
            memory: p.memory.0 as usize,
            after_queue: (p.mode == crate::config::PluginMode::AfterQueue)
                .then(|| tokio::sync::Semaphore::new(p.concurrency)),
            shadow: p.shadow,
            breaker: breaker::Breaker::new(p.breaker_faults, p.breaker_cooldown.0),
            breaker_cooldown: p.breaker_cooldown.0,
        };
        let (_, hooks) = self
            .instantiate(&loaded)
            .await
            .map_err(|fault| PluginError::Init {
                index,
                name: name(),
                fault,
            })?;
        loaded.hooks = hooks;
        Ok(loaded)
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// The hooks plugin `i` asked for at `init`.
    pub fn hooks(&self, i: usize) -> HookSet {
        self.plugins[i].hooks
    }

    /// A store and instance with `init` done; returns the hooks it asked for.
    async fn instantiate(&self, p: &Loaded) -> Result<(Instance, HookSet), Fault> {
        let mut store = Store::new(&self.engine, HostState::new(p.shared.clone(), p.memory));
        store.limiter(|s| &mut s.limits);
        // At each epoch tick a running guest yields its tokio worker to other sessions, and
        // traps once its call's deadline has passed.
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Trap::Interrupt.into())
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let config_json = &p.shared.config_json;
        let started = Instant::now();
        let (bindings, hooks) = session::guarded(&mut store, started, p.timeout, async |store| {
            let bindings = p.pre.instantiate_async(&mut *store).await?;
            let hooks = bindings
                .wasmtp_plugin_hooks()
                .call_init(&mut *store, config_json)
                .await?;
            Ok((bindings, hooks))
        })
        .await?;
        let hooks = hooks.map_err(GuestFault::ConfigRefused)?;
        Ok((Instance { store, bindings }, hooks.into_iter().collect()))
    }

    /// Does a plugin before the queue (`after_queue`: after it) want the data hook? With
    /// one after it, every message waits in the spool for its scan before delivery.
    pub fn wants_data(&self, after_queue: bool) -> bool {
        self.plugins.iter().any(|p| p.wants_data(after_queue))
    }

    /// The after-queue plugins' data hook over a spooled message, in fresh instances;
    /// each plugin scans at most its `concurrency` messages at once.
    pub async fn scan(self: &Arc<Self>, call: &DataCall<'_>) -> DataOutcome {
        self.session().data(true, call).await
    }

    /// A slot for one message's after-queue scan, waited for before its header is read.
    pub async fn scan_slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.scans.acquire().await.ok()
    }

    /// A fresh set of (lazily created) instances for one SMTP session.
    pub fn session(self: &Arc<Self>) -> PluginSession {
        PluginSession::new(self.clone())
    }
}
