//! The TOML configuration of SPEC.md: serde structs with `deny_unknown_fields` and named
//! defaults, then one `validate()` pass that reports every problem with its key path.

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
    pub metrics: Option<Metrics>,
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "Limits::default_message_size")]
    pub message_size: Size,
    #[serde(default = "Limits::default_recipients")]
    pub recipients: usize,
    #[serde(default = "Limits::default_connections")]
    pub connections: usize,
    #[serde(default = "Limits::default_command_timeout")]
    pub command_timeout: Dur,
    #[serde(default = "Limits::default_data_timeout")]
    pub data_timeout: Dur,
}

impl Limits {
    fn default_message_size() -> Size {
        Size(25 << 20)
    }
    fn default_recipients() -> usize {
        100
    }
    fn default_connections() -> usize {
        1000
    }
    fn default_command_timeout() -> Dur {
        Dur(Duration::from_secs(300))
    }
    fn default_data_timeout() -> Dur {
        Dur(Duration::from_secs(600))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_size: Self::default_message_size(),
            recipients: Self::default_recipients(),
            connections: Self::default_connections(),
            command_timeout: Self::default_command_timeout(),
            data_timeout: Self::default_data_timeout(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    #[serde(default = "SpoolConfig::default_path")]
    pub path: PathBuf,
}

impl SpoolConfig {
    fn default_path() -> PathBuf {
        PathBuf::from("data/spool")
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            path: Self::default_path(),
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub domain: String,
    #[serde(default)]
    pub to: Target,
    #[serde(default)]
    pub tls: TlsPolicy,
}

/// Where a route sends mail.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Target {
    /// MX lookup of the recipient domain (RFC 5321 5.1).
    #[default]
    Mx,
    Smtp(String, u16),
    Lmtp(String, u16),
    Maildir(PathBuf),
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let host_port = |rest: &str| -> Result<(String, u16), String> {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: expected HOST:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("{s:?}: bad port {port:?}"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("{s:?}: empty host"));
            }
            Ok((host.to_string(), port))
        };
        if s == "mx" {
            Ok(Target::Mx)
        } else if let Some(rest) = s.strip_prefix("smtp:") {
            host_port(rest).map(|(h, p)| Target::Smtp(h, p))
        } else if let Some(rest) = s.strip_prefix("lmtp:") {
            host_port(rest).map(|(h, p)| Target::Lmtp(h, p))
        } else if let Some(path) = s.strip_prefix("maildir:") {
            if path.is_empty() {
                return Err("maildir: needs a path".into());
            }
            Ok(Target::Maildir(PathBuf::from(path)))
        } else {
            Err(format!(
                "{s:?}: expected \"mx\", \"smtp:HOST:PORT\", \"lmtp:HOST:PORT\" or \"maildir:PATH\""
            ))
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    #[serde(default = "Delivery::default_smtp_port")]
    pub smtp_port: u16,
    #[serde(default = "Delivery::default_retry")]
    pub retry: Vec<Dur>,
    #[serde(default = "Delivery::default_max_age")]
    pub max_age: Dur,
    #[serde(default = "Delivery::default_delay_warning")]
    pub delay_warning: Dur,
    /// Deliveries in flight at once (beyond SPEC.md).
    #[serde(default = "Delivery::default_concurrency")]
    pub concurrency: usize,
}

impl Delivery {
    fn default_smtp_port() -> u16 {
        25
    }
    fn default_retry() -> Vec<Dur> {
        [60, 300, 900, 3600, 14400]
            .into_iter()
            .map(|s| Dur(Duration::from_secs(s)))
            .collect()
    }
    fn default_max_age() -> Dur {
        Dur(Duration::from_secs(5 * 86400))
    }
    fn default_delay_warning() -> Dur {
        Dur(Duration::from_secs(4 * 3600))
    }
    fn default_concurrency() -> usize {
        64
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            smtp_port: Self::default_smtp_port(),
            retry: Self::default_retry(),
            max_age: Self::default_max_age(),
            delay_warning: Self::default_delay_warning(),
            concurrency: Self::default_concurrency(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub address: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default = "Plugin::default_timeout")]
    pub timeout: Dur,
    #[serde(default = "Plugin::default_memory")]
    pub memory: Size,
    #[serde(default)]
    pub config: toml::Table,
}

impl Plugin {
    fn default_timeout() -> Dur {
        Dur(Duration::from_millis(200))
    }
    fn default_memory() -> Size {
        Size(64 << 20)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    #[default]
    Tempfail,
    Continue,
    Reject,
}

/// A byte size: `"25MiB"`, `"10KiB"`, `"1GiB"` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "toml::Value")]
pub struct Size(pub u64);

impl TryFrom<toml::Value> for Size {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) if n >= 0 => Ok(Size(n as u64)),
            toml::Value::String(s) => parse_size(&s).map(Size),
            other => Err(format!("expected a size such as \"10MiB\", got {other}")),
        }
    }
}

pub use wasmtp_sdk::parse_size;

/// A duration: `"30s"`, `"5m"`, `"1h"`, `"5d"`, `"200ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Dur(pub Duration);

impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        wasmtp_sdk::parse_duration(&s).map(Dur)
    }
}

/// A client network in CIDR form (`"10.0.0.0/8"`) or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Network(pub ipnet::IpNet);

impl TryFrom<String> for Network {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(Network(net));
        }
        s.parse::<IpAddr>()
            .map(|ip| Network(ipnet::IpNet::from(ip)))
            .map_err(|_| format!("{s:?}: expected a network such as \"192.0.2.0/24\""))
    }
}

impl Network {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client over an IPv6 socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
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
    /// Reads `--config FILE`, else `./wasmtp.toml`, else the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (source, text) = match path {
            Some(p) => (p.display().to_string(), read(p)?),
            None if Path::new("wasmtp.toml").exists() => {
                ("wasmtp.toml".to_string(), read(Path::new("wasmtp.toml"))?)
            }
            None => ("embedded default".to_string(), EMBEDDED_DEFAULT.to_string()),
        };
        Config::parse(&source, &text)
    }

    pub fn parse(source: &str, text: &str) -> Result<Config, ConfigError> {
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
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError {
                source: source.to_string(),
                problems,
            })
        }
    }

    /// Checks what serde cannot: cross-field rules, files, hashes. Returns every problem.
    fn validate(&self) -> Vec<String> {
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
            if l.mode != Mode::Mx && self.tls.is_none() {
                p.push(format!(
                    "listen[{i}].mode: {:?} needs [tls] (AUTH is only offered under TLS)",
                    l.mode
                ));
            }
        }
        if let Some(tls) = &self.tls
            && let Err(e) = crate::tls::load_server_config(tls)
        {
            p.push(format!("tls: {e}"));
        }
        if self.limits.message_size.0 == 0 {
            p.push("limits.message_size: must be greater than 0".into());
        }
        if self.limits.recipients == 0 {
            p.push("limits.recipients: must be at least 1".into());
        }
        if self.limits.connections == 0 {
            p.push("limits.connections: must be at least 1".into());
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
        }
        if self.delivery.retry.is_empty() {
            p.push("delivery.retry: needs at least one interval".into());
        }
        if self.delivery.concurrency == 0 {
            p.push("delivery.concurrency: must be at least 1".into());
        }
        for (i, pl) in self.plugin.iter().enumerate() {
            if self.plugin[..i].iter().any(|o| o.name == pl.name) {
                p.push(format!("plugin[{i}].name: {:?} is used twice", pl.name));
            }
            if let Err(e) = crate::plugin::read_wasm(&pl.path) {
                p.push(format!("plugin[{i}].path: {e}"));
            }
        }
        p
    }

    /// The route for a recipient domain: first match wins, `*` matches all; default MX.
    pub fn route_for(&self, domain: &str) -> (Target, TlsPolicy) {
        self.route
            .iter()
            .find(|r| r.domain == "*" || r.domain.eq_ignore_ascii_case(domain))
            .map(|r| (r.to.clone(), r.tls))
            .unwrap_or_default()
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
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::parse("embedded", EMBEDDED_DEFAULT).unwrap();
        assert_eq!(c.listen[0].address.to_string(), "127.0.0.1:2525");
        assert!(c.accepts_domain("LOCALHOST"));
        assert!(matches!(c.route_for("localhost").0, Target::Maildir(_)));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10KiB"), Ok(10240));
        assert_eq!(parse_size("25MiB"), Ok(25 << 20));
        assert!(parse_size("10 parsecs").is_err());
        assert_eq!(
            Dur::try_from("5m".to_string()).unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(
            Dur::try_from("200ms".to_string()).unwrap().0,
            Duration::from_millis(200)
        );
        assert!(Dur::try_from("5y".to_string()).is_err());
    }

    #[test]
    fn unknown_keys_and_every_problem() {
        let e = Config::parse("t", "hostname = \"a\"\nbogus = 1\n").unwrap_err();
        assert!(e.problems[0].contains("bogus"), "{e}");
        let e = Config::parse(
            "t",
            r#"
hostname = "bad host"
[limits]
recipients = 0
[accept]
domains = ["ok.test", "not a domain"]
[[user]]
name = "a"
password_hash = "plain"
"#,
        )
        .unwrap_err();
        let all = e.problems.join("\n");
        for key in [
            "hostname",
            "listen",
            "limits.recipients",
            "accept.domains[1]",
            "user[0].password_hash",
        ] {
            assert!(all.contains(key), "{key} missing from {all}");
        }
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::try_from("smtp:127.0.0.1:2526".to_string()),
            Ok(Target::Smtp("127.0.0.1".into(), 2526))
        );
        assert_eq!(
            Target::try_from("lmtp:[::1]:24".to_string()),
            Ok(Target::Lmtp("::1".into(), 24))
        );
        assert!(Target::try_from("smtp:host".to_string()).is_err());
        assert!(Target::try_from("ftp:x".to_string()).is_err());
    }

    #[test]
    fn networks() {
        let n = Network::try_from("127.0.0.0/8".to_string()).unwrap();
        assert!(n.contains("127.0.0.5".parse().unwrap()));
        assert!(n.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!n.contains("10.0.0.1".parse().unwrap()));
    }
}
