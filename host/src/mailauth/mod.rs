//! Sender authentication of received mail, on the mail-auth crate: SPF (RFC 7208) for the
//! HELO and MAIL FROM identities at MAIL, DKIM (RFC 6376), ARC (RFC 8617) and DMARC
//! (RFC 7489) at the end of data; the results go to plugins (typed, WIT `auth-results`)
//! and into an Authentication-Results field (RFC 8601). And DKIM signing of mail from our
//! own users (`[[dkim]]`).
//!
//! mail-auth parses the records and signatures, expands SPF macros and verifies
//! signatures. Every DNS lookup is ours (the server's resolver, `[dns] nameservers`): a
//! server failure or a timeout is `temperror` (mail-auth would take SERVFAIL for "no
//! record"), SPF counts void lookups (RFC 7208 4.6.4, which mail-auth does not), and DMARC
//! finds the organizational domain with the public suffix list (psl) and applies `sp=` and
//! `pct=` as RFC 7489 6.6.3-4 say. Keys and records are cached, parsed, for their DNS TTL.

mod cache;
mod dmarc;
mod header;
mod sign;
mod spf;
mod verify;

pub use crate::plugin::{
    ArcCheck, AuthResults, AuthStatus, DkimCheck, DmarcCheck, DmarcPolicy, SpfCheck, SpfResults,
};
pub use header::{authentication_results, remove_forged};
pub use sign::{KeyError, Signer, Signers, keygen};
pub use verify::Verifier;

impl AuthStatus {
    /// The result's name in Authentication-Results (RFC 8601 2.7).
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStatus::None => "none",
            AuthStatus::Pass => "pass",
            AuthStatus::Fail => "fail",
            AuthStatus::Softfail => "softfail",
            AuthStatus::Neutral => "neutral",
            AuthStatus::Temperror => "temperror",
            AuthStatus::Permerror => "permerror",
        }
    }
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

impl SpfCheck {
    /// Not checked.
    pub fn none() -> SpfCheck {
        SpfCheck {
            status: AuthStatus::None,
            domain: String::new(),
            explanation: None,
        }
    }
}

impl SpfResults {
    /// Nothing checked (trusted clients, verification off).
    pub fn none() -> SpfResults {
        SpfResults {
            helo: SpfCheck::none(),
            mail_from: SpfCheck::none(),
        }
    }
}

impl AuthResults {
    /// Nothing checked but SPF.
    pub fn only_spf(spf: SpfResults) -> AuthResults {
        AuthResults {
            spf,
            dkim: Vec::new(),
            arc: ArcCheck {
                status: AuthStatus::None,
                sets: 0,
            },
            dmarc: DmarcCheck::none(String::new()),
        }
    }
}

impl DmarcCheck {
    /// No DMARC evaluation (no record, or no single From domain).
    pub fn none(from_domain: String) -> DmarcCheck {
        DmarcCheck {
            status: AuthStatus::None,
            from_domain,
            policy: DmarcPolicy::None,
            percent: 100,
            disposition: DmarcPolicy::None,
            spf_aligned: false,
            dkim_aligned: false,
        }
    }
}

/// Is `name` (with or without its final dot) a domain name DNS can ask for: labels of 1-63
/// octets of letters, digits, `-` and `_`, at most 253 octets in all.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// `name.` (DNS names are looked up absolute, never through search domains).
fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// The domain of the one From address of a message given in parts (our fields, then the
/// content as received); `None` without a From field or with several (RFC 7489 6.6.1).
fn from_domain(parts: &[&[u8]]) -> Option<String> {
    let mut found = None;
    for part in parts {
        for f in crate::proto::header::fields(part).filter(|f| f.is("from")) {
            if found.is_some() {
                return None;
            }
            let raw = &part[f.range.clone()];
            let value = &raw[raw.iter().position(|&b| b == b':')? + 1..];
            let parsed = mail_parser::parsers::MessageStream::new(value).parse_address();
            let address = parsed.as_address()?.first()?.address()?.to_string();
            found = Some(address.rsplit_once('@')?.1.trim().to_ascii_lowercase());
        }
    }
    found
}
