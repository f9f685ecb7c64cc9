//! SPF's check_host() (RFC 7208 4-6): records parsed strictly to RFC 7208 12's grammar
//! (`record`), macros expanded (`macros`), every lookup on our resolver within the check's
//! budget, and the limits of 4.6.4. Checked against the openspf RFC 7208 test suite
//! (tests/spf_suite.rs).

mod macros;
mod record;

use super::cache::TxtCache;
use super::{AuthStatus, SpfCheck, absolute};
use crate::dns::{Dns, DnsError};
use macros::{MacroString, Values};
use record::{Cidr, Mechanism, Qualifier};

use record::Record;
use record::is_spf1;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

/// Terms that cause DNS queries, per check (RFC 7208 4.6.4).
const MAX_LOOKUPS: u32 = 10;
/// Lookups that find nothing, per check (RFC 7208 4.6.4).
const MAX_VOID: u32 = 2;
/// MX names, and PTR names, looked at per mechanism (RFC 7208 4.6.4).
const MAX_NAMES: usize = 10;

/// Why evaluation stopped before a result.
enum Abort {
    Temp(String),
    Perm(String),
}

/// What one record evaluates to: a qualifier that matched, the default (neutral), or no
/// record at all.
enum Outcome {
    Matched(Qualifier),
    Neutral,
    NoRecord,
}

/// SPF checks: our resolver, the records it found, parsed, for their TTL, our name
/// (`%{r}`), and how long one check may take.
pub(super) struct Spf {
    dns: Dns,
    records: TxtCache<Arc<Record>>,
    hostname: String,
    timeout: std::time::Duration,
}

/// One check_host() run: its identity, and counters.
struct Check<'a> {
    spf: &'a Spf,
    ip: IpAddr,
    sender: &'a str,
    helo: &'a str,
    lookups: u32,
    voids: u32,
    /// The client's names that resolve back to it (`%{p}`), once asked for.
    validated: Option<Vec<String>>,
    /// The record whose `exp=` explains a fail: the checked domain's, or the one a
    /// `redirect=` led to (never an `include:`d one, RFC 7208 6.2).
    explains: Option<(Arc<Record>, String)>,
}

impl Spf {
    pub(super) fn new(
        dns: Dns,
        records: TxtCache<Arc<Record>>,
        hostname: &str,
        timeout: std::time::Duration,
    ) -> Spf {
        Spf {
            dns,
            records,
            hostname: hostname.to_string(),
            timeout,
        }
    }

    /// check_host(ip, domain, sender) with the HELO name `helo`; `sender` is the MAIL
    /// FROM address, or `postmaster@helo` for the HELO identity and the null sender.
    pub(super) async fn check_host(
        &self,
        ip: IpAddr,
        domain: &str,
        sender: &str,
        helo: &str,
    ) -> SpfCheck {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        // An IPv4 client on a dual-stack listener is an IPv4 client (::ffff:a.b.c.d).
        let ip = ip.to_canonical();
        // RFC 7208 4.3: a malformed domain, or one that is not fully qualified (an address
        // literal as HELO, say), is "none": not checked.
        if !super::is_dns_name(&domain) || !domain.contains('.') {
            return SpfCheck::none();
        }
        let mut check = Check {
            spf: self,
            ip,
            sender,
            helo,
            lookups: 0,
            voids: 0,
            validated: None,
            explains: None,
        };
        // The evaluation and a fail's explanation within the one timeout.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let run = check.evaluate(domain.clone(), true);
        let (status, explanation) = match tokio::time::timeout_at(deadline, run).await {
            Err(_) => (AuthStatus::Temperror, None),
            Ok(Err(Abort::Temp(why))) => {
                tracing::debug!(%domain, %why, "spf temperror");
                (AuthStatus::Temperror, None)
            }
            Ok(Err(Abort::Perm(why))) => {
                tracing::debug!(%domain, %why, "spf permerror");
                (AuthStatus::Permerror, None)
            }
            Ok(Ok(Outcome::NoRecord)) => (AuthStatus::None, None),
            Ok(Ok(Outcome::Neutral)) => (AuthStatus::Neutral, None),
            Ok(Ok(Outcome::Matched(q))) => match q {
                Qualifier::Pass => (AuthStatus::Pass, None),
                Qualifier::Fail => {
                    let explain = check.explanation();
                    let explanation = tokio::time::timeout_at(deadline, explain)
                        .await
                        .ok()
                        .flatten();
                    (AuthStatus::Fail, explanation)
                }
                Qualifier::SoftFail => (AuthStatus::Softfail, None),
                Qualifier::Neutral => (AuthStatus::Neutral, None),
            },
        };
        SpfCheck {
            status,
            domain,
            explanation,
        }
    }
}

