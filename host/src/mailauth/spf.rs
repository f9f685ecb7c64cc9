//! SPF's check_host() (RFC 7208 4-6): mail-auth parses the record and expands macros; the
//! lookups, their limits and the result are ours.

use super::verify::Verifier;
use super::{AuthStatus, SpfCheck, absolute, is_dns_name};
use crate::dns::DnsError;
use mail_auth::Txt;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::spf::{Macro, Mechanism, Qualifier, Spf, Variables};
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

/// One check_host() run: its identity, macro variables and counters.
struct Check<'a> {
    verifier: &'a Verifier,
    ip: IpAddr,
    vars: Variables<'static>,
    lookups: u32,
    voids: u32,
    /// The record whose `exp=` explains a fail: the checked domain's, or the one a
    /// `redirect=` led to (never an `include:`d one, RFC 7208 6.2).
    explains: Option<(Arc<Spf>, String)>,
}

impl Verifier {
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
        if !is_dns_name(&domain) || !domain.contains('.') {
            return SpfCheck::none();
        }
        let mut vars = Variables::new();
        vars.set_ip(&ip);
        vars.set_sender(sender.as_bytes().to_vec());
        vars.set_helo_domain(helo.as_bytes().to_vec());
        vars.set_host_domain(self.hostname.as_bytes().to_vec());
        vars.set_validated_domain(b"unknown".to_vec());
        let mut check = Check {
            verifier: self,
            ip,
            vars,
            lookups: 0,
            voids: 0,
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

    /// A DNS error of a mechanism's lookup: nothing found is a void lookup (counted), a
    /// failure ends the check with temperror (RFC 7208 5: "the lookup ... temperror").
    fn dns_failure(&mut self, e: DnsError) -> Result<(), Abort> {
        match e {
            DnsError::NotFound => self.count_void(),
            DnsError::Timeout => Err(Abort::Temp("DNS timeout".into())),
            DnsError::Failure(why) => Err(Abort::Temp(why)),
        }
    }

    /// The domain's SPF record: exactly one `v=spf1` TXT record (RFC 7208 4.5), parsed,
    /// from the cache when it has it.
    async fn record(&mut self, domain: &str) -> Result<Option<Arc<Spf>>, Abort> {
        let name = absolute(domain);
        if let Some(Txt::Spf(spf)) = self.verifier.spf_records.get(&name) {
            return Ok(Some(spf));
        }
        let answer = match self.verifier.dns.txt_records(&name).await {
            Ok(answer) => answer,
            Err(DnsError::NotFound) => return Ok(None),
            Err(DnsError::Timeout) => return Err(Abort::Temp("DNS timeout".into())),
            Err(DnsError::Failure(why)) => return Err(Abort::Temp(why)),
        };
        let mut spf = answer.records.iter().filter(|r| is_spf1(r));
        let (Some(record), None) = (spf.next(), spf.next()) else {
            return match answer.records.iter().filter(|r| is_spf1(r)).count() {
                0 => Ok(None),
                _ => Err(Abort::Perm(format!("{domain}: more than one SPF record"))),
            };
        };
        check_cidr_lengths(record)?;
        let parsed = Arc::new(
            Spf::parse(record).map_err(|e| Abort::Perm(format!("{domain}: bad record: {e}")))?,
        );
        self.verifier.spf_records.insert(
            name,
            Txt::Spf(parsed.clone()),
            answer.valid_until,
            record.len(),
        );
        Ok(Some(parsed))
    }

    /// A domain-spec after macro expansion (RFC 7208 7.3: too long, left labels go).
    fn target(&self, m: &Macro, current: &str) -> Result<String, Abort> {
        let vars = self.vars_for(current);
        let mut name = m
            .eval(&vars, current, false)
            .trim_end_matches('.')
            .to_string();
        while name.len() > 253 {
            match name.split_once('.') {
                Some((_, rest)) => name = rest.to_string(),
                None => break,
            }
        }
        if !is_dns_name(&name) {
            return Err(Abort::Perm(format!("{name:?} is not a domain name")));
        }
        Ok(name.to_ascii_lowercase())
    }

    fn vars_for(&self, domain: &str) -> Variables<'static> {
        let mut vars = self.vars.clone();
        vars.set_domain(domain.as_bytes().to_vec());
        vars
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
                    return Ok(Outcome::Matched(directive.qualifier.clone()));
                }
            }
            if let Some(redirect) = &record.redirect {
                self.count_lookup()?;
                let target = self.target(redirect, &domain)?;
                // The redirect's record explains in place of this one; inside an include
                // neither does (RFC 7208 6.2).
                return match self.evaluate(target.clone(), explains).await? {
                    // RFC 7208 6.1: a redirect to a domain without a record is permerror.
                    Outcome::NoRecord => {
                        self.count_void()?;
                        Err(Abort::Perm(format!(
                            "redirect to {target}, which has no SPF"
                        )))
                    }
                    outcome => Ok(outcome),
                };
            }
            Ok(Outcome::Neutral)
        })
    }

    async fn matches(&mut self, mechanism: &Mechanism, domain: &str) -> Result<bool, Abort> {
        match mechanism {
            Mechanism::All => Ok(true),
            Mechanism::Ip4 { addr, mask } => Ok(match self.ip {
                IpAddr::V4(ip) => u32::from(ip) & mask == u32::from(*addr) & mask,
                IpAddr::V6(_) => false,
            }),
            Mechanism::Ip6 { addr, mask } => Ok(match self.ip {
                IpAddr::V6(ip) => u128::from(ip) & mask == u128::from(*addr) & mask,
                IpAddr::V4(_) => false,
            }),
            Mechanism::Include { macro_string } => {
                self.count_lookup()?;
                let target = self.target(macro_string, domain)?;
                // RFC 7208 5.2: pass matches; fail, softfail, neutral do not; no record
                // is permerror; errors carry through.
                match self.evaluate(target.clone(), false).await? {
                    Outcome::Matched(Qualifier::Pass) => Ok(true),
                    Outcome::Matched(_) | Outcome::Neutral => Ok(false),
                    Outcome::NoRecord => {
                        self.count_void()?;
                        Err(Abort::Perm(format!(
                            "include of {target}, which has no SPF"
                        )))
                    }
                }
            }
            Mechanism::A {
                macro_string,
                ip4_mask,
                ip6_mask,
            } => {
                self.count_lookup()?;
                let target = self.target(macro_string, domain)?;
                match self.addresses(&target).await {
                    Ok(addresses) => Ok(self.in_network(&addresses, *ip4_mask, *ip6_mask)),
                    Err(e) => self.dns_failure(e).map(|_| false),
                }
            }
            Mechanism::Mx {
                macro_string,
                ip4_mask,
                ip6_mask,
            } => {
                self.count_lookup()?;
                let target = self.target(macro_string, domain)?;
                let exchanges = match self.verifier.dns.mx(&absolute(&target)).await {
                    Ok(mx) => mx,
                    Err(e) => return self.dns_failure(e).map(|_| false),
                };
                if exchanges.len() > MAX_NAMES {
                    return Err(Abort::Perm(format!("{target}: more than {MAX_NAMES} MX")));
                }
                for (_, exchange) in exchanges {
                    match self.addresses(&exchange).await {
                        Ok(a) if self.in_network(&a, *ip4_mask, *ip6_mask) => return Ok(true),
                        Ok(_) | Err(DnsError::NotFound) => {}
                        Err(e) => self.dns_failure(e)?,
                    }
                }
                Ok(false)
            }
            Mechanism::Ptr { macro_string } => {
                self.count_lookup()?;
                let target = self.target(macro_string, domain)?;
                // RFC 7208 5.5: lookup errors here only mean no match.
                let Ok(names) = self.verifier.dns.ptr(self.ip).await else {
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
            Mechanism::Exists { macro_string } => {
                self.count_lookup()?;
                let target = self.target(macro_string, domain)?;
                // RFC 7208 5.7: an A query, whatever the client's address family.
                match self.verifier.dns.a(&absolute(&target)).await {
                    Ok(a) => Ok(!a.is_empty()),
                    Err(e) => self.dns_failure(e).map(|_| false),
                }
            }
        }
    }

    /// The addresses of `name` in the client's family (A for IPv4, AAAA for IPv6).
    async fn addresses(&self, name: &str) -> Result<Vec<IpAddr>, DnsError> {
        let name = absolute(name);
        match self.ip {
            IpAddr::V4(_) => self.verifier.dns.a(&name).await,
            IpAddr::V6(_) => self.verifier.dns.aaaa(&name).await,
        }
    }

    fn in_network(&self, addresses: &[IpAddr], ip4_mask: u32, ip6_mask: u128) -> bool {
        addresses.iter().any(|a| match (self.ip, a) {
            (IpAddr::V4(ip), IpAddr::V4(a)) => u32::from(ip) & ip4_mask == u32::from(*a) & ip4_mask,
            (IpAddr::V6(ip), IpAddr::V6(a)) => {
                u128::from(ip) & ip6_mask == u128::from(*a) & ip6_mask
            }
            _ => false,
        })
    }

    /// The explanation of a fail (RFC 7208 6.2): the TXT record named by `exp=`, expanded;
    /// nothing when anything about it goes wrong.
    async fn explanation(&mut self) -> Option<String> {
        let (record, domain) = self.explains.clone()?;
        let name = self.target(record.exp.as_ref()?, &domain).ok()?;
        let answer = self.verifier.dns.txt_records(&absolute(&name)).await.ok()?;
        let [text] = answer.records.as_slice() else {
            return None;
        };
        let text = Macro::parse(text).ok()?;
        let vars = self.vars_for(&domain);
        let explained = text.eval(&vars, "", false);
        let clean: String = explained
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(512)
            .collect();
        (!clean.is_empty()).then_some(clean)
    }
}

/// Is this TXT record an SPF record: `v=spf1` alone or followed by a space (RFC 7208 4.5)?
fn is_spf1(record: &[u8]) -> bool {
    record.len() >= 6
        && record[..6].eq_ignore_ascii_case(b"v=spf1")
        && record.get(6).is_none_or(|&b| b == b' ')
}

/// CIDR lengths of `ip4`, `ip6`, `a` and `mx` terms must be 1-32 (IPv4) and 1-128 (IPv6)
/// here: RFC 7208 allows 0 too, but mail-auth cannot express it (it panics or matches one
/// address instead of all). A zero-length network is a record that lets anyone send, so it
/// is treated as broken: permerror.
fn check_cidr_lengths(record: &[u8]) -> Result<(), Abort> {
    let text = String::from_utf8_lossy(record);
    for term in text.split_ascii_whitespace().skip(1) {
        let name = term.trim_start_matches(['+', '-', '~', '?']);
        let (kind, rest) = match name.split_once([':', '/']) {
            Some((k, _)) => (k.to_ascii_lowercase(), &name[k.len()..]),
            None => (name.to_ascii_lowercase(), ""),
        };
        let v6_only = kind == "ip6";
        if !matches!(kind.as_str(), "ip4" | "ip6" | "a" | "mx") {
            continue;
        }
        // `a:domain/24//64`: the first length is IPv4's (IPv6's for ip6), `//` IPv6's.
        let (v4, v6) = match rest.split_once("//") {
            Some((v4, v6)) => (v4, Some(v6)),
            None if v6_only => ("", rest.rsplit_once('/').map(|(_, l)| l)),
            None => (rest, None),
        };
        let v4 = if v6_only {
            None
        } else {
            v4.rsplit_once('/').map(|(_, l)| l)
        };
        for (len, max) in [(v4, 32u32), (v6, 128)] {
            if let Some(len) = len {
                let ok = len.parse::<u32>().is_ok_and(|n| (1..=max).contains(&n));
                if !ok {
                    return Err(Abort::Perm(format!("{term}: bad CIDR length")));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spf1_records_and_cidr_lengths() {
        assert!(is_spf1(b"v=spf1 -all") && is_spf1(b"V=SPF1") && !is_spf1(b"v=spf10 -all"));
        let ok = |r: &str| check_cidr_lengths(r.as_bytes()).is_ok();
        assert!(ok(
            "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a/24 mx:x.test/24//64 -all"
        ));
        assert!(ok("v=spf1 a:x.test//64 include:y.test/z ~all"));
        for bad in [
            "v=spf1 ip4:0.0.0.0/0",
            "v=spf1 ip6:::/0",
            "v=spf1 a/33",
            "v=spf1 mx//129",
            "v=spf1 ip4:1.2.3.4/x",
        ] {
            assert!(!ok(bad), "{bad}");
        }
    }
}
