//! ARC chains whose last ARC-Message-Signature has no `c=` or an empty `h=`. mail-auth
//! takes the first as simple/simple and refuses the second, where dkimpy, and with it the
//! ARC validation suite, reads them as relaxed/relaxed (ARC's canonicalization) and as
//! signing no field. Such a chain is verified here with the keys already looked up: the
//! last AMS with its body hash, then every seal, last first (RFC 8617 5.2).

use super::arc::{sets, tag_list};
use crate::proto::header;
use crate::spool::Content;
use base64::Engine;
use mail_auth::Txt;
use mail_auth::common::crypto::{Algorithm, HashAlgorithm};
use mail_auth::dkim::Canonicalization;
use std::collections::HashMap;

/// A field's name and its value (from after the colon, line end included).
pub(super) fn split(field: &[u8]) -> (&[u8], &[u8]) {
    let colon = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    (&field[..colon], field.get(colon + 1..).unwrap_or_default())
}

/// A field's tags, read from its value.
fn tags(field: &[u8]) -> Option<HashMap<String, String>> {
    let value = String::from_utf8_lossy(split(field).1).into_owned();
    let tags = tag_list(&value).ok()?;
    Some(
        tags.into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Does the chain's last AMS have no `c=`, or an empty `h=`?
pub(super) fn wanted(message: &[u8]) -> bool {
    let Ok(chain) = sets(message) else {
        return false;
    };
    let Some(last) = chain.last() else {
        return false;
    };
    tags(&message[last[1].clone()])
        .is_some_and(|t| !t.contains_key("c") || t.get("h").is_some_and(|h| h.trim().is_empty()))
}

/// The value without its line end and with the value of its `b=` tag deleted (RFC 6376
/// 3.7): what the signature signed of its own field.
fn without_b(value: &[u8]) -> Vec<u8> {
    let value = value.strip_suffix(b"\r\n").unwrap_or(value);
    let mut out = Vec::with_capacity(value.len());
    for (i, spec) in value.split(|&b| b == b';').enumerate() {
        if i > 0 {
            out.push(b';');
        }
        let name_end = spec.iter().position(|&b| b == b'=');
        match name_end {
            Some(eq) if spec[..eq].trim_ascii() == b"b" => out.extend_from_slice(&spec[..=eq]),
            _ => out.extend_from_slice(spec),
        }
    }
    out
}

fn decode(b64: &str) -> Option<Vec<u8>> {
    let clean: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).ok()
}

fn algorithm(a: &str) -> Option<Algorithm> {
    match a.to_ascii_lowercase().as_str() {
        "rsa-sha256" => Some(Algorithm::RsaSha256),
        "ed25519-sha256" => Some(Algorithm::Ed25519Sha256),
        _ => None,
    }
}

fn canonicalization(c: &str) -> Option<(Canonicalization, Canonicalization)> {
    let one = |s: &str| match s.trim().to_ascii_lowercase().as_str() {
        "relaxed" => Some(Canonicalization::Relaxed),
        "simple" => Some(Canonicalization::Simple),
        _ => None,
    };
    match c.split_once('/') {
        Some((h, b)) => Some((one(h)?, one(b)?)),
        None => Some((one(c)?, Canonicalization::Simple)),
    }
}

/// Does the signature `t` (a field's tags) verify over `headers` with its key?
fn verifies(
    keys: &HashMap<String, Txt>,
    t: &HashMap<String, String>,
    headers: Vec<(&[u8], &[u8])>,
    canon: Canonicalization,
) -> bool {
    let name = format!("{}._domainkey.{}.", t["s"], t["d"]);
    let (Some(Txt::DomainKey(key)), Some(a), Some(b)) =
        (keys.get(&name), algorithm(&t["a"]), decode(&t["b"]))
    else {
        return false;
    };
    key.p.verify(&mut headers.into_iter(), &b, canon, a).is_ok()
}

/// Does the chain of `message` (its header section; `body` its body) verify?
pub(super) fn verify(message: &[u8], body: &Content, keys: &HashMap<String, Txt>) -> bool {
    let Ok(chain) = sets(message) else {
        return false;
    };
    let Some(last) = chain.last() else {
        return false;
    };
    // The last AMS: its body hash, then the fields it signs (bottom-up, RFC 6376 5.4.2)
    // and itself without its signature.
    let ams = &message[last[1].clone()];
    let Some(t) = tags(ams) else {
        return false;
    };
    let c = t.get("c").map_or("relaxed/relaxed", String::as_str);
    let Some((ch, cb)) = canonicalization(c) else {
        return false;
    };
    let mut hash = [(cb, HashAlgorithm::Sha256, 0, Vec::new())];
    if super::body::fill(&mut hash, body).is_err() || decode(&t["bh"]).as_ref() != Some(&hash[0].3)
    {
        return false;
    }
    let fields: Vec<header::Field<'_>> = header::fields(message).collect();
    let mut used: HashMap<String, usize> = HashMap::new();
    let mut headers: Vec<(&[u8], &[u8])> = Vec::new();
    for name in t["h"].split(':').map(|n| n.trim().to_ascii_lowercase()) {
        if name.is_empty() {
            continue;
        }
        let n = used.entry(name.clone()).or_default();
        if let Some(f) = fields.iter().rev().filter(|f| f.is(&name)).nth(*n) {
            headers.push(split(&message[f.range.clone()]));
        }
        *n += 1;
    }
    let (ams_name, ams_value) = split(ams);
    let stripped = without_b(ams_value);
    headers.push((ams_name, &stripped));
    if !verifies(keys, &t, headers, ch) {
        return false;
    }
    // Every seal, last first: over the sets before it and its own, itself without its
    // signature; cv=none on the first, cv=pass on the others.
    for (i, set) in chain.iter().enumerate().rev() {
        let seal = &message[set[2].clone()];
        let Some(t) = tags(seal) else {
            return false;
        };
        let cv = t.get("cv").map(|cv| cv.to_ascii_lowercase());
        if cv.as_deref() != Some(if i == 0 { "none" } else { "pass" }) {
            return false;
        }
        let mut headers: Vec<(&[u8], &[u8])> = Vec::new();
        for earlier in &chain[..i] {
            headers.extend(earlier.iter().map(|r| split(&message[r.clone()])));
        }
        headers.push(split(&message[set[0].clone()]));
        headers.push(split(&message[set[1].clone()]));
        let (seal_name, seal_value) = split(seal);
        let stripped = without_b(seal_value);
        headers.push((seal_name, &stripped));
        if !verifies(keys, &t, headers, Canonicalization::Relaxed) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_value_goes() {
        assert_eq!(
            without_b(b" i=1; a=rsa-sha256; b=abc\r\n def; bh=xyz;\r\n"),
            b" i=1; a=rsa-sha256; b=; bh=xyz;"
        );
        assert_eq!(without_b(b" d=x; b=abc"), b" d=x; b=");
    }
}
