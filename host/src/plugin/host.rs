//! What a plugin instance's store holds, and the capabilities it imports: log, config, dns,
//! kv. WASI is linked with nothing granted: no preopened directories, no environment, no
//! sockets; stdout and stderr are captured and go to the log under the plugin's name.

use super::bindings::types::Level;
use super::bindings::wasmtp::plugin::{config, dns, kv, log, types};
use super::kv::KvStore;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Guest stdout/stderr kept per instance; beyond it writes fail (and a Rust guest traps).
const OUTPUT_CAPACITY: usize = 256 * 1024;
/// Longest log line taken from a guest.
const MAX_LOG: usize = 4096;

pub struct HostState {
    pub name: Arc<str>,
    pub config_json: Arc<str>,
    pub kv: Arc<dyn KvStore>,
    pub dns: Option<crate::dns::Dns>,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    wasi: WasiCtx,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    logged: (usize, usize),
}

impl HostState {
    pub fn new(
        name: Arc<str>,
        config_json: Arc<str>,
        kv: Arc<dyn KvStore>,
        dns: Option<crate::dns::Dns>,
        memory: usize,
    ) -> HostState {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState {
            name,
            config_json,
            kv,
            dns,
            table: ResourceTable::new(),
            limits: wasmtime::StoreLimitsBuilder::new()
                .memory_size(memory)
                .instances(64)
                .tables(64)
                .memories(16)
                .trap_on_grow_failure(true)
                .build(),
            wasi,
            stdout,
            stderr,
            logged: (0, 0),
        }
    }

    /// Sends what the guest printed since last time to the log.
    pub fn flush_output(&mut self) {
        for (pipe, seen, stream) in [
            (&self.stdout, &mut self.logged.0, "stdout"),
            (&self.stderr, &mut self.logged.1, "stderr"),
        ] {
            let all = pipe.contents();
            if all.len() > *seen {
                for line in String::from_utf8_lossy(&all[*seen..])
                    .lines()
                    .filter(|l| !l.is_empty())
                {
                    tracing::info!(plugin = %self.name, stream, "{}", truncate(line));
                }
                *seen = all.len();
            }
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(MAX_LOG) {
        Some((i, _)) => &s[..i],
        None => s,
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

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let (name, msg) = (&*self.name, truncate(&message));
        match level {
            Level::Trace => tracing::trace!(plugin = name, "{msg}"),
            Level::Debug => tracing::debug!(plugin = name, "{msg}"),
            Level::Info => tracing::info!(plugin = name, "{msg}"),
            Level::Warn => tracing::warn!(plugin = name, "{msg}"),
            Level::Error => tracing::error!(plugin = name, "{msg}"),
        }
        Ok(())
    }
}

impl config::Host for HostState {
    fn get_json(&mut self) -> wasmtime::Result<String> {
        Ok(self.config_json.to_string())
    }
}

fn ttl(seconds: Option<u64>) -> Option<Duration> {
    seconds.map(Duration::from_secs)
}

impl kv::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.kv.get(&self.name, &key))
    }
    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u64>,
    ) -> wasmtime::Result<()> {
        self.kv.set(&self.name, &key, value, ttl(ttl_seconds));
        Ok(())
    }
    fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_seconds: Option<u64>,
    ) -> wasmtime::Result<i64> {
        Ok(self.kv.increment(&self.name, &key, delta, ttl(ttl_seconds)))
    }
    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.kv.delete(&self.name, &key);
        Ok(())
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

impl HostState {
    /// The resolver (a cheap clone), or the error a plugin sees without one.
    fn resolver(&self) -> Result<crate::dns::Dns, dns::DnsError> {
        self.dns
            .clone()
            .ok_or_else(|| dns::DnsError::Failure("no resolver configured".into()))
    }
}

fn parse_ip(ip: &str) -> Result<std::net::IpAddr, dns::DnsError> {
    ip.parse()
        .map_err(|_| dns::DnsError::Failure(format!("{ip:?} is not an IP address")))
}

type Lookup<T> = wasmtime::Result<Result<T, dns::DnsError>>;

impl dns::Host for HostState {
    async fn lookup_a(&mut self, name: String) -> Lookup<Vec<String>> {
        let r = self.resolver();
        Ok(async { Ok(ips(r?.a(&name).await.map_err(dns_error)?)) }.await)
    }
    async fn lookup_aaaa(&mut self, name: String) -> Lookup<Vec<String>> {
        let r = self.resolver();
        Ok(async { Ok(ips(r?.aaaa(&name).await.map_err(dns_error)?)) }.await)
    }
    async fn lookup_mx(&mut self, name: String) -> Lookup<Vec<dns::Mx>> {
        let r = self.resolver();
        Ok(async {
            let mx = r?.mx(&name).await.map_err(dns_error)?;
            Ok(mx
                .into_iter()
                .map(|(preference, exchange)| dns::Mx {
                    preference,
                    exchange,
                })
                .collect())
        }
        .await)
    }
    async fn lookup_txt(&mut self, name: String) -> Lookup<Vec<String>> {
        let r = self.resolver();
        Ok(async { r?.txt(&name).await.map_err(dns_error) }.await)
    }
    async fn lookup_ptr(&mut self, ip: String) -> Lookup<Vec<String>> {
        let r = self.resolver();
        Ok(async { r?.ptr(parse_ip(&ip)?).await.map_err(dns_error) }.await)
    }
    async fn dnsbl(&mut self, ip: String, zone: String) -> Lookup<Vec<String>> {
        let r = self.resolver();
        Ok(async {
            Ok(ips(r?
                .dnsbl(parse_ip(&ip)?, &zone)
                .await
                .map_err(dns_error)?))
        }
        .await)
    }
}
