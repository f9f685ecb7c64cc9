//! Value types of the config that parse from strings: sizes, durations, networks and
//! route targets. Their errors become serde errors, which name the key.

use serde::Deserialize;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;
pub use wasmtp_units::{parse_duration, parse_size};

/// Where a route sends mail.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub enum Target {
    /// MX lookup of the recipient domain (RFC 5321 5.1).
    #[default]
    Mx,
    Smtp(String, u16),
    Lmtp(String, u16),
    Maildir(PathBuf),
    /// Kept until the domain's owner collects it with ATRN (RFC 2645).
    Odmr,
}

/// As the config writes it: `mx`, `smtp:HOST:PORT`, `lmtp:HOST:PORT`, `maildir:PATH`,
/// `odmr` (an IPv6 host in brackets).
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = |h: &str| match h.contains(':') {
            true => format!("[{h}]"),
            false => h.to_string(),
        };
        match self {
            Target::Mx => f.write_str("mx"),
            Target::Smtp(h, p) => write!(f, "smtp:{}:{p}", host(h)),
            Target::Lmtp(h, p) => write!(f, "lmtp:{}:{p}", host(h)),
            Target::Maildir(path) => write!(f, "maildir:{}", path.display()),
            Target::Odmr => f.write_str("odmr"),
        }
    }
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
        } else if s == "odmr" {
            Ok(Target::Odmr)
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
                "{s:?}: expected \"mx\", \"smtp:HOST:PORT\", \"lmtp:HOST:PORT\", \"maildir:PATH\" or \"odmr\""
            ))
        }
    }
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
            toml::Value::String(s) => parse_size(&s).map(Size).map_err(|e| e.to_string()),
            other => Err(format!("expected a size such as \"10MiB\", got {other}")),
        }
    }
}

/// A duration: `"30s"`, `"5m"`, `"1h"`, `"5d"`, `"200ms"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Dur(pub Duration);

impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        parse_duration(&s).map(Dur).map_err(|e| e.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("10KiB"), Ok(10240));
        assert_eq!(
            Dur::try_from("5m".to_string()).unwrap().0,
            Duration::from_secs(300)
        );
        assert!(Dur::try_from("5y".to_string()).is_err());
        assert!(Size::try_from(toml::Value::String("10 parsecs".into())).is_err());
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
