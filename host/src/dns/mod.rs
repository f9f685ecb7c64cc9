//! The server's resolver (hickory), honouring `[dns] nameservers`. Used by sender
//! verification, plugins' `dns` capability and MX delivery. Lookups are sent again while
//! unanswered and a dead resolver fails them at once (`health`); answers, "no such name"
//! ones too, are cached for their TTL (RFC 2308: negative answers for their SOA's
//! minimum), at most `MAX_NEGATIVE_TTL` for those.

mod health;

use health::Health;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::ServerOrderingStrategy;
use hickory_resolver::config::{NameServerConfig, ProtocolConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::proto::{NoRecords, ProtoError, ProtoErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Negative answers are kept for their SOA's minimum, at most this: a name made since is
/// seen within it.
const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(15 * 60);

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist, or has no records of that type.
    #[error("not found")]
    NotFound,
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Failure(String),
}

impl From<ProtoError> for DnsError {
    fn from(e: ProtoError) -> DnsError {
        match e.kind() {
            // hickory reports SERVFAIL and REFUSED as "no records" too, with that code:
            // only NXDOMAIN and an empty NOERROR answer mean there is nothing (a failed
            // lookup must defer mail, never bounce it).
            ProtoErrorKind::NoRecordsFound(NoRecords { response_code, .. }) => match *response_code
            {
                ResponseCode::NXDomain | ResponseCode::NoError => DnsError::NotFound,
                code => DnsError::Failure(format!("server answered {code}")),
            },
            ProtoErrorKind::Timeout => DnsError::Timeout,
            _ => DnsError::Failure(e.to_string()),
        }
    }
}

/// The system's resolver configuration could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("system resolver: {0}")]
pub struct ResolverError(#[from] ProtoError);

pub struct TxtAnswer {
    pub records: Vec<Vec<u8>>,
    pub valid_until: std::time::Instant,
}

#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    health: Arc<Health>,
}

/// Asks the root's NS records: any answer says the resolver is there.
#[derive(Clone)]
struct RootProbe(TokioResolver);

impl health::Probe for RootProbe {
    async fn ask(&self) -> Result<(), DnsError> {
        self.0.lookup(Name::root(), RecordType::NS).await?;
        Ok(())
    }
}

impl Dns {
    /// The configured nameservers (UDP and TCP each), or the system's resolv.conf.
    pub fn new(nameservers: &[SocketAddr]) -> Result<Dns, ResolverError> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio()?
        } else {
            let mut config = ResolverConfig::default();
            for &ns in nameservers {
                config.add_name_server(NameServerConfig::new(ns, ProtocolConfig::Udp));
                config.add_name_server(NameServerConfig::new(ns, ProtocolConfig::Tcp));
            }
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        };
        let opts = builder.options_mut();
        // One try per attempt, as long as a lookup may take: `health` sends it again.
        opts.timeout = health::LOOKUP_LIMIT;
        opts.attempts = 0;
        opts.server_ordering_strategy = ServerOrderingStrategy::RoundRobin;
        opts.negative_max_ttl = Some(MAX_NEGATIVE_TTL);
        Ok(Dns {
            resolver: builder.build(),
            health: Arc::default(),
        })
    }

    /// Is the resolver taken for dead (lookups failing at once until it answers)?
    pub fn is_dead(&self) -> bool {
        self.health.is_dead()
    }

    /// `lookup`, sent again while unanswered, or at once a timeout when the resolver is
    /// dead.
    async fn ask<T, F, Fut>(&self, lookup: F) -> Result<T, DnsError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, DnsError>>,
    {
        health::lookup(&self.health, &RootProbe(self.resolver.clone()), lookup).await
    }

    /// The resolver itself, for libraries that take one (mail-auth).
    pub fn resolver(&self) -> TokioResolver {
        self.resolver.clone()
    }

    pub async fn a(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let name = query_name(name)?;
        let l = self
            .ask(|| async { Ok(self.resolver.ipv4_lookup(name.clone()).await?) })
            .await?;
        Ok(l.iter().map(|a| IpAddr::V4(a.0)).collect())
    }

    pub async fn aaaa(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let name = query_name(name)?;
        let l = self
            .ask(|| async { Ok(self.resolver.ipv6_lookup(name.clone()).await?) })
            .await?;
        Ok(l.iter().map(|a| IpAddr::V6(a.0)).collect())
    }

    /// A and AAAA records together; `NotFound` when the name has neither, another error
    /// when there are none and a lookup failed.
    pub async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let (a, aaaa) = tokio::join!(self.a(name), self.aaaa(name));
        let mut all = Vec::new();
        let mut failure = None;
        for found in [a, aaaa] {
            match found {
                Ok(ips) => all.extend(ips),
                Err(DnsError::NotFound) => {}
                Err(e) => failure = Some(e),
            }
        }
        match (all.is_empty(), failure) {
            (false, _) => Ok(all),
            (true, Some(e)) => Err(e),
            (true, None) => Err(DnsError::NotFound),
        }
    }

    /// MX records sorted by preference (RFC 5321 5.1).
    pub async fn mx(&self, name: &str) -> Result<Vec<(u16, String)>, DnsError> {
        let name = query_name(name)?;
        let l = self
            .ask(|| async { Ok(self.resolver.mx_lookup(name.clone()).await?) })
            .await?;
        let mut v: Vec<(u16, String)> = l
            .iter()
            .map(|mx| (mx.preference(), name_text(mx.exchange())))
            .collect();
        v.sort();
        Ok(v)
    }

    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let answer = self.txt_records(name).await?;
        Ok(answer
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect())
    }

    /// TXT records as octets, each record's strings joined (RFC 7208 3.3), and until when
    /// the answer may be kept.
    pub async fn txt_records(&self, name: &str) -> Result<TxtAnswer, DnsError> {
        let name = query_name(name)?;
        let l = self
            .ask(|| async { Ok(self.resolver.txt_lookup(name.clone()).await?) })
            .await?;
        Ok(TxtAnswer {
            records: l.iter().map(|t| t.txt_data().concat()).collect(),
            valid_until: l.valid_until(),
        })
    }

    pub async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, DnsError> {
        let l = self
            .ask(|| async { Ok(self.resolver.reverse_lookup(ip).await?) })
            .await?;
        Ok(l.iter().map(|p| name_text(&p.0)).collect())
    }

    /// The A records of `ip` reversed under `zone` (RFC 5782 2.1, 2.4); empty when not listed.
    pub async fn dnsbl(&self, ip: IpAddr, zone: &str) -> Result<Vec<IpAddr>, DnsError> {
        match self.a(&dnsbl_name(ip, zone)).await {
            Err(DnsError::NotFound) => Ok(Vec::new()),
            other => other,
        }
    }
}

