//! The TOML configuration of SPEC.md: serde structs with `deny_unknown_fields` and named
//! defaults, then one `validate()` pass that reports every problem with its key path.
//! Pure data and checks: what the config names outside itself (TLS files, plugins) is
//! loaded at start-up by `crate::resources`.

mod auth;
mod delivery;
mod kv;
mod plugin;
mod values;
pub use auth::{ArcSeal, Authentication, Dkim};
pub use delivery::Delivery;
pub use kv::{Kv, KvBackend};
pub use plugin::{OnError, Plugin, PluginMode};
pub use values::{Dur, Network, Size, Target};

use crate::proto::Mailbox;
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The embedded default (`wasmtp serve` with no file and no `./wasmtp.toml`).
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_hostname")]
    pub hostname: String,
    #[serde(default)]
    pub listen: Vec<Listen>,
    pub tls: Option<Tls>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub accept: Accept,
    #[serde(default)]
    pub relay: Relay,
    #[serde(default)]
    pub user: Vec<User>,
    #[serde(default)]
    pub route: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub authentication: Authentication,
    #[serde(default)]
    pub dkim: Vec<Dkim>,
    pub arc: Option<ArcSeal>,
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub kv: Kv,
    #[serde(default)]
    pub plugin: Vec<Plugin>,
}

fn default_hostname() -> String {
    "localhost".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub address: SocketAddr,
    #[serde(default)]
    pub mode: Mode,
    /// A PROXY protocol header (HAProxy's v1 or v2) comes first and names the client.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The peers that may send it (`proxy_from()`: loopback when unset).
    #[serde(default)]
    pub proxy_from: Option<Vec<Network>>,
}

