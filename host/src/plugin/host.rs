//! What a plugin instance's store holds, and the capabilities it imports: log, config, dns,
//! kv, wasi:http. `dns`, `kv` and `http` only where the plugin's `capabilities` grant them
//! (`grants`): a call without the grant is an error (a DNS failure, a denied request or
//! `store`'s `denied` to the guest; a trap for the 0.2.0 `kv`, whose WIT has no error).
//! WASI is linked with nothing granted: no preopened directories, no environment, no
//! sockets; stdout and stderr are captured and go to the log under the plugin's name, like
//! its log calls: rate-limited, one line each, controls made spaces.

use super::bindings::types::Level;
use super::bindings::wasmtp::plugin::{config, dns, kv, log, store, types};
use super::capability::Capability;
use super::fault::NotGranted;
use super::grants::Grants;
use super::kv::{Kv, KvError};
use super::limits::Limits;
use super::meter::{Alive, Meter};
use super::output::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Guest stdout/stderr kept per instance; beyond it writes fail (and a Rust guest traps).
const OUTPUT_CAPACITY: usize = 256 * 1024;
/// Longest log line taken from a guest.
const MAX_LOG: usize = 4096;
/// Log lines a plugin may write per second (all its instances together); a burst of up to
/// `LOG_BURST` is let through first.
const LOG_PER_SECOND: f64 = 20.0;
const LOG_BURST: f64 = 100.0;

/// One plugin's log budget, shared by its instances: a token bucket. The first line over
/// it is reported at once; the lines dropped are counted, and the count reported once the
/// budget allows a line again.
pub struct LogBudget {
    state: Mutex<(f64, Instant, u64)>,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            state: Mutex::new((LOG_BURST, Instant::now(), 0)),
        }
    }
}

/// What the budget says of one line.
enum Budget {
    /// Write it, after saying how many were dropped before it (when any were).
    Write { dropped: u64 },
    /// Drop it; `first`: the first of a run of drops.
    Drop { first: bool },
}

impl LogBudget {
    fn take(&self) -> Budget {
        let mut s = self.state.lock().expect("log budget lock");
        let (tokens, last, dropped) = &mut *s;
        let now = Instant::now();
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * LOG_PER_SECOND).min(LOG_BURST);
        *last = now;
        if *tokens < 1.0 {
            *dropped += 1;
            return Budget::Drop {
                first: *dropped == 1,
            };
        }
        *tokens -= 1.0;
        Budget::Write {
            dropped: std::mem::take(dropped),
        }
    }
}

/// What one plugin's instances share, set at load.
pub struct PluginShared {
    pub name: Arc<str>,
    pub config_json: Arc<str>,
    pub grants: Grants,
    pub on_error: crate::config::OnError,
    pub log: LogBudget,
    pub meter: Arc<Meter>,
}

pub struct HostState {
    pub shared: Arc<PluginShared>,
    pub table: ResourceTable,
    pub limits: Limits,
    /// Counted in `wasmtp_plugin_instances` while the store lives.
    _alive: Alive,
    /// When the call in progress must end (the epoch callback traps past it).
    pub deadline: Instant,
    /// The `edit` calls of the hook in progress; `None` between hooks.
    pub(super) edit: Option<super::edits::Scope>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    http_hooks: super::http::Hooks,
    stdout: Output,
    stderr: Output,
}

impl HostState {
    pub fn new(shared: Arc<PluginShared>, memory: usize) -> HostState {
        let stdout = Output::new(OUTPUT_CAPACITY);
        let stderr = Output::new(OUTPUT_CAPACITY);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let http_hooks = super::http::Hooks {
            grant: shared.grants.http(),
            deadline: Instant::now(),
            meter: shared.meter.clone(),
        };
        HostState {
            _alive: shared.meter.instance(),
            shared,
            table: ResourceTable::new(),
            deadline: Instant::now(),
            edit: None,
            limits: Limits::new(memory),
            wasi,
            http: WasiHttpCtx::new(),
            http_hooks,
            stdout,
            stderr,
        }
    }

    /// Sends what the guest printed since last time to the log.
    pub fn flush_output(&mut self) {
        for (pipe, stream) in [(&self.stdout, "stdout"), (&self.stderr, "stderr")] {
            let written = pipe.take();
            if written.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(&written);
            for line in text.lines().filter(|l| !l.is_empty()) {
                self.shared.write_log(Level::Info, stream, line);
            }
        }
    }
}