/// `name` as asked for: an ASCII name label by label as it is (RFC 2181 11: any octets,
/// which an SPF macro may put there, `%` or `:` say), an internationalized one in its
/// A-label form (IDNA); absolute when it ends with a dot.
fn query_name(name: &str) -> Result<Name, DnsError> {
    let bad = |e: ProtoError| DnsError::Failure(format!("{name:?}: {e}"));
    if !name.is_ascii() {
        return Name::from_utf8(name).map_err(bad);
    }
    let relative = name.strip_suffix('.').unwrap_or(name);
    if relative.is_empty() {
        return Ok(Name::root());
    }
    let mut parsed = Name::from_labels(relative.split('.').map(str::as_bytes)).map_err(bad)?;
    parsed.set_fqdn(name.ends_with('.'));
    Ok(parsed)
}

/// A name from an answer as text, without its final dot: its labels as they are (an
/// A-label stays one), so that `query_name` asks for the same name again.
fn name_text(name: &Name) -> String {
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    labels.join(".")
}

/// `1.2.0.192.zone.` for 192.0.2.1; IPv6 by reversed nibbles.
pub fn dnsbl_name(ip: IpAddr, zone: &str) -> String {
    let zone = zone.trim_end_matches('.');
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.{zone}.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let nibbles: Vec<String> = v6
                .octets()
                .iter()
                .rev()
                .flat_map(|b| [b & 0xF, b >> 4])
                .map(|n| format!("{n:x}"))
                .collect();
            format!("{}.{zone}.", nibbles.join("."))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsbl_names() {
        assert_eq!(
            dnsbl_name("192.0.2.1".parse().unwrap(), "bl.test"),
            "1.2.0.192.bl.test."
        );
        let v6 = dnsbl_name("2001:db8::1".parse().unwrap(), "bl.test.");
        assert!(
            v6.starts_with("1.0.0.0.0.0.0.0") && v6.ends_with("8.b.d.0.1.0.0.2.bl.test."),
            "{v6}"
        );
    }
}
