//! What makes an ARC chain fail before any signature is checked (RFC 8617 5.2): sets that
//! are incomplete or out of order, and ARC-Seal and ARC-Message-Signature fields that are
//! not valid tag-lists (RFC 6376 3.2: tag names are case-sensitive, each appears once), that
//! lack a tag they need, name an algorithm other than rsa-sha256 and ed25519-sha256
//! (RFC 8301), or (an AMS) sign ARC-Seal fields (RFC 8617 4.1.2). mail-auth, which checks
//! the signatures, is lenient about all of these.

use crate::proto::header;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

/// The three fields of an ARC set.
const KINDS: [&str; 3] = [
    "arc-authentication-results",
    "arc-message-signature",
    "arc-seal",
];

/// Tags each kind must have (the AAR only `i`, read apart: it is not a tag-list).
const AMS_TAGS: [&str; 7] = ["i", "a", "b", "bh", "d", "h", "s"];
const AS_TAGS: [&str; 6] = ["i", "a", "b", "d", "s", "cv"];

/// Why the chain in `message`'s header section fails as it stands; `None` when it has no
/// ARC fields, or none of these defects.
pub(super) fn chain_defect(message: &[u8]) -> Option<String> {
    sets(message).err()
}

/// The ARC sets of `message`, in instance order, each its fields' ranges (AAR, AMS, AS);
/// `Err`: why they do not make a chain.
pub(super) fn sets(message: &[u8]) -> Result<Vec<[Range<usize>; 3]>, String> {
    // Per instance, each kind's fields.
    let mut sets: BTreeMap<u32, [Vec<Range<usize>>; 3]> = BTreeMap::new();
    for f in header::fields(message) {
        let Some(kind) = KINDS.iter().position(|k| f.is(k)) else {
            continue;
        };
        let raw = &message[f.range.clone()];
        let value = &raw[raw
            .iter()
            .position(|&b| b == b':')
            .map_or(raw.len(), |i| i + 1)..];
        let value = String::from_utf8_lossy(value);
        let instance = match kind {
            0 => aar_instance(&value),
            _ => field_instance(kind, &value),
        };
        match instance {
            Ok(i) => sets.entry(i).or_default()[kind].push(f.range.clone()),
            Err(why) => return Err(format!("{}: {why}", KINDS[kind])),
        }
    }
    let mut chain = Vec::new();
    for (expected, (i, fields)) in (1u32..).zip(sets) {
        if i != expected {
            return Err(format!("ARC set {expected} is missing"));
        }
        match fields {
            [aar, ams, seal] if aar.len() == 1 && ams.len() == 1 && seal.len() == 1 => {
                chain.push([aar[0].clone(), ams[0].clone(), seal[0].clone()]);
            }
            _ => return Err(format!("ARC set {i} is not one field of each kind")),
        }
    }
    Ok(chain)
}

/// The highest instance any ARC field of `message` names, however malformed the rest
/// (0 when there is none); `None` past 50.
pub(super) fn highest_instance(message: &[u8]) -> Option<u32> {
    let mut highest = 0;
    for f in header::fields(message) {
        if KINDS.iter().any(|k| f.is(k)) {
            let text = String::from_utf8_lossy(&message[f.range.clone()]);
            let value = text.split_once(':').map_or("", |(_, v)| v);
            let i = value
                .split(';')
                .filter_map(|t| t.trim().strip_prefix("i="))
                .find_map(|n| n.trim().parse::<u32>().ok())
                .unwrap_or(0);
            highest = highest.max(i);
        }
    }
    (highest < 50).then_some(highest)
}

/// Does this ARC-Seal field say `cv=fail`?
pub(super) fn says_cv_fail(field: &[u8]) -> bool {
    let text = String::from_utf8_lossy(field);
    let value = text.split_once(':').map_or("", |(_, v)| v);
    tag_list(value).is_ok_and(|tags| {
        tags.get("cv")
            .is_some_and(|cv| cv.eq_ignore_ascii_case("fail"))
    })
}

/// `i=N;` at the start of an ARC-Authentication-Results value (RFC 8617 4.1.1).
fn aar_instance(value: &str) -> Result<u32, String> {
    let rest = value.trim_start().strip_prefix("i=").ok_or("no i= first")?;
    let (n, _) = rest.split_once(';').ok_or("no ';' after i=")?;
    instance(n.trim())
}

fn instance(n: &str) -> Result<u32, String> {
    match n.parse::<u32>() {
        Ok(i) if (1..=50).contains(&i) && !n.starts_with('0') => Ok(i),
        _ => Err(format!("bad instance {n:?}")),
    }
}

