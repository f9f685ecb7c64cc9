//! The plugin runtime: WebAssembly components (wasmtime) called at each step of the SMTP
//! dialogue through the WIT contract in `wit/`.
//!
//! - One `Engine` with epoch interruption (a ticker thread) and the pooling allocator.
//! - Each plugin compiled once; compiled code cached on disk under the spool directory,
//!   keyed by the wasm's SHA-256 and the engine's compatibility hash, so a restart does not
//!   recompile. One `PluginPre` per plugin.
//! - One store and instance per (session, plugin), created at the first hook that plugin
//!   wants, dropped with the session.
//! - A trap, timeout, memory overrun or bad reply costs that one hook: answered per
//!   `on_error`, the instance dropped, the fault logged and counted. Other sessions never see it.

mod bindings;
mod host;
pub mod kv;
mod message;
pub mod offline;

use crate::config::{Config, OnError};
use crate::proto::{EnhancedCode, Reply};
pub use bindings::types::Hook;
pub use bindings::types::Session as SessionInfo;
use bindings::types::{Change, DataVerdict, EnvelopeFrom, Param, Verdict};
pub use bindings::types::{
    Change as PluginChange, EnvelopeFrom as PluginSender, Param as PluginParam, TlsInfo,
};
use host::HostState;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, Store};

/// How often the epoch advances; per-call deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Plugins bundled into the binary (built by `host/build.rs`), loadable as `bundled:NAME`.
pub mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled_plugins.rs"));

    /// The wasm of a bundled plugin.
    pub fn get(name: &str) -> Option<&'static [u8]> {
        PLUGINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
    }
}

/// Reads a plugin's wasm from `path`, or from the binary for `bundled:NAME`.
pub fn read_wasm(path: &Path) -> Result<std::borrow::Cow<'static, [u8]>, String> {
    let text = path.to_string_lossy();
    if let Some(name) = text.strip_prefix("bundled:") {
        return bundled::get(name)
            .map(std::borrow::Cow::Borrowed)
            .ok_or_else(|| {
                format!(
                    "no bundled plugin {name:?} (bundled: {})",
                    bundled::PLUGINS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            });
    }
    std::fs::read(path)
        .map(std::borrow::Cow::Owned)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The hook's name as in the WIT (`connect`, `helo`, ...).
pub fn hook_name(h: Hook) -> &'static str {
    match h {
        Hook::Connect => "connect",
        Hook::Helo => "helo",
        Hook::Auth => "auth",
        Hook::Mail => "mail",
        Hook::Rcpt => "rcpt",
        Hook::Data => "data",
        Hook::Vrfy => "vrfy",
        Hook::Expn => "expn",
    }
}

fn hook_bit(h: Hook) -> u16 {
    1 << match h {
        Hook::Connect => 0,
        Hook::Helo => 1,
        Hook::Auth => 2,
        Hook::Mail => 3,
        Hook::Rcpt => 4,
        Hook::Data => 5,
        Hook::Vrfy => 6,
        Hook::Expn => 7,
    }
}

struct Loaded {
    name: Arc<str>,
    pre: bindings::PluginPre<HostState>,
    hooks: u16,
    config_json: Arc<str>,
    on_error: OnError,
    timeout: Duration,
    memory: usize,
}