impl Listen {
    /// With `proxy_protocol`, the peers that may send the header.
    pub fn proxy(&self) -> Option<Vec<Network>> {
        let loopback = || {
            ["127.0.0.0/8", "::1/128"]
                .map(|n| Network(n.parse().expect("a network")))
                .to_vec()
        };
        self.proxy_protocol
            .then(|| self.proxy_from.clone().unwrap_or_else(loopback))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Port 25 style: accepts mail for `accept.domains`, STARTTLS when `[tls]` is set.
    #[default]
    Mx,
    /// Port 587 (RFC 6409): STARTTLS, then AUTH; authenticated users may relay.
    Submission,
    /// Port 465 (RFC 8314): implicit TLS, then AUTH.
    Submissions,
    /// Port 366 (RFC 2645): STARTTLS, AUTH, then ATRN turns the connection around and the
    /// mail queued for the user's `atrn_domains` is delivered over it. Takes no mail.
    Odmr,
}

impl Mode {
    /// As configured (`mx`, `submission`, `submissions`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Mx => "mx",
            Mode::Submission => "submission",
            Mode::Submissions => "submissions",
            Mode::Odmr => "odmr",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Advertised as SIZE and enforced.
    pub message_size: Size,
    /// Per transaction; more get 452 4.5.3.
    pub recipients: usize,
    pub connections: usize,
    /// Open connections per client address (IPv6 per /64); 421 4.7.0 beyond.
    pub connections_per_ip: usize,
    /// For each command, and for each write to a client that does not read.
    pub command_timeout: Dur,
    pub data_timeout: Dur,
    /// More `Received:` fields than this and the message is refused as looping (RFC 5321
    /// 6.3; Postfix's hopcount_limit).
    pub hop_limit: usize,
    /// Error replies (4xx and 5xx, plugin refusals included) after which each further one
    /// is delayed by `error_delay` times the excess (Postfix's smtpd_soft_error_limit).
    pub soft_error_limit: u32,
    pub error_delay: Dur,
    /// Error replies after which the client is dropped with 421 (smtpd_hard_error_limit).
    pub error_limit: u32,
    /// Failed AUTH attempts per connection before it is closed with 421.
    pub auth_failures: u32,
    /// After SIGTERM, how long transactions in flight may take to finish.
    pub shutdown_grace: Dur,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_size: Size(25 << 20),
            recipients: 100,
            connections: 1000,
            connections_per_ip: 20,
            command_timeout: Dur(Duration::from_secs(300)),
            data_timeout: Dur(Duration::from_secs(600)),
            hop_limit: 50,
            soft_error_limit: 5,
            error_delay: Dur(Duration::from_secs(1)),
            error_limit: 20,
            auth_failures: 3,
            shutdown_grace: Dur(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    #[serde(default = "SpoolConfig::default_path")]
    pub path: PathBuf,
    /// Below this much free space on the spool's filesystem, new mail gets 452 4.3.1.
    #[serde(default = "SpoolConfig::default_min_free")]
    pub min_free: Size,
    /// The spool's log starts a new segment past this size; segments are reclaimed whole.
    #[serde(default = "SpoolConfig::default_segment_size")]
    pub segment_size: Size,
}

impl SpoolConfig {
    fn default_path() -> PathBuf {
        PathBuf::from("data/spool")
    }
    fn default_min_free() -> Size {
        Size(100 << 20)
    }
    fn default_segment_size() -> Size {
        Size(64 << 20)
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            path: Self::default_path(),
            min_free: Self::default_min_free(),
            segment_size: Self::default_segment_size(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    #[serde(default)]
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relay {
    #[serde(default)]
    pub networks: Vec<Network>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    /// What this user may send as after AUTH: addresses, or `@domain` for a whole domain.
    /// Default: the name where it is an address, else the name at each `accept.domains`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Domains whose queued mail (routed `to = "odmr"`) this user may collect with ATRN.
    #[serde(default)]
    pub atrn_domains: Vec<String>,
}

impl User {
    /// May this user send with `sender` as MAIL FROM? (Postfix's
    /// reject_sender_login_mismatch, with the default above.)
    pub fn owns(&self, sender: &Mailbox, accept: &Accept) -> bool {
        let address = sender.to_string();
        if !self.addresses.is_empty() {
            return self.addresses.iter().any(|a| match a.strip_prefix('@') {
                Some(domain) => domain.eq_ignore_ascii_case(&sender.domain),
                None => a.eq_ignore_ascii_case(&address),
            });
        }
        if crate::proto::address::parse_mailbox(&self.name).is_ok() {
            return self.name.eq_ignore_ascii_case(&address);
        }
        sender.local_unquoted().eq_ignore_ascii_case(&self.name)
            && accept
                .domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&sender.domain))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub domain: String,
    #[serde(default)]
    pub to: Target,
    #[serde(default)]
    pub tls: TlsPolicy,
    /// With `tls = "required"`: trust anchors (PEM) for this route instead of the system's.
    pub ca: Option<PathBuf>,
}

impl Route {
    /// Does delivery by this route verify certificates, so that its `ca` is used:
    /// `tls = "required"`, or an MX route while MTA-STS (`delivery.mta_sts`) is on?
    pub fn verifies(&self, mta_sts: bool) -> bool {
        self.tls == TlsPolicy::Required || (mta_sts && self.to == Target::Mx)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    None,
    /// Use STARTTLS when offered, without certificate checks (RFC 7435).
    #[default]
    Opportunistic,
    /// Refuse to send in the clear (Postfix's "encrypt" level).
    Required,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
    /// DNSSEC validation and DANE (RFC 7672) for MX delivery: not built yet, so only
    /// `false` (the default) is taken; `true` is refused by `check-config` rather than
    /// silently ignored.
    #[serde(default)]
    pub dnssec: bool,
    /// The DNSSEC trust anchor (DNSKEY records); with `dnssec` only.
    #[serde(default)]
    pub trust_anchor: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub address: SocketAddr,
}

/// Every problem found in a config, each with its key path.
#[derive(Debug)]
pub struct ConfigError {
    pub source: String,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [only] = self.problems.as_slice() {
            return writeln!(f, "{}: {only}", self.source);
        }
        writeln!(f, "{}: {} problems", self.source, self.problems.len())?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads `--config FILE`, else `./wasmtp.toml`, else the embedded default, and
    /// validates it.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (source, config) = Config::read(path)?;
        config.checked(&source)
    }

    /// Reads and deserializes the config without `validate()`; returns it with the name of
    /// its source (the file, or "embedded default").
    pub fn read(path: Option<&Path>) -> Result<(String, Config), ConfigError> {
        let (source, text) = match path {
            Some(p) => (p.display().to_string(), read(p)?),
            None if Path::new("wasmtp.toml").exists() => {
                ("wasmtp.toml".to_string(), read(Path::new("wasmtp.toml"))?)
            }
            None => ("embedded default".to_string(), EMBEDDED_DEFAULT.to_string()),
        };
        let config = Config::deserialize(&source, &text)?;
        Ok((source, config))
    }

    /// Deserializes and validates `text`; `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Config, ConfigError> {
        Config::deserialize(source, text)?.checked(source)
    }

    fn checked(self, source: &str) -> Result<Config, ConfigError> {
        let problems = self.validate();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(ConfigError {
                source: source.to_string(),
                problems,
            })
        }
    }

    fn deserialize(source: &str, text: &str) -> Result<Config, ConfigError> {
        // serde_path_to_error names the key (`route[0].to`); toml adds line and column.
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let detail = e
                .into_inner()
                .to_string()
                .trim_end()
                .replace('\n', "\n    ");
            ConfigError {
                source: source.to_string(),
                problems: vec![if path == "." {
                    detail
                } else {
                    format!("{path}: {detail}")
                }],
            }
        })?;
        Ok(config)
    }