impl PluginShared {
    /// Writes one line from the guest, within its budget: at most `MAX_LOG` characters,
    /// controls (a newline would forge a log line of ours) as spaces.
    fn write_log(&self, level: Level, stream: &str, message: &str) {
        let name = &*self.name;
        let dropped = match self.log.take() {
            Budget::Write { dropped } => dropped,
            Budget::Drop { first } => {
                if first {
                    tracing::warn!(
                        plugin = name,
                        per_second = LOG_PER_SECOND,
                        "plugin log lines dropped over its budget from here"
                    );
                }
                return;
            }
        };
        if dropped > 0 {
            tracing::warn!(
                plugin = name,
                dropped,
                "plugin log lines dropped over its budget"
            );
        }
        let msg: String = message
            .chars()
            .take(MAX_LOG)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        match level {
            Level::Trace => tracing::trace!(plugin = name, stream, "{msg}"),
            Level::Debug => tracing::debug!(plugin = name, stream, "{msg}"),
            Level::Info => tracing::info!(plugin = name, stream, "{msg}"),
            Level::Warn => tracing::warn!(plugin = name, stream, "{msg}"),
            Level::Error => tracing::error!(plugin = name, stream, "{msg}"),
        }
    }

    /// The store for the 0.2.0 `kv` interface: not granted, a trap (a `capability`
    /// fault).
    fn kv(&self) -> wasmtime::Result<Kv> {
        self.grants.kv().cloned().ok_or_else(|| {
            wasmtime::Error::new(NotGranted {
                plugin: self.name.clone(),
                capability: Capability::Kv,
            })
        })
    }

    /// Awaits a host call of `capability`, timed in `wasmtp_plugin_host_call_seconds`.
    async fn timed<T>(&self, capability: Capability, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.meter.host_call(capability, started.elapsed());
        out
    }

    /// What a failed 0.2.0 `kv` call does: over the quota, the write is dropped and
    /// reported within the log budget (that WIT cannot tell the guest); a backend down
    /// traps the hook (its `on_error` answers).
    fn kv_failed(&self, e: KvError) -> wasmtime::Result<Option<i64>> {
        match e {
            KvError::OverQuota(exceeded, value) => {
                self.quota_reached(&exceeded);
                Ok(value)
            }
            KvError::Down(_) => Err(wasmtime::Error::msg(e.to_string())),
        }
    }

    /// A write refused over the quota, reported within the log budget: the operator is
    /// told whether or not the plugin says anything.
    fn quota_reached(&self, exceeded: &super::kv::QuotaExceeded) {
        if let Budget::Write { .. } = self.log.take() {
            tracing::warn!(plugin = %self.name, "kv write dropped: {exceeded}");
        }
    }

    /// What `store` tells the guest of a failed call.
    fn store_error(&self, e: KvError) -> store::KvError {
        match e {
            KvError::OverQuota(exceeded, _) => {
                self.quota_reached(&exceeded);
                store::KvError::OverQuota
            }
            KvError::Down(why) => store::KvError::BackendDown(why),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // A request made now ends by the deadline of the call in progress.
        self.http_hooks.deadline = self.deadline;
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.shared.write_log(level, "log", &message);
        Ok(())
    }
}

impl config::Host for HostState {
    fn get_json(&mut self) -> wasmtime::Result<String> {
        Ok(self.shared.config_json.to_string())
    }

    fn on_error(&mut self) -> wasmtime::Result<config::FaultAnswer> {
        use crate::config::OnError;
        Ok(match self.shared.on_error {
            OnError::Tempfail => config::FaultAnswer::Tempfail,
            OnError::Continue => config::FaultAnswer::Continue,
            OnError::Reject => config::FaultAnswer::Reject,
        })
    }
}

fn ttl(seconds: Option<u64>) -> Option<Duration> {
    seconds.map(Duration::from_secs)
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let shared = self.shared.clone();
        let kv = shared.kv()?;
        match shared
            .timed(Capability::Kv, kv.get(&shared.name, &key))
            .await
        {
            Ok(v) => Ok(v),
            Err(e) => shared.kv_failed(e).map(|_| None),
        }
    }
    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u64>,
    ) -> wasmtime::Result<()> {
        let shared = self.shared.clone();
        let kv = shared.kv()?;
        let set = kv.set(&shared.name, &key, value, ttl(ttl_seconds));
        match shared.timed(Capability::Kv, set).await {
            Ok(()) => Ok(()),
            Err(e) => shared.kv_failed(e).map(|_| ()),
        }
    }
    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_seconds: Option<u64>,
    ) -> wasmtime::Result<i64> {
        let shared = self.shared.clone();
        let kv = shared.kv()?;
        let increment = kv.increment(&shared.name, &key, delta, ttl(ttl_seconds));
        match shared.timed(Capability::Kv, increment).await {
            Ok(n) => Ok(n),
            Err(e) => shared.kv_failed(e).map(|n| n.unwrap_or(delta)),
        }
    }
    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        let shared = self.shared.clone();
        let kv = shared.kv()?;
        match shared
            .timed(Capability::Kv, kv.delete(&shared.name, &key))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => shared.kv_failed(e).map(|_| ()),
        }
    }
}

type Stored<T> = wasmtime::Result<Result<T, store::KvError>>;

