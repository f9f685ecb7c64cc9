//! DMARC (RFC 7489): the policy record of the From domain or of its organizational domain
//! (public suffix list), identifier alignment of SPF and DKIM, `sp=` and `pct=`.

use super::cache::TxtCache;
use super::{AuthStatus, DkimCheck, DmarcCheck, DmarcPolicy, SpfCheck, absolute, is_dns_name};
use crate::dns::{Dns, DnsError};
use mail_auth::Txt;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::dmarc::{Alignment, Dmarc, Policy};
use std::sync::Arc;

/// The organizational domain (RFC 7489 3.2): the registrable domain under the public
/// suffix list, or the name itself when it has none (a suffix, or a single label).
pub(super) fn organizational(domain: &str) -> String {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    psl::domain_str(&domain).unwrap_or(&domain).to_string()
}

/// Identifier alignment (RFC 7489 3.1): strict is the same name, relaxed the same
/// organizational domain.
fn aligned(identifier: &str, from: &str, mode: &Alignment) -> bool {
    let (a, b) = (
        identifier.trim_end_matches('.').to_ascii_lowercase(),
        from.trim_end_matches('.').to_ascii_lowercase(),
    );
    match mode {
        Alignment::Strict => a == b,
        Alignment::Relaxed => a == b || organizational(&a) == organizational(&b),
    }
}

fn policy(p: &Policy) -> DmarcPolicy {
    match p {
        Policy::Reject => DmarcPolicy::Reject,
        Policy::Quarantine => DmarcPolicy::Quarantine,
        Policy::None | Policy::Unspecified => DmarcPolicy::None,
    }
}

/// RFC 7489 6.6.4: mail outside `pct=` gets the next lower policy.
fn lower(p: DmarcPolicy) -> DmarcPolicy {
    match p {
        DmarcPolicy::Reject => DmarcPolicy::Quarantine,
        _ => DmarcPolicy::None,
    }
}

/// DMARC records by domain, as looked up for one message.
pub(super) type Records = std::collections::HashMap<String, Lookup>;

#[derive(Clone)]
pub(super) enum Lookup {
    Found(Arc<Dmarc>),
    Nothing,
    /// More than one DMARC record: discovery ends with no policy (RFC 7489 6.6.3).
    Several,
    Broken(String),
    Failed,
}

/// Finds DMARC policies: our resolver, and the records it found, parsed, for their TTL.
pub(super) struct Policies {
    dns: Dns,
    records: TxtCache,
}

impl Policies {
    pub(super) fn new(dns: Dns, records: TxtCache) -> Policies {
        Policies { dns, records }
    }

    /// `_dmarc.DOMAIN`: the one `v=DMARC1` record (RFC 7489 6.6.3: none when there are
    /// several), parsed, from the cache when it has it.
    async fn dmarc_record(&self, domain: &str) -> Lookup {
        let name = absolute(&format!("_dmarc.{domain}"));
        if let Some(Txt::Dmarc(d)) = self.records.get(&name) {
            return Lookup::Found(d);
        }
        let answer = match self.dns.txt_records(&name).await {
            Ok(answer) => answer,
            Err(DnsError::NotFound) => return Lookup::Nothing,
            Err(_) => return Lookup::Failed,
        };
        let is_dmarc = |r: &&Vec<u8>| r.len() >= 8 && r[..8].eq_ignore_ascii_case(b"v=DMARC1");
        let mut records = answer.records.iter().filter(is_dmarc);
        let record = match (records.next(), records.next()) {
            (Some(record), None) => record,
            (None, _) => return Lookup::Nothing,
            (Some(_), Some(_)) => return Lookup::Several,
        };
        match Dmarc::parse(record) {
            Ok(d) => {
                let d = Arc::new(d);
                self.records.insert(
                    name,
                    Txt::Dmarc(d.clone()),
                    answer.valid_until,
                    record.len(),
                );
                Lookup::Found(d)
            }
            Err(e) => Lookup::Broken(e.to_string()),
        }
    }

