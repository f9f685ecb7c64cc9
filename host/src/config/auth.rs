//! `[authentication]` (verifying the senders of received mail) and `[[dkim]]` (signing mail
//! from our own users).

use super::Dur;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authentication {
    /// SPF at MAIL, DKIM, ARC and DMARC at the end of data, for mail from clients that are
    /// neither authenticated nor in `relay.networks`; the results go to plugins and into
    /// an Authentication-Results field. `false`: no checks (plugins see `none`).
    pub verify: bool,
    /// How long one check may take (SPF at MAIL; DKIM, ARC and DMARC together at the end
    /// of data), DNS waits included; what is unanswered by then is `temperror`.
    pub timeout: Dur,
}

impl Default for Authentication {
    fn default() -> Self {
        Authentication {
            verify: true,
            timeout: Dur(Duration::from_secs(10)),
        }
    }
}

/// A DKIM signing key: mail from authenticated users and `relay.networks` whose From
/// domain is `domain` (or a subdomain of it) is signed with it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    pub domain: String,
    pub selector: String,
    /// PEM: RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8).
    pub private_key: PathBuf,
    /// The header fields to sign; default [`Dkim::DEFAULT_HEADERS`]. `From` is always
    /// signed (RFC 6376 5.4).
    #[serde(default)]
    pub headers: Vec<String>,
}

/// `[arc]`: the key we seal ARC chains with (RFC 8617 5.1), on mail we verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArcSeal {
    pub domain: String,
    pub selector: String,
    /// PEM, as `[[dkim]]`.
    pub private_key: PathBuf,
}

impl Dkim {
    /// RFC 6376 5.4.1's recommendation, less the trace fields.
    pub const DEFAULT_HEADERS: &[&str] = &[
        "From",
        "Reply-To",
        "Subject",
        "Date",
        "To",
        "Cc",
        "Message-ID",
        "In-Reply-To",
        "References",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
        "List-Id",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ];

    /// The fields to sign, `From` first.
    pub fn signed_headers(&self) -> Vec<String> {
        let mut out = vec!["From".to_string()];
        let names: Vec<String> = if self.headers.is_empty() {
            Self::DEFAULT_HEADERS
                .iter()
                .map(|h| h.to_string())
                .collect()
        } else {
            self.headers.clone()
        };
        for name in names {
            if !out.iter().any(|h| h.eq_ignore_ascii_case(&name)) {
                out.push(name);
            }
        }
        out
    }

    /// Does this key sign for `from_domain` (the RFC5322.From domain)?
    pub fn signs_for(&self, from_domain: &str) -> bool {
        let (d, f) = (
            self.domain.to_ascii_lowercase(),
            from_domain.to_ascii_lowercase(),
        );
        f == d || f.ends_with(&format!(".{d}"))
    }
}

pub(super) fn validate(config: &super::Config, p: &mut Vec<String>) {
    if config.authentication.timeout.0.is_zero() {
        p.push("authentication.timeout: must be greater than 0".into());
    }
    if let Some(arc) = &config.arc {
        if !crate::proto::address::is_domain(&arc.domain) {
            p.push(format!("arc.domain: {:?} is not a domain name", arc.domain));
        }
        if !crate::proto::address::is_domain(&arc.selector) {
            p.push(format!(
                "arc.selector: {:?} is not a selector",
                arc.selector
            ));
        }
    }
    for (i, d) in config.dkim.iter().enumerate() {
        if !crate::proto::address::is_domain(&d.domain) {
            p.push(format!(
                "dkim[{i}].domain: {:?} is not a domain name",
                d.domain
            ));
        }
        // A selector is a dot-separated list of labels (RFC 6376 3.1).
        if !crate::proto::address::is_domain(&d.selector) {
            p.push(format!(
                "dkim[{i}].selector: {:?} is not a selector",
                d.selector
            ));
        }
        for (j, h) in d.headers.iter().enumerate() {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                p.push(format!("dkim[{i}].headers[{j}]: {h:?} is not a field name"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_headers_and_domains() {
        let d = Dkim {
            domain: "Example.test".into(),
            selector: "s1".into(),
            private_key: "k.pem".into(),
            headers: vec!["subject".into(), "from".into(), "X-Tag".into()],
        };
        assert_eq!(d.signed_headers(), ["From", "subject", "X-Tag"]);
        assert!(d.signs_for("example.test") && d.signs_for("mail.EXAMPLE.test"));
        assert!(!d.signs_for("badexample.test") && !d.signs_for("test"));
    }
}