impl HostState {
    /// The plugin's name and store for `store`; `denied` without the grant (counted as
    /// a `capability` fault).
    fn store(&self) -> Result<(Arc<PluginShared>, Kv), store::KvError> {
        let Some(kv) = self.shared.grants.kv().cloned() else {
            self.shared.meter.refused();
            return Err(store::KvError::Denied);
        };
        Ok((self.shared.clone(), kv))
    }
}

impl store::Host for HostState {
    async fn get(&mut self, key: String) -> Stored<Option<Vec<u8>>> {
        let s = self.store();
        Ok(async {
            let (shared, kv) = s?;
            shared
                .timed(Capability::Kv, kv.get(&shared.name, &key))
                .await
                .map_err(|e| shared.store_error(e))
        }
        .await)
    }
    async fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: Option<u64>) -> Stored<()> {
        let s = self.store();
        Ok(async {
            let (shared, kv) = s?;
            shared
                .timed(
                    Capability::Kv,
                    kv.set(&shared.name, &key, value, ttl(ttl_seconds)),
                )
                .await
                .map_err(|e| shared.store_error(e))
        }
        .await)
    }
    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_seconds: Option<u64>,
    ) -> Stored<i64> {
        let s = self.store();
        Ok(async {
            let (shared, kv) = s?;
            shared
                .timed(
                    Capability::Kv,
                    kv.increment(&shared.name, &key, delta, ttl(ttl_seconds)),
                )
                .await
                .map_err(|e| shared.store_error(e))
        }
        .await)
    }
    async fn delete(&mut self, key: String) -> Stored<()> {
        let s = self.store();
        Ok(async {
            let (shared, kv) = s?;
            shared
                .timed(Capability::Kv, kv.delete(&shared.name, &key))
                .await
                .map_err(|e| shared.store_error(e))
        }
        .await)
    }
}

fn dns_error(e: crate::dns::DnsError) -> dns::DnsError {
    match e {
        crate::dns::DnsError::NotFound => dns::DnsError::Nxdomain,
        crate::dns::DnsError::Timeout => dns::DnsError::Timeout,
        crate::dns::DnsError::Failure(m) => dns::DnsError::Failure(m),
    }
}

fn ips(v: Vec<std::net::IpAddr>) -> Vec<String> {
    v.into_iter().map(|ip| ip.to_string()).collect()
}

impl PluginShared {
    /// `call` on the resolver, timed; the error a plugin sees without a resolver or
    /// without the grant (then counted as a `capability` fault).
    async fn lookup<T>(
        self: Arc<Self>,
        call: impl AsyncFnOnce(crate::dns::Dns) -> Result<T, dns::DnsError>,
    ) -> Lookup<T> {
        let shared = self;
        let dns = match shared.grants.resolver() {
            Ok(dns) => dns,
            Err(e) => {
                if !shared.grants.has(Capability::Dns) {
                    shared.meter.refused();
                }
                return Ok(Err(dns::DnsError::Failure(e.into())));
            }
        };
        Ok(shared.timed(Capability::Dns, call(dns)).await)
    }
}

fn parse_ip(ip: &str) -> Result<std::net::IpAddr, dns::DnsError> {
    ip.parse()
        .map_err(|_| dns::DnsError::Failure(format!("{ip:?} is not an IP address")))
}

type Lookup<T> = wasmtime::Result<Result<T, dns::DnsError>>;

impl dns::Host for HostState {
    async fn lookup_a(&mut self, name: String) -> Lookup<Vec<String>> {
        self.shared
            .clone()
            .lookup(async |r| Ok(ips(r.a(&name).await.map_err(dns_error)?)))
            .await
    }
    async fn lookup_aaaa(&mut self, name: String) -> Lookup<Vec<String>> {
        self.shared
            .clone()
            .lookup(async |r| Ok(ips(r.aaaa(&name).await.map_err(dns_error)?)))
            .await
    }
    async fn lookup_mx(&mut self, name: String) -> Lookup<Vec<dns::Mx>> {
        self.shared
            .clone()
            .lookup(async |r| {
                let mx = r.mx(&name).await.map_err(dns_error)?;
                Ok(mx
                    .into_iter()
                    .map(|(preference, exchange)| dns::Mx {
                        preference,
                        exchange,
                    })
                    .collect())
            })
            .await
    }
    async fn lookup_txt(&mut self, name: String) -> Lookup<Vec<String>> {
        self.shared
            .clone()
            .lookup(async |r| r.txt(&name).await.map_err(dns_error))
            .await
    }
    async fn lookup_ptr(&mut self, ip: String) -> Lookup<Vec<String>> {
        self.shared
            .clone()
            .lookup(async |r| r.ptr(parse_ip(&ip)?).await.map_err(dns_error))
            .await
    }
    async fn dnsbl(&mut self, ip: String, zone: String) -> Lookup<Vec<String>> {
        self.shared
            .clone()
            .lookup(async |r| {
                let found = r.dnsbl(parse_ip(&ip)?, &zone).await;
                Ok(ips(found.map_err(dns_error)?))
            })
            .await
    }
}
