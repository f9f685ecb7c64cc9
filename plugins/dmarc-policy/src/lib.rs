//! DMARC policy: refuses (`550 5.7.1`), holds or tags mail whose From domain's DMARC policy
//! asks for it, from the server's evaluation (`auth.dmarc`); local overrides in the config.

use wasmtp_sdk::{
    AuthResults, AuthStatus, DataResult, DataVerdict, DmarcCheck, DmarcPolicy, EnvelopeFrom, Hook,
    Message, Plugin, Session, Verdict,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// false: tag only, never refuse or hold.
    #[serde(default = "enforce_default")]
    pub enforce: bool,
    /// From domains (and their subdomains) that are never refused or held.
    #[serde(default)]
    pub allow_domains: Vec<String>,
}

fn enforce_default() -> bool {
    true
}

pub struct DmarcPolicyPlugin {
    enforce: bool,
    allow: Vec<String>,
}

impl DmarcPolicyPlugin {
    fn allowed(&self, domain: &str) -> bool {
        let domain = domain.to_ascii_lowercase();
        self.allow
            .iter()
            .any(|a| domain == *a || domain.ends_with(&format!(".{a}")))
    }

    /// The verdict and header for one DMARC result.
    pub fn decide(&self, d: &DmarcCheck) -> DataResult {
        // Not checkable now (a DNS failure) for a domain whose policy asks for action:
        // deferred, so that the sender tries again (RFC 7489 6.6.3 lets a receiver do so).
        let acts = d.policy != DmarcPolicy::None;
        if d.status == AuthStatus::Temperror
            && acts
            && self.enforce
            && !self.allowed(&d.from_domain)
        {
            let text = format!(
                "DMARC policy of {} could not be checked now; try again later",
                d.from_domain
            );
            return DataResult::verdict(Verdict::tempfail(451, "4.7.0", &text));
        }
        if d.status != AuthStatus::Fail {
            return DataResult::default();
        }
        let (verdict, action) = match d.disposition {
            _ if self.allowed(&d.from_domain) => (DataVerdict::Continue, "allowed"),
            _ if !self.enforce => (DataVerdict::Continue, "tagged"),
            DmarcPolicy::Reject => {
                let text = format!(
                    "Message rejected: the DMARC policy of {} refuses mail that fails it",
                    d.from_domain
                );
                (Verdict::reject(550, "5.7.1", &text).into(), "rejected")
            }
            DmarcPolicy::Quarantine => (
                DataVerdict::Quarantine(format!(
                    "DMARC policy of {} asks for quarantine",
                    d.from_domain
                )),
                "quarantined",
            ),
            DmarcPolicy::None => (DataVerdict::Continue, "tagged"),
        };
        let value = format!(
            "fail; from={}; policy={}; disposition={}; action={action}",
            d.from_domain,
            d.policy.as_str(),
            d.disposition.as_str()
        );
        DataResult::verdict(verdict).add_header("X-DMARC-Policy", &value)
    }
}

impl Plugin for DmarcPolicyPlugin {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::Data];

    fn new(config: Config) -> Result<Self, String> {
        let mut allow = Vec::new();
        for d in config.allow_domains {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if d.is_empty() || d.contains(['@', ' ']) {
                return Err(format!("allow_domains: {d:?} is not a domain"));
            }
            allow.push(d);
        }
        Ok(DmarcPolicyPlugin {
            enforce: config.enforce,
            allow,
        })
    }

    fn data(
        &mut self,
        _session: &Session,
        _sender: &EnvelopeFrom,
        _recipients: &[String],
        _message: &Message,
        auth: &AuthResults,
    ) -> DataResult {
        self.decide(&auth.dmarc)
    }
}

wasmtp_sdk::export!(DmarcPolicyPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: AuthStatus, disposition: DmarcPolicy) -> DmarcCheck {
        DmarcCheck {
            status,
            from_domain: "example.com".into(),
            policy: DmarcPolicy::Reject,
            percent: 100,
            disposition,
            spf_aligned: false,
            dkim_aligned: false,
        }
    }

    fn plugin(enforce: bool, allow: &[&str]) -> DmarcPolicyPlugin {
        DmarcPolicyPlugin::new(Config {
            enforce,
            allow_domains: allow.iter().map(|s| s.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn reject_quarantine_tag_and_allow() {
        let p = plugin(true, &["partner.test"]);
        let r = p.decide(&check(AuthStatus::Fail, DmarcPolicy::Reject));
        assert!(
            matches!(&r.verdict, DataVerdict::Reject(r) if r.code == 550 && r.enhanced == "5.7.1")
        );
        let q = p.decide(&check(AuthStatus::Fail, DmarcPolicy::Quarantine));
        assert!(matches!(q.verdict, DataVerdict::Quarantine(_)));
        let unsure = p.decide(&check(AuthStatus::Temperror, DmarcPolicy::None));
        assert!(matches!(&unsure.verdict, DataVerdict::Tempfail(r) if r.code == 451));
        let pass = p.decide(&check(AuthStatus::Pass, DmarcPolicy::None));
        assert!(matches!(pass.verdict, DataVerdict::Continue) && pass.changes.is_empty());
        let tag = plugin(false, &[]).decide(&check(AuthStatus::Fail, DmarcPolicy::Reject));
        assert!(matches!(tag.verdict, DataVerdict::Continue) && tag.changes.len() == 1);
        let mut sub = check(AuthStatus::Fail, DmarcPolicy::Reject);
        sub.from_domain = "mail.partner.test".into();
        assert!(matches!(p.decide(&sub).verdict, DataVerdict::Continue));
        assert!(
            DmarcPolicyPlugin::new(Config {
                enforce: true,
                allow_domains: vec!["a@b".into()]
            })
            .is_err()
        );
    }
}
