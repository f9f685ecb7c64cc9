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
                relaxed([&header[f.range.clone()]], &mut signed);
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
        relaxed([ams_head.as_bytes()], &mut signed);
        let ams = format!("{ams_head}{}\r\n", self.sign(&signed)?);

        // The seal: the sets before ours (unless the chain failed), ours, itself without
        // its b= value.
        let mut sealed = Vec::new();
        if cv != "fail" {
            let earlier = sets.iter().flatten().map(|range| &header[range.clone()]);
            relaxed(earlier, &mut sealed);
        }
        relaxed([aar.as_bytes(), ams.as_bytes()], &mut sealed);
        let as_head = format!(
            "ARC-Seal: i={instance}; a={algorithm}; t={now}; cv={cv};\r\n\td={d}; s={s}; b="
        );
        relaxed([as_head.as_bytes()], &mut sealed);
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

/// `fields` in relaxed canonical form (RFC 6376 3.4.2), as mail-auth and dkimpy verify
/// them: a field given without its line end is written without one (the signature's own
/// field, RFC 6376 3.7).
fn relaxed<'a>(fields: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    let fields = fields.into_iter().map(super::arc_check::split);
    Canonicalization::Relaxed.canonicalize_headers(fields, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(field: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        relaxed([field], &mut out);
        out
    }

    #[test]
    fn relaxed_fields() {
        assert_eq!(
            canonical(b"Subject :  a \r\n\t b  \r\n"),
            b"subject:a b\r\n"
        );
        assert_eq!(canonical(b"ARC-Seal: i=1; b="), b"arc-seal:i=1; b=");
        assert_eq!(canonical(b"To: a: b\r\n"), b"to:a: b\r\n");
    }
}