/// An ARC-Message-Signature (`kind` 1) or ARC-Seal (2): its instance, once its tags are
/// checked.
fn field_instance(kind: usize, value: &str) -> Result<u32, String> {
    let tags = tag_list(value)?;
    let required: &[&str] = if kind == 1 { &AMS_TAGS } else { &AS_TAGS };
    if let Some(missing) = required.iter().find(|t| !tags.contains_key(*t)) {
        return Err(format!("no {missing}= tag"));
    }
    let algorithm = tags["a"].to_ascii_lowercase();
    if algorithm != "rsa-sha256" && algorithm != "ed25519-sha256" {
        return Err(format!("algorithm {algorithm:?}"));
    }
    if kind == 1
        && tags["h"]
            .split(':')
            .any(|h| h.trim().eq_ignore_ascii_case("arc-seal"))
    {
        return Err("signs ARC-Seal fields".into());
    }
    instance(tags["i"])
}

/// A tag-list (RFC 6376 3.2): `name=value` separated by `;`, a last `;` allowed; names
/// `ALPHA *(ALPHA / DIGIT / "_")`, each once; values of visible characters but `;`, with
/// folding whitespace inside.
pub(super) fn tag_list(value: &str) -> Result<HashMap<&str, &str>, String> {
    let fws = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let mut tags = HashMap::new();
    let specs: Vec<&str> = value.split(';').collect();
    for (n, spec) in specs.iter().enumerate() {
        if spec.trim_matches(fws).is_empty() {
            // Only after the last tag: `a=b;` but not `a=b;;c=d` nor `;a=b`.
            if n + 1 == specs.len() && n > 0 {
                continue;
            }
            return Err("an empty tag (a stray ';')".into());
        }
        let (name, tag_value) = spec.split_once('=').ok_or("a tag without '='")?;
        let name = name.trim_matches(fws);
        let well_formed = name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            return Err(format!("bad tag name {name:?}"));
        }
        let tag_value = tag_value.trim_matches(fws);
        if tag_value
            .chars()
            .any(|c| !(fws(c) || ('!'..='~').contains(&c)))
        {
            return Err(format!("bad value of {name}="));
        }
        if tags.insert(name, tag_value).is_some() {
            return Err(format!("{name}= twice"));
        }
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AMS: &str = "ARC-Message-Signature: i=1; a=rsa-sha256; d=x.test; s=s;\r\n h=from:to; bh=AA==; b=AA==\r\n";
    const AS: &str = "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x.test; s=s; b=AA==;\r\n";
    const AAR: &str = "ARC-Authentication-Results: i=1; x.test; spf=pass\r\n";

    fn defect(fields: &[&str]) -> Option<String> {
        let mut m = fields.concat();
        m.push_str("From: a@x.test\r\n\r\nbody\r\n");
        chain_defect(m.as_bytes())
    }

    #[test]
    fn sound_chains_and_none() {
        assert_eq!(defect(&[]), None);
        assert_eq!(defect(&[AS, AMS, AAR]), None);
        let two = [
            AS.replace("i=1", "i=2").replace("cv=none", "cv=pass"),
            AMS.replace("i=1", "i=2"),
            AAR.replace("i=1", "i=2"),
        ];
        let mut all: Vec<&str> = two.iter().map(String::as_str).collect();
        all.extend([AS, AMS, AAR]);
        assert_eq!(defect(&all), None);
    }

    #[test]
    fn defects() {
        let cases = [
            (vec![AS, AAR], "not one field of each kind"),
            (
                vec![AS.replace("i=1", "i=2").leak(), AMS, AAR],
                "not one field",
            ),
            (
                vec![AS, AMS.replace("i=1", "i=3").leak(), AAR],
                "not one field",
            ),
            (
                vec![AS.replace("rsa-sha256", "rsa-sha1").leak(), AMS, AAR],
                "algorithm",
            ),
            (
                vec![AS.replace("a=rsa-sha256; ", "").leak(), AMS, AAR],
                "no a=",
            ),
            (
                vec![AS, AMS.replace("h=from:to", "h=from:arc-seal").leak(), AAR],
                "ARC-Seal",
            ),
            (
                vec![AS.replace("cv=none", "c$v=none").leak(), AMS, AAR],
                "bad tag name",
            ),
            (
                vec![AS.replace("s=s;", "s=s; d=y.test;").leak(), AMS, AAR],
                "d= twice",
            ),
            (
                vec![AS.replace("d=x.test", "D=x.test").leak(), AMS, AAR],
                "no d=",
            ),
            (vec![AS.replace("s=s;", "s=s;;").leak(), AMS, AAR], "stray"),
        ];
        for (fields, why) in cases {
            let got = defect(&fields).unwrap_or_default();
            assert!(got.contains(why), "{fields:?}: {got:?}");
        }
    }
}