/// Every plugin of the config, compiled and ready to instantiate.
pub struct PluginSet {
    engine: Engine,
    plugins: Vec<Loaded>,
    kv: Arc<dyn kv::KvStore>,
    dns: Option<crate::dns::Dns>,
    metrics: Arc<crate::metrics::Metrics>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for PluginSet {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

fn engine(config: &Config) -> wasmtime::Result<Engine> {
    let max_memory = config
        .plugin
        .iter()
        .map(|p| p.memory.0)
        .max()
        .unwrap_or(64 << 20);
    let instances = (config.limits.connections.min(2000) * config.plugin.len().max(1)) as u32;
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

/// Compiles `wasm`, or loads the compiled form cached by an earlier run.
#[allow(unsafe_code)]
fn compile_cached(engine: &Engine, wasm: &[u8], cache_dir: &Path) -> wasmtime::Result<Component> {
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

impl PluginSet {
    /// Compiles and probes every `[[plugin]]`: instantiates it once and calls `init` with
    /// its config, to learn the hooks it wants. Errors name the plugin.
    pub async fn load(
        config: &Config,
        cache_dir: &Path,
        kv: Arc<dyn kv::KvStore>,
        dns: Option<crate::dns::Dns>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<PluginSet, String> {
        let engine = engine(config).map_err(|e| format!("plugin engine: {e:#}"))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| format!("{e:#}"))?;
        bindings::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| format!("{e:#}"))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let (engine, stop) = (engine.clone(), ticker_stop.clone());
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| e.to_string())?;
        }
        let mut set = PluginSet {
            engine,
            plugins: Vec::new(),
            kv,
            dns,
            metrics,
            ticker_stop,
        };
        for (i, p) in config.plugin.iter().enumerate() {
            let ctx = |e: String| format!("plugin[{i}] ({}): {e}", p.name);
            let wasm = read_wasm(&p.path).map_err(ctx)?;
            let component = compile_cached(&set.engine, &wasm, cache_dir)
                .map_err(|e| ctx(format!("not a valid plugin component: {e:#}")))?;
            let pre = linker
                .instantiate_pre(&component)
                .and_then(bindings::PluginPre::new)
                .map_err(|e| ctx(format!("does not fit the wasmtp:plugin world: {e:#}")))?;
            let config_json = serde_json::to_string(&p.config).map_err(|e| ctx(e.to_string()))?;
            let mut loaded = Loaded {
                name: p.name.as_str().into(),
                pre,
                hooks: 0,
                config_json: config_json.into(),
                on_error: p.on_error,
                timeout: p.timeout.0,
                memory: p.memory.0 as usize,
            };
            let (_, hooks) = set.instantiate(&loaded).await.map_err(ctx)?;
            loaded.hooks = hooks;
            tracing::info!(
                plugin = p.name,
                hooks = format!("{hooks:08b}"),
                "plugin loaded"
            );
            set.plugins.push(loaded);
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// The hooks plugin `i` asked for at `init`.
    pub fn hooks(&self, i: usize) -> Vec<Hook> {
        [
            Hook::Connect,
            Hook::Helo,
            Hook::Auth,
            Hook::Mail,
            Hook::Rcpt,
            Hook::Data,
            Hook::Vrfy,
            Hook::Expn,
        ]
        .into_iter()
        .filter(|&h| self.plugins[i].hooks & hook_bit(h) != 0)
        .collect()
    }

    /// A store and instance with `init` done; returns the hooks it asked for.
    async fn instantiate(&self, p: &Loaded) -> Result<(Instance, u16), String> {
        let state = HostState::new(
            p.name.clone(),
            p.config_json.clone(),
            self.kv.clone(),
            self.dns.clone(),
            p.memory,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(ticks(p.timeout));
        let work = async {
            let bindings = p.pre.instantiate_async(&mut store).await?;
            let hooks = bindings
                .wasmtp_plugin_hooks()
                .call_init(&mut store, &p.config_json)
                .await?;
            Ok::<_, wasmtime::Error>((bindings, hooks))
        };
        let result = tokio::time::timeout(p.timeout + EPOCH_TICK * 10, work).await;
        store.data_mut().flush_output();
        let (bindings, hooks) = match result {
            Err(_) => return Err(format!("init took longer than {:?}", p.timeout)),
            Ok(Err(e)) => return Err(format!("init failed: {e:#}")),
            Ok(Ok((_, Err(msg)))) => return Err(format!("init refused its config: {msg}")),
            Ok(Ok((b, Ok(h)))) => (b, h),
        };
        let mask = hooks.into_iter().fold(0, |m, h| m | hook_bit(h));
        Ok((Instance { store, bindings }, mask))
    }

    /// A fresh set of (lazily created) instances for one SMTP session.
    pub fn session(self: &Arc<Self>) -> PluginSession {
        PluginSession {
            set: self.clone(),
            instances: (0..self.plugins.len()).map(|_| None).collect(),
        }
    }
}

fn ticks(timeout: Duration) -> u64 {
    (timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1
}

struct Instance {
    store: Store<HostState>,
    bindings: bindings::Plugin,
}

/// A hook call and its arguments.
pub enum Call<'a> {
    Connect,
    Helo {
        name: &'a str,
        extended: bool,
    },
    Auth {
        mechanism: &'a str,
        user: &'a str,
        success: bool,
    },
    Mail {
        sender: &'a EnvelopeFrom,
    },
    Rcpt {
        sender: &'a EnvelopeFrom,
        recipient: &'a str,
        params: &'a [Param],
        accepted: &'a [String],
    },
    Vrfy(&'a str),
    Expn(&'a str),
}

impl Call<'_> {
    pub fn hook(&self) -> Hook {
        match self {
            Call::Connect => Hook::Connect,
            Call::Helo { .. } => Hook::Helo,
            Call::Auth { .. } => Hook::Auth,
            Call::Mail { .. } => Hook::Mail,
            Call::Rcpt { .. } => Hook::Rcpt,
            Call::Vrfy(_) => Hook::Vrfy,
            Call::Expn(_) => Hook::Expn,
        }
    }
}

/// What the chain of plugins decided for one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No plugin objected (or one accepted): the host goes on.
    Continue,
    /// A plugin accepted explicitly (skipping the rest); for VRFY/EXPN the host's own answer.
    Accept,
    Refuse(Reply),
    /// Reply, then close the connection.
    Disconnect(Reply),
    /// At data only: accept, but hold the message.
    Quarantine(String),
    /// At data only: accept and drop.
    Discard,
}

/// The data hook's decision with the changes asked for by the plugins that ran.
#[derive(Debug)]
pub struct DataOutcome {
    pub decision: Decision,
    pub changes: Vec<Change>,
}

pub struct PluginSession {
    set: Arc<PluginSet>,
    instances: Vec<Option<Instance>>,
}

/// Why a call failed, and whose fault it was (HOUSE_STYLE: say guest or host).
struct Fault {
    guest: bool,
    why: String,
}

impl PluginSession {
    pub fn wants(&self, hook: Hook) -> bool {
        self.set
            .plugins
            .iter()
            .any(|p| p.hooks & hook_bit(hook) != 0)
    }

    /// Runs the hook through every plugin that wants it, in config order.
    pub async fn run(&mut self, session: &SessionInfo, call: Call<'_>) -> Decision {
        let hook = call.hook();
        for i in 0..self.set.plugins.len() {
            if self.set.plugins[i].hooks & hook_bit(hook) == 0 {
                continue;
            }
            let verdict = self.call(i, session, &call).await;
            let decision = verdict.and_then(|v| validate(v.into()));
            match decision {
                Ok(Decision::Continue) => {}
                Ok(d) => return d,
                Err(fault) => {
                    if let Some(d) = self.fault(i, hook, fault) {
                        return d;
                    }
                }
            }
        }
        Decision::Continue
    }

    /// The data hook: like `run`, collecting the changes of every plugin that ran.
    pub async fn data(
        &mut self,
        session: &SessionInfo,
        sender: &EnvelopeFrom,
        recipients: &[String],
        message: Arc<Vec<u8>>,
    ) -> DataOutcome {
        let mut changes = Vec::new();
        for i in 0..self.set.plugins.len() {
            if self.set.plugins[i].hooks & hook_bit(Hook::Data) == 0 {
                continue;
            }
            let result = self
                .call_data(i, session, sender, recipients, message.clone())
                .await;
            let decision = result.and_then(|r| {
                let d = validate(r.verdict)?;
                validate_changes(&r.changes)?;
                changes.extend(r.changes);
                Ok(d)
            });
            match decision {
                Ok(Decision::Continue) => {}
                Ok(decision) => return DataOutcome { decision, changes },
                Err(fault) => {
                    if let Some(decision) = self.fault(i, Hook::Data, fault) {
                        return DataOutcome { decision, changes };
                    }
                }
            }
        }
        DataOutcome {
            decision: Decision::Continue,
            changes,
        }
    }

    async fn instance(&mut self, i: usize) -> Result<&mut Instance, Fault> {
        if self.instances[i].is_none() {
            let (inst, _) = self
                .set
                .instantiate(&self.set.plugins[i])
                .await
                .map_err(|why| Fault {
                    // A full pool is the host's limit; a failing init is the guest's.
                    guest: !why.contains("pool"),
                    why,
                })?;
            self.instances[i] = Some(inst);
        }
        Ok(self.instances[i].as_mut().expect("just created"))
    }

    async fn call(
        &mut self,
        i: usize,
        session: &SessionInfo,
        call: &Call<'_>,
    ) -> Result<Verdict, Fault> {
        let timeout = self.set.plugins[i].timeout;
        let inst = self.instance(i).await?;
        inst.store.set_epoch_deadline(ticks(timeout));
        let hooks = inst.bindings.wasmtp_plugin_hooks();
        let store = &mut inst.store;
        let work = async {
            match call {
                Call::Connect => hooks.call_on_connect(&mut *store, session).await,
                Call::Helo { name, extended } => {
                    hooks
                        .call_on_helo(&mut *store, session, name, *extended)
                        .await
                }
                Call::Auth {
                    mechanism,
                    user,
                    success,
                } => {
                    hooks
                        .call_on_auth(&mut *store, session, mechanism, user, *success)
                        .await
                }
                Call::Mail { sender } => hooks.call_on_mail(&mut *store, session, sender).await,
                Call::Rcpt {
                    sender,
                    recipient,
                    params,
                    accepted,
                } => {
                    hooks
                        .call_on_rcpt(&mut *store, session, sender, recipient, params, accepted)
                        .await
                }
                Call::Vrfy(arg) => hooks.call_on_vrfy(&mut *store, session, arg).await,
                Call::Expn(arg) => hooks.call_on_expn(&mut *store, session, arg).await,
            }
        };
        let result = tokio::time::timeout(timeout + EPOCH_TICK * 10, work).await;
        inst.store.data_mut().flush_output();
        finish(result, timeout)
    }

    async fn call_data(
        &mut self,
        i: usize,
        session: &SessionInfo,
        sender: &EnvelopeFrom,
        recipients: &[String],
        bytes: Arc<Vec<u8>>,
    ) -> Result<bindings::types::DataResult, Fault> {
        let timeout = self.set.plugins[i].timeout;
        let inst = self.instance(i).await?;
        inst.store.set_epoch_deadline(ticks(timeout));
        let handle = inst
            .store
            .data_mut()
            .table
            .push(message::MessageData { bytes })
            .map_err(|e| Fault {
                guest: false,
                why: e.to_string(),
            })?;
        let borrowed = wasmtime::component::Resource::new_borrow(handle.rep());
        let hooks = inst.bindings.wasmtp_plugin_hooks();
        let work = hooks.call_on_data(&mut inst.store, session, sender, recipients, borrowed);
        let result = tokio::time::timeout(timeout + EPOCH_TICK * 10, work).await;
        let _ = inst.store.data_mut().table.delete(handle);
        inst.store.data_mut().flush_output();
        finish(result, timeout)
    }

    /// Drops the instance, logs and counts the fault, and answers per `on_error`.
    fn fault(&mut self, i: usize, hook: Hook, fault: Fault) -> Option<Decision> {
        let p = &self.set.plugins[i];
        self.instances[i] = None;
        crate::metrics::Metrics::inc(&self.set.metrics.plugin_faults_total);
        let side = if fault.guest { "guest" } else { "host" };
        tracing::error!(plugin = %p.name, ?hook, fault = side, on_error = ?p.on_error, "plugin failed: {}", fault.why);
        match p.on_error {
            OnError::Continue => None,
            OnError::Tempfail => Some(Decision::Refuse(Reply::new(
                451,
                EnhancedCode(4, 3, 0),
                "Temporary local problem, please try again later",
            ))),
            OnError::Reject => Some(Decision::Refuse(Reply::new(
                554,
                EnhancedCode(5, 3, 0),
                "Local policy error",
            ))),
        }
    }
}

fn finish<T>(
    result: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Result<T, Fault> {
    match result {
        Err(_) => Err(Fault {
            guest: true,
            why: format!("no answer within {timeout:?}"),
        }),
        Ok(Err(e)) => {
            let why = match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::Interrupt) => format!("ran past its {timeout:?} deadline"),
                Some(trap) => format!("trapped: {trap}"),
                None => format!("{e:#}"),
            };
            Err(Fault { guest: true, why })
        }
        Ok(Ok(v)) => Ok(v),
    }
}

impl From<Verdict> for DataVerdict {
    fn from(v: Verdict) -> DataVerdict {
        match v {
            Verdict::Continue => DataVerdict::Continue,
            Verdict::Accept => DataVerdict::Accept,
            Verdict::Reject(r) => DataVerdict::Reject(r),
            Verdict::Tempfail(r) => DataVerdict::Tempfail(r),
            Verdict::Disconnect(r) => DataVerdict::Disconnect(r),
        }
    }
}

/// Checks that a reply fits its verdict: reject 5xx with 5.x.y, tempfail 4xx with 4.x.y,
/// disconnect 421 with 4.x.y. Text is kept to one line.
fn validate(v: DataVerdict) -> Result<Decision, Fault> {
    let check =
        |r: bindings::types::Reply, class: u16, exact: Option<u16>| -> Result<Reply, Fault> {
            let bad = |why: String| Fault {
                guest: true,
                why: format!("bad reply {} {} {:?}: {why}", r.code, r.enhanced, r.text),
            };
            if r.code / 100 != class || exact.is_some_and(|c| c != r.code) || r.code % 100 > 59 {
                return Err(bad(format!(
                    "code does not fit the verdict (needs {}xx)",
                    class
                )));
            }
            let parts: Vec<u16> = r
                .enhanced
                .split('.')
                .filter_map(|p| p.parse().ok())
                .collect();
            let [c, s, d] = parts[..] else {
                return Err(bad("enhanced code must be class.subject.detail".into()));
            };
            if c != class || s > 999 || d > 999 {
                return Err(bad(
                    "enhanced code class does not match the reply code".into()
                ));
            }
            let text: String = r
                .text
                .chars()
                .map(|ch| if ch.is_control() { ' ' } else { ch })
                .take(500)
                .collect();
            let text = if text.trim().is_empty() {
                "Refused by policy".to_string()
            } else {
                text
            };
            Ok(Reply::dynamic(r.code, s, d, text))
        };
    Ok(match v {
        DataVerdict::Continue => Decision::Continue,
        DataVerdict::Accept => Decision::Accept,
        DataVerdict::Reject(r) => Decision::Refuse(check(r, 5, None)?),
        DataVerdict::Tempfail(r) => Decision::Refuse(check(r, 4, None)?),
        DataVerdict::Disconnect(r) => Decision::Disconnect(check(r, 4, Some(421))?),
        DataVerdict::Quarantine(reason) => Decision::Quarantine(
            reason
                .chars()
                .filter(|c| !c.is_control())
                .take(500)
                .collect(),
        ),
        DataVerdict::Discard => Decision::Discard,
    })
}

/// Most header octets one plugin may add at once.
const MAX_ADDED_HEADERS: usize = 64 * 1024;

/// Header names are RFC 5322 `ftext`; values one line; recipients valid mailboxes.
fn validate_changes(changes: &[Change]) -> Result<(), Fault> {
    let bad = |why: String| Err(Fault { guest: true, why });
    let mut added = 0;
    for c in changes {
        match c {
            Change::AddHeader(h) => {
                added += h.name.len() + h.value.len() + 4;
                if !is_field_name(&h.name) {
                    return bad(format!("bad header name {:?}", truncate(&h.name)));
                }
                if h.value.contains(['\r', '\n']) {
                    return bad(format!("header {} has a line break", h.name));
                }
            }
            Change::RemoveHeader(name) if !is_field_name(name) => {
                return bad(format!("bad header name {:?}", truncate(name)));
            }
            Change::RemoveHeader(_) => {}
            Change::AddRecipient(r) | Change::RemoveRecipient(r) => {
                if crate::proto::address::parse_mailbox(r).is_err() {
                    return bad(format!("bad recipient {:?}", truncate(r)));
                }
            }
        }
    }
    if added > MAX_ADDED_HEADERS {
        return bad(format!(
            "adds {added} octets of header fields (limit {MAX_ADDED_HEADERS})"
        ));
    }
    Ok(())
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 76
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Where compiled plugins are cached: beside the queue, under the spool directory.
pub fn cache_dir(config: &Config) -> PathBuf {
    config.spool.path.join("plugin-cache")
}