/// A DNS failure (not "nothing found") of a lookup the check needs: temperror.
fn temp(e: DnsError) -> Abort {
    match e {
        DnsError::NotFound => Abort::Temp("not found".into()),
        DnsError::Timeout => Abort::Temp("DNS timeout".into()),
        DnsError::Failure(why) => Abort::Temp(why),
    }
}

impl Check<'_> {
    fn count_lookup(&mut self) -> Result<(), Abort> {
        self.lookups += 1;
        if self.lookups > MAX_LOOKUPS {
            return Err(Abort::Perm(format!("more than {MAX_LOOKUPS} DNS lookups")));
        }
        Ok(())
    }

    fn count_void(&mut self) -> Result<(), Abort> {
        self.voids += 1;
        if self.voids > MAX_VOID {
            return Err(Abort::Perm(format!("more than {MAX_VOID} void lookups")));
        }
        Ok(())
    }

    /// A DNS error of a mechanism's lookup: nothing found is a void lookup (counted) and
    /// no match (RFC 7208 4.6.4, 5); a failure ends the check with temperror.
    fn dns_failure(&mut self, e: DnsError) -> Result<bool, Abort> {
        match e {
            DnsError::NotFound => self.count_void().map(|()| false),
            e => Err(temp(e)),
        }
    }

    /// The domain's SPF record: exactly one `v=spf1` TXT record (RFC 7208 4.5), parsed,
    /// from the cache when it has it.
    async fn record(&mut self, domain: &str) -> Result<Option<Arc<Record>>, Abort> {
        let name = absolute(domain);
        if let Some(record) = self.spf.records.get(&name) {
            return Ok(Some(record));
        }
        let answer = match self.spf.dns.txt_records(&name).await {
            Ok(answer) => answer,
            Err(DnsError::NotFound) => return Ok(None),
            Err(e) => return Err(temp(e)),
        };
        let mut spf = answer.records.iter().filter(|r| is_spf1(r));
        let record = match (spf.next(), spf.next()) {
            (None, _) => return Ok(None),
            (Some(record), None) => record,
            (Some(_), Some(_)) => {
                return Err(Abort::Perm(format!("{domain}: more than one SPF record")));
            }
        };
        let parsed =
            Record::parse(record).map_err(|e| Abort::Perm(format!("{domain}: bad record: {e}")))?;
        let parsed = Arc::new(parsed);
        self.spf
            .records
            .insert(name, parsed.clone(), answer.valid_until, record.len());
        Ok(Some(parsed))
    }

    /// The values macros expand from, for a record of `domain`; `%{p}` looked up first
    /// when `m` asks for it.
    async fn expand(&mut self, m: &MacroString, domain: &str) -> String {
        let validated = if m.uses_validated() {
            Some(self.validated_name(domain).await)
        } else {
            None
        };
        m.expand(&Values {
            sender: self.sender,
            domain,
            ip: self.ip,
            helo: self.helo,
            receiver: &self.spf.hostname,
            validated: validated.as_deref(),
        })
    }

    /// A domain-spec after macro expansion: a name too long loses labels on the left
    /// (RFC 7208 4.8); `Err` when what is left cannot be a DNS name.
    async fn target(&mut self, m: &MacroString, domain: &str) -> Result<String, Abort> {
        let mut name = self.expand(m, domain).await;
        while name.trim_end_matches('.').len() > 253 {
            match name.split_once('.') {
                Some((_, rest)) => name = rest.to_string(),
                None => break,
            }
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let labels_ok = name.split('.').all(|l| (1..=63).contains(&l.len()));
        if name.is_empty() || name.len() > 253 || !labels_ok {
            return Err(Abort::Perm(format!("{name:?} is not a domain name")));
        }
        Ok(name)
    }

    /// `%{p}` (RFC 7208 7.3, 5.5): of the client's PTR names that resolve back to it,
    /// `domain` itself, else one under it, else any; "unknown" when there is none.
    async fn validated_name(&mut self, domain: &str) -> String {
        if self.validated.is_none() {
            let mut found = Vec::new();
            if let Ok(names) = self.spf.dns.ptr(self.ip).await {
                for name in names.iter().take(MAX_NAMES) {
                    let name = name.trim_end_matches('.').to_ascii_lowercase();
                    if let Ok(a) = self.addresses(&name).await
                        && a.contains(&self.ip)
                    {
                        found.push(name);
                    }
                }
            }
            self.validated = Some(found);
        }
        let names = self.validated.as_deref().unwrap_or_default();
        let under = |n: &&String| n.ends_with(&format!(".{domain}"));
        names
            .iter()
            .find(|n| *n == domain)
            .or_else(|| names.iter().find(under))
            .or_else(|| names.first())
            .cloned()
            .unwrap_or_else(|| "unknown".into())
    }

    /// Evaluates `domain`'s record; `explains`: its exp= would explain a fail.
    fn evaluate(
        &mut self,
        domain: String,
        explains: bool,
    ) -> Pin<Box<dyn Future<Output = Result<Outcome, Abort>> + Send + '_>> {
        Box::pin(async move {
            let Some(record) = self.record(&domain).await? else {
                return Ok(Outcome::NoRecord);
            };
            if explains {
                self.explains = Some((record.clone(), domain.clone()));
            }
            for directive in &record.directives {
                if self.matches(&directive.mechanism, &domain).await? {
                    return Ok(Outcome::Matched(directive.qualifier));
                }
            }
            if let Some(redirect) = &record.redirect {
                self.count_lookup()?;
                let target = self.target(redirect, &domain).await?;
                // The redirect's record explains in place of this one; inside an include
                // neither does (RFC 7208 6.2).
                return match self.evaluate(target.clone(), explains).await? {
                    // RFC 7208 6.1: a redirect to a domain without a record is permerror.
                    Outcome::NoRecord => Err(Abort::Perm(format!(
                        "redirect to {target}, which has no SPF"
                    ))),
                    outcome => Ok(outcome),
                };
            }
            Ok(Outcome::Neutral)
        })
    }

    /// The target of `a`, `mx` and `ptr`: the domain-spec expanded, or the current domain.
    async fn target_or(&mut self, m: &Option<MacroString>, domain: &str) -> Result<String, Abort> {
        match m {
            Some(m) => self.target(m, domain).await,
            None => Ok(domain.to_string()),
        }
    }

    async fn matches(&mut self, mechanism: &Mechanism, domain: &str) -> Result<bool, Abort> {
        match mechanism {
            Mechanism::All => Ok(true),
            Mechanism::Ip4(addr, len) => Ok(in_network(self.ip, (*addr).into(), *len)),
            Mechanism::Ip6(addr, len) => Ok(in_network(self.ip, (*addr).into(), *len)),
            Mechanism::Include(spec) => {
                self.count_lookup()?;
                let target = self.target(spec, domain).await?;
                // RFC 7208 5.2: pass matches; fail, softfail, neutral do not; no record
                // is permerror; errors carry through.
                match self.evaluate(target.clone(), false).await? {
                    Outcome::Matched(Qualifier::Pass) => Ok(true),
                    Outcome::Matched(_) | Outcome::Neutral => Ok(false),
                    Outcome::NoRecord => Err(Abort::Perm(format!(
                        "include of {target}, which has no SPF"
                    ))),
                }
            }
            Mechanism::A(spec, cidr) => {
                self.count_lookup()?;
                let target = self.target_or(spec, domain).await?;
                match self.addresses(&target).await {
                    Ok(addresses) => Ok(self.any_in(&addresses, *cidr)),
                    Err(e) => self.dns_failure(e),
                }
            }
            Mechanism::Mx(spec, cidr) => {
                self.count_lookup()?;
                let target = self.target_or(spec, domain).await?;
                let exchanges = match self.spf.dns.mx(&absolute(&target)).await {
                    Ok(mx) => mx,
                    Err(e) => return self.dns_failure(e),
                };
                if exchanges.len() > MAX_NAMES {
                    return Err(Abort::Perm(format!("{target}: more than {MAX_NAMES} MX")));
                }
                for (_, exchange) in exchanges {
                    match self.addresses(&exchange).await {
                        Ok(a) if self.any_in(&a, *cidr) => return Ok(true),
                        Ok(_) | Err(DnsError::NotFound) => {}
                        Err(e) => return Err(temp(e)),
                    }
                }
                Ok(false)
            }
            Mechanism::Ptr(spec) => {
                self.count_lookup()?;
                let target = self.target_or(spec, domain).await?;
                // RFC 7208 5.5: lookup errors here only mean no match.
                let Ok(names) = self.spf.dns.ptr(self.ip).await else {
                    return Ok(false);
                };
                for name in names.iter().take(MAX_NAMES) {
                    let name = name.trim_end_matches('.').to_ascii_lowercase();
                    let related = name == target || name.ends_with(&format!(".{target}"));
                    if related
                        && let Ok(a) = self.addresses(&name).await
                        && a.contains(&self.ip)
                    {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Mechanism::Exists(spec) => {
                self.count_lookup()?;
                let target = self.target(spec, domain).await?;
                // RFC 7208 5.7: an A query, whatever the client's address family.
                match self.spf.dns.a(&absolute(&target)).await {
                    Ok(a) => Ok(!a.is_empty()),
                    Err(e) => self.dns_failure(e),
                }
            }
        }
    }

    /// The addresses of `name` in the client's family (A for IPv4, AAAA for IPv6).
    async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let name = absolute(name);
        match self.ip {
            IpAddr::V4(_) => self.spf.dns.a(&name).await,
            IpAddr::V6(_) => self.spf.dns.aaaa(&name).await,
        }
    }

    fn any_in(&self, addresses: &[IpAddr], cidr: Cidr) -> bool {
        addresses.iter().any(|&a| match a {
            IpAddr::V4(_) => in_network(self.ip, a, cidr.v4),
            IpAddr::V6(_) => in_network(self.ip, a, cidr.v6),
        })
    }

    /// The explanation of a fail (RFC 7208 6.2): the TXT record named by `exp=`, expanded;
    /// nothing when anything about it goes wrong.
    async fn explanation(&mut self) -> Option<String> {
        let (record, domain) = self.explains.clone()?;
        let name = self.target(record.exp.as_ref()?, &domain).await.ok()?;
        let answer = self.spf.dns.txt_records(&absolute(&name)).await.ok()?;
        let [text] = answer.records.as_slice() else {
            return None;
        };
        let text = MacroString::parse(std::str::from_utf8(text).ok()?, true).ok()?;
        let explained = self.expand(&text, &domain).await;
        let clean: String = explained.chars().take(512).collect();
        (!clean.is_empty()).then_some(clean)
    }
}

/// Is `ip` in `network`/`len` (0: every address of the family, RFC 7208 5.6)?
fn in_network(ip: IpAddr, network: IpAddr, len: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("192.0.2.9"), ip("192.0.2.0"), 24));
        assert!(!in_network(ip("192.0.3.9"), ip("192.0.2.0"), 24));
        assert!(in_network(ip("198.51.100.1"), ip("0.0.0.0"), 0));
        assert!(in_network(ip("2001:db8::1"), ip("::"), 0));
        assert!(!in_network(ip("2001:db8::1"), ip("0.0.0.0"), 0));
        assert!(in_network(ip("192.0.2.9"), ip("192.0.2.9"), 32));
    }
}
