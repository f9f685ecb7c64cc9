//! Sender authentication of received mail, on the mail-auth crate: SPF (RFC 7208) for the
//! HELO and MAIL FROM identities at MAIL, DKIM (RFC 6376), ARC (RFC 8617) and DMARC
//! (RFC 7489) at the end of data; the results go to plugins (typed, WIT `auth-results`)
//! and into an Authentication-Results field (RFC 8601). And DKIM signing of mail from our
//! own users (`[[dkim]]`).
//!
//! SPF is ours whole (`spf`: RFC 7208's grammar, macros and limits, checked against the
//! openspf test suite). mail-auth parses DKIM signatures and DMARC records and verifies
//! signatures. Every DNS lookup is ours (the server's resolver, `[dns] nameservers`): a
//! server failure or a timeout is `temperror` (mail-auth would take SERVFAIL for "no
//! record"), and DMARC
//! finds the organizational domain with the public suffix list (psl) and applies `sp=` and
//! `pct=` as RFC 7489 6.6.3-4 say. Keys and records are cached, parsed, for their DNS TTL.

mod arc;
mod arc_check;
mod body;
mod cache;
mod dmarc;
mod header;
mod key;
mod seal;
mod sign;
mod spf;
mod verify;

pub use crate::plugin::{
    ArcCheck, AuthResults, AuthStatus, DkimCheck, DmarcCheck, DmarcPolicy, SpfCheck, SpfResults,
};
pub use header::{authentication_results, remove_forged};
pub use key::KeyProblem;
pub use sign::{KeyError, Signer, Signers, keygen};
pub use verify::Verifier;

/// Is `name` (with or without its final dot) a name our resolver can ask for: labels of
/// 1-63 letters, digits, `-` and `_`, at most 253 octets in all. Anything else (an SPF
/// macro that put `a+b` into a name, a selector with `!`) is refused before a lookup, as
/// a permanent error: the resolver would refuse it locally, which would look temporary.
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

/// At most this many distinct From domains are read; a message with more is treated as a
/// DMARC failure (see `Verifier::dmarc_all`).
pub(super) const MAX_FROM_DOMAINS: usize = 10;

/// The From addresses of a message given in parts (our fields, then the content as
/// received), each once, in order: every address of every From field, until their domains
/// number more than [`MAX_FROM_DOMAINS`].
fn from_addresses(parts: &[&[u8]]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut domains = std::collections::HashSet::new();
    for part in parts {
        for f in crate::proto::header::fields(part).filter(|f| f.is("from")) {
            let raw = &part[f.range.clone()];
            let Some(colon) = raw.iter().position(|&b| b == b':') else {
                continue;
            };
            let parsed =
                mail_parser::parsers::MessageStream::new(&raw[colon + 1..]).parse_address();
            for address in parsed.as_address().into_iter().flat_map(|a| a.iter()) {
                if let Some(a) = address.address()
                    && a.contains('@')
                    && seen.insert(a.to_ascii_lowercase())
                {
                    found.push(a.to_string());
                    domains.insert(domain_of(a));
                    if domains.len() > MAX_FROM_DOMAINS {
                        return found;
                    }
                }
            }
        }
    }
    found
}

/// The domain of an address, as DMARC and DKIM compare them: lower case, an
/// internationalized name in its ASCII form (`xn--`, RFC 5890), as DNS has it.
fn domain_of(address: &str) -> String {
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    let domain = domain.trim().trim_end_matches('.');
    idna::domain_to_ascii(domain)
        .unwrap_or_else(|_| domain.to_string())
        .to_ascii_lowercase()
}

/// The From domains of a received message, each once, in order (for DMARC).
fn from_domains(message: &[u8]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    from_addresses(&[message])
        .iter()
        .map(|a| domain_of(a))
        .filter(|d| seen.insert(d.clone()))
        .collect()
}