    /// The DMARC records of the From domains and of their organizational domains, looked
    /// up at once (beside the key lookups), each answer that came by `deadline`: `dmarc`
    /// takes them from here instead of asking again.
    pub(super) async fn prefetch(
        &self,
        froms: &[String],
        deadline: tokio::time::Instant,
    ) -> Records {
        let mut seen = std::collections::HashSet::new();
        let domains: Vec<String> = froms
            .iter()
            .flat_map(|from| [from.clone(), organizational(from)])
            .filter(|d| seen.insert(d.clone()))
            .collect();
        let lookups = domains.into_iter().map(|d| async move {
            let found = tokio::time::timeout_at(deadline, self.dmarc_record(&d)).await;
            found.ok().map(|lookup| (d, lookup))
        });
        futures::future::join_all(lookups)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// The record of `domain`: as looked up already, else now.
    async fn record_of(&self, domain: &str, records: &Records) -> Lookup {
        match records.get(domain) {
            Some(found) => found.clone(),
            None => self.dmarc_record(domain).await,
        }
    }

    /// DMARC for a message whose From domain is `from` ("" when it has none or several).
    pub(super) async fn evaluate(
        &self,
        from: &str,
        spf: &SpfCheck,
        dkim: &[DkimCheck],
        records: &Records,
    ) -> DmarcCheck {
        let from = from.trim_end_matches('.').to_ascii_lowercase();
        if from.is_empty() {
            return DmarcCheck::none(from);
        }
        // A From domain that is no domain cannot be checked: not "no policy".
        if !is_dns_name(&from) {
            return DmarcCheck {
                status: AuthStatus::Permerror,
                ..DmarcCheck::none(from)
            };
        }
        let org = organizational(&from);
        let (record, at_org) = match self.record_of(&from, records).await {
            Lookup::Nothing if org != from => (self.record_of(&org, records).await, true),
            found => (found, false),
        };
        let record = match record {
            Lookup::Found(r) => r,
            Lookup::Nothing | Lookup::Several => return DmarcCheck::none(from),
            Lookup::Failed => {
                return DmarcCheck {
                    status: AuthStatus::Temperror,
                    ..DmarcCheck::none(from)
                };
            }
            Lookup::Broken(why) => {
                tracing::debug!(domain = %from, %why, "dmarc permerror");
                return DmarcCheck {
                    status: AuthStatus::Permerror,
                    ..DmarcCheck::none(from)
                };
            }
        };
        // RFC 7489 6.3: sp= is for subdomains of the domain the record was found at.
        let published = policy(if at_org { &record.sp } else { &record.p });
        let spf_aligned =
            spf.status == AuthStatus::Pass && aligned(&spf.domain, &from, &record.aspf);
        let dkim_aligned = dkim
            .iter()
            .any(|d| d.status == AuthStatus::Pass && aligned(&d.domain, &from, &record.adkim));
        let pass = spf_aligned || dkim_aligned;
        // Nothing passed, but an aligned identifier could not be checked for now: that is
        // no verdict either way (a DNS hiccup at the sender must not turn into a reject).
        let unsure = !pass
            && (spf.status == AuthStatus::Temperror && aligned(&spf.domain, &from, &record.aspf)
                || dkim.iter().any(|d| {
                    d.status == AuthStatus::Temperror && aligned(&d.domain, &from, &record.adkim)
                }));
        if unsure {
            return DmarcCheck {
                status: AuthStatus::Temperror,
                policy: published,
                percent: record.pct.min(100),
                ..DmarcCheck::none(from)
            };
        }
        let percent = record.pct.min(100);
        let disposition = if pass {
            DmarcPolicy::None
        } else if fastrand::u8(0..100) < percent {
            published
        } else {
            lower(published)
        };
        DmarcCheck {
            status: if pass {
                AuthStatus::Pass
            } else {
                AuthStatus::Fail
            },
            from_domain: from,
            policy: published,
            percent,
            disposition,
            spf_aligned,
            dkim_aligned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn organizational_domains_and_alignment() {
        assert_eq!(organizational("mail.example.co.uk"), "example.co.uk");
        assert_eq!(organizational("a.b.example.com."), "example.com");
        assert_eq!(organizational("x.example.test"), "example.test");
        assert!(aligned(
            "mail.example.com",
            "example.com",
            &Alignment::Relaxed
        ));
        assert!(!aligned(
            "mail.example.com",
            "example.com",
            &Alignment::Strict
        ));
        assert!(!aligned("example.org", "example.com", &Alignment::Relaxed));
        // Two registrants under one public suffix are not aligned.
        assert!(!aligned("a.co.uk", "b.co.uk", &Alignment::Relaxed));
        assert_eq!(lower(DmarcPolicy::Reject), DmarcPolicy::Quarantine);
        assert_eq!(lower(DmarcPolicy::Quarantine), DmarcPolicy::None);
    }
}