    /// Checks what serde cannot: cross-field rules, names, hashes. Returns every problem.
    /// Reads no file: `check-config` adds what loading the TLS files and plugins finds.
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !crate::proto::address::is_domain(&self.hostname) {
            p.push(format!(
                "hostname: {:?} is not a domain name",
                self.hostname
            ));
        }
        if self.listen.is_empty() {
            p.push("listen: at least one [[listen]] is required".into());
        }
        for (i, l) in self.listen.iter().enumerate() {
            if l.proxy_from.is_some() && !l.proxy_protocol {
                p.push(format!(
                    "listen[{i}].proxy_from: set without proxy_protocol = true (no header is read)"
                ));
            }
            if l.mode != Mode::Mx && self.tls.is_none() {
                p.push(format!(
                    "listen[{i}].mode: {:?} needs [tls] (AUTH is only offered under TLS)",
                    l.mode.as_str()
                ));
            }
        }
        if self.limits.message_size.0 == 0 {
            p.push("limits.message_size: must be greater than 0".into());
        }
        if self.limits.recipients == 0 {
            p.push("limits.recipients: must be at least 1".into());
        }
        if self.limits.message_size.0 >= u32::MAX as u64 {
            p.push("limits.message_size: must be less than 4GiB".into());
        }
        if self.spool.segment_size.0 < 64 << 10 {
            p.push("spool.segment_size: must be at least 64KiB".into());
        }
        for (key, n) in [
            ("connections", self.limits.connections),
            ("connections_per_ip", self.limits.connections_per_ip),
            ("error_limit", self.limits.error_limit as usize),
            ("auth_failures", self.limits.auth_failures as usize),
        ] {
            if n == 0 {
                p.push(format!("limits.{key}: must be at least 1"));
            }
        }
        for (i, d) in self.accept.domains.iter().enumerate() {
            if !crate::proto::address::is_domain(d) {
                p.push(format!("accept.domains[{i}]: {d:?} is not a domain name"));
            }
        }
        for (i, u) in self.user.iter().enumerate() {
            if u.name.is_empty() {
                p.push(format!("user[{i}].name: must not be empty"));
            }
            for (j, a) in u.addresses.iter().enumerate() {
                let ok = match a.strip_prefix('@') {
                    Some(domain) => crate::proto::address::is_domain(domain),
                    None => crate::proto::address::parse_mailbox(a).is_ok(),
                };
                if !ok {
                    p.push(format!(
                        "user[{i}].addresses[{j}]: {a:?} is neither an address nor @domain"
                    ));
                }
            }
            for (j, d) in u.atrn_domains.iter().enumerate() {
                if !crate::proto::address::is_domain(d) {
                    p.push(format!(
                        "user[{i}].atrn_domains[{j}]: {d:?} is not a domain name"
                    ));
                } else if self.route_for(d).to != Target::Odmr {
                    p.push(format!(
                        "user[{i}].atrn_domains[{j}]: {d:?} is not routed to \"odmr\" (no mail would wait for ATRN)"
                    ));
                }
            }
            if let Err(e) = argon2::PasswordHash::new(&u.password_hash) {
                p.push(format!(
                    "user[{i}].password_hash: not a PHC hash ({e}); use `wasmtp hash-password`"
                ));
            }
        }
        for (i, r) in self.route.iter().enumerate() {
            if r.domain != "*" && !crate::proto::address::is_domain(&r.domain) {
                p.push(format!(
                    "route[{i}].domain: {:?} is not a domain or \"*\"",
                    r.domain
                ));
            }
            if r.ca.is_some() && !r.verifies(self.delivery.mta_sts) {
                p.push(format!(
                    "route[{i}].ca: only used with tls = \"required\", or by MX routes for MTA-STS (opportunistic TLS does not verify)"
                ));
            }
        }
        if self.dns.dnssec || self.dns.trust_anchor.is_some() {
            let key = if self.dns.dnssec {
                "dnssec"
            } else {
                "trust_anchor"
            };
            p.push(format!(
                "dns.{key}: DNSSEC validation and DANE are not available in this version; MX delivery is protected by MTA-STS (delivery.mta_sts)"
            ));
        }
        self.delivery.validate(&mut p);
        self.kv.validate(&mut p);
        auth::validate(self, &mut p);
        plugin::validate(&self.plugin, &mut p);
        p
    }

    /// The route for a recipient domain: first match wins, `*` matches all; default MX.
    pub fn route_for(&self, domain: &str) -> Route {
        self.route
            .iter()
            .find(|r| r.domain == "*" || r.domain.eq_ignore_ascii_case(domain))
            .cloned()
            .unwrap_or_else(|| Route {
                domain: "*".into(),
                to: Target::Mx,
                tls: TlsPolicy::default(),
                ca: None,
            })
    }

    /// Is `sender` one of the addresses the authenticated `user` may send as?
    pub fn user_owns(&self, user: &str, sender: &Mailbox) -> bool {
        self.user
            .iter()
            .find(|u| u.name == user)
            .is_some_and(|u| u.owns(sender, &self.accept))
    }

    /// May the authenticated `user` collect `domain`'s mail with ATRN (RFC 2645)?
    pub fn atrn_allowed(&self, user: &str, domain: &str) -> bool {
        let listed = self.user.iter().find(|u| u.name == user).is_some_and(|u| {
            u.atrn_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
        });
        listed && self.route_for(domain).to == Target::Odmr
    }

    pub fn accepts_domain(&self, domain: &str) -> bool {
        self.accept
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }

    pub fn relay_allowed(&self, ip: IpAddr) -> bool {
        self.relay.networks.iter().any(|n| n.contains(ip))
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        source: path.display().to_string(),
        problems: vec![format!("cannot read: {e}")],
    })
}

#[cfg(test)]
mod tests;
