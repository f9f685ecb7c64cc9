//! Our ARC set on mail we verified and pass on (RFC 8617 5.1, `[arc]`): an
//! ARC-Authentication-Results with our results, an ARC-Message-Signature over the message
//! as it leaves (relaxed/relaxed, body hashed as it is read from the spool) and an ARC-Seal
//! whose `cv=` is our validation of the chain as it came. A failed chain is sealed over
//! our set alone (5.1.2); a chain whose last seal already says `cv=fail` is not sealed.

use super::AuthStatus;
use super::key::PrivateKey;
use crate::proto::header;
use crate::spool::Content;
use base64::Engine;
use mail_auth::common::crypto::HashAlgorithm;
use mail_auth::dkim::Canonicalization;

/// Most ARC sets a chain may have (RFC 8617 4.2.1): a chain of 50 is not sealed again.
const MAX_SETS: u32 = 50;

/// The fields our ARC-Message-Signature signs, those of them the message has.
const SIGNED: &[&str] = &[
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
    "DKIM-Signature",
    "Authentication-Results",
];

/// `[arc]`, with its key.
pub struct Sealer {
    domain: String,
    selector: String,
    key: PrivateKey,
}

impl Sealer {
    pub(super) fn new(config: &crate::config::ArcSeal, key: PrivateKey) -> Sealer {
        Sealer {
            domain: config.domain.clone(),
            selector: config.selector.clone(),
            key,
        }
    }

    /// Our ARC set, three fields with their line ends, to go on top of the message whose
    /// header section (ours and its own, as it leaves) is `header`; `results` is our
    /// Authentication-Results value (`authserv-id; method=result ...`) and `chain` our
    /// validation of its chain. `None` when it is not to be sealed, or cannot be.
    pub(super) fn seal(
        &self,
        results: &str,
        chain: AuthStatus,
        header: &[u8],
        body: &Content,
    ) -> Option<String> {
        // A malformed chain is sealed as failed, after its highest instance, over our
        // own set.
        let (sets, instance, malformed) = match super::arc::sets(header) {
            Ok(sets) => {
                let n = u32::try_from(sets.len()).ok()?;
                (sets, n + 1, false)
            }
            Err(_) => (Vec::new(), super::arc::highest_instance(header)? + 1, true),
        };
        let last = sets.last().map(|set| &header[set[2].clone()]);
        if last.is_some_and(super::arc::says_cv_fail) || instance > MAX_SETS {
            return None;
        }
        let cv = match (malformed, instance, chain) {
            (true, ..) => "fail",
            (false, 1, _) => "none",
            (false, _, AuthStatus::Pass) => "pass",
            _ => "fail",
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let algorithm = match self.key.algorithm() {
            mail_auth::common::crypto::Algorithm::Ed25519Sha256 => "ed25519-sha256",
            _ => "rsa-sha256",
        };
        let (d, s) = (&self.domain, &self.selector);
        let aar = format!("ARC-Authentication-Results: i={instance}; {results}\r\n");

        // The message signature: the fields it signs, bottom-up (RFC 6376 5.4.2), then
        // itself without its b= value.
        let mut wanted = [(
            Canonicalization::Relaxed,
            HashAlgorithm::Sha256,
            0,
            Vec::new(),
        )];
        super::body::fill(&mut wanted, body).ok()?;
        let bh = base64(&wanted[0].3);
        let fields: Vec<header::Field<'_>> = header::fields(header).collect();
        let mut names = Vec::new();
        let mut signed = Vec::new();
        for name in SIGNED {
            for f in fields.iter().rev().filter(|f| f.is(name)) {
                names.push(*name);
                signed.extend(relaxed(&header[f.range.clone()]));
            }
        }
        if !names.contains(&"From") {
            return None;
        }
        let ams_head = format!(
            "ARC-Message-Signature: i={instance}; a={algorithm}; c=relaxed/relaxed;\r\n\
             \td={d}; s={s}; t={now};\r\n\th={};\r\n\tbh={bh}; b=",
            names.join(":")
        );
        signed.extend(relaxed_last(ams_head.as_bytes()));
        let ams = format!("{ams_head}{}\r\n", self.sign(&signed)?);

        // The seal: the sets before ours (unless the chain failed), ours, itself without
        // its b= value.
        let mut sealed = Vec::new();
        if cv != "fail" {
            for set in &sets {
                for range in set {
                    sealed.extend(relaxed(&header[range.clone()]));
                }
            }
        }
        sealed.extend(relaxed(aar.as_bytes()));
        sealed.extend(relaxed(ams.as_bytes()));
        let as_head = format!(
            "ARC-Seal: i={instance}; a={algorithm}; t={now}; cv={cv};\r\n\td={d}; s={s}; b="
        );
        sealed.extend(relaxed_last(as_head.as_bytes()));
        let seal = format!("{as_head}{}\r\n", self.sign(&sealed)?);
        Some(format!("{seal}{ams}{aar}"))
    }

    fn sign(&self, data: &[u8]) -> Option<String> {
        match self.key.sign(data) {
            Ok(b) => Some(base64(&b)),
            Err(e) => {
                tracing::warn!(domain = %self.domain, error = %e, "ARC sealing failed; not sealed");
                None
            }
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One field in relaxed canonical form (RFC 6376 3.4.2): the name in lower case, no space
/// around the colon, the value unfolded with each run of white space one space and none
/// at its ends, then CRLF.
fn relaxed(field: &[u8]) -> Vec<u8> {
    let mut out = relaxed_last(field);
    out.extend_from_slice(b"\r\n");
    out
}

/// `relaxed` without the final CRLF: the signature field itself, as signed (RFC 6376 3.7).
fn relaxed_last(field: &[u8]) -> Vec<u8> {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    let (name, value) = field.split_at(colon);
    let mut out: Vec<u8> = name.trim_ascii().to_ascii_lowercase();
    out.push(b':');
    let (mut space, mut started) = (false, false);
    for &b in value.get(1..).unwrap_or_default() {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => space = true,
            _ => {
                if space && started {
                    out.push(b' ');
                }
                (space, started) = (false, true);
                out.push(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaxed_fields() {
        assert_eq!(relaxed(b"Subject :  a \r\n\t b  \r\n"), b"subject:a b\r\n");
        assert_eq!(relaxed_last(b"ARC-Seal: i=1; b="), b"arc-seal:i=1; b=");
        assert_eq!(relaxed(b"To: a: b\r\n"), b"to:a: b\r\n");
    }
}
