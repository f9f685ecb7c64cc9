//! The Authentication-Results header field (RFC 8601): ours, and forged ones removed.

use super::{AuthResults, AuthStatus};
use crate::proto::header;

/// `Authentication-Results: HOSTNAME; spf=...; dkim=...; arc=...; dmarc=...` with its line
/// ending, folded one method a line.
pub fn authentication_results(authserv_id: &str, r: &AuthResults) -> String {
    let mut methods: Vec<String> = Vec::new();
    for (check, property) in [
        (&r.spf.mail_from, "smtp.mailfrom"),
        (&r.spf.helo, "smtp.helo"),
    ] {
        if !check.domain.is_empty() {
            methods.push(format!(
                "spf={} {property}={}",
                check.status.as_str(),
                value(&check.domain)
            ));
        }
    }
    if r.dkim.is_empty() {
        methods.push("dkim=none".into());
    }
    for d in &r.dkim {
        let mut m = format!("dkim={}", d.status.as_str());
        if let Some(reason) = &d.reason {
            m.push_str(&format!(" ({})", comment(reason)));
        }
        if !d.domain.is_empty() {
            m.push_str(&format!(" header.d={}", value(&d.domain)));
        }
        if !d.selector.is_empty() {
            m.push_str(&format!(" header.s={}", value(&d.selector)));
        }
        if !d.algorithm.is_empty() {
            m.push_str(&format!(" header.a={}", d.algorithm));
        }
        methods.push(m);
    }
    methods.push(format!("arc={}", r.arc.status.as_str()));
    let dmarc = &r.dmarc;
    let mut m = format!("dmarc={}", dmarc.status.as_str());
    if matches!(dmarc.status, AuthStatus::Pass | AuthStatus::Fail) {
        m.push_str(&format!(
            " (p={} pct={} dis={})",
            dmarc.policy.as_str(),
            dmarc.percent,
            dmarc.disposition.as_str()
        ));
    }
    if !dmarc.from_domain.is_empty() {
        m.push_str(&format!(" header.from={}", value(&dmarc.from_domain)));
    }
    methods.push(m);
    format!(
        "Authentication-Results: {authserv_id};\r\n\t{}\r\n",
        methods.join(";\r\n\t")
    )
}

/// A property value: a token as is, anything else quoted (RFC 8601 2.2, RFC 2045 5.1).
fn value(v: &str) -> String {
    let token = !v.is_empty()
        && v.bytes().all(|b| {
            b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b) || b == b'@' || b == b'/'
        });
    if token {
        v.to_string()
    } else {
        let inner: String = v
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{inner}\"")
    }
}

/// Text for a comment: printable ASCII, parentheses and backslashes escaped.
fn comment(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control())
        .take(200)
        .flat_map(|c| match c {
            '(' | ')' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// The authserv-id of an Authentication-Results field's value (RFC 8601 2.2): after any
/// comments (nested, with quoted-pairs) and white space, a token or a quoted-string,
/// unquoted.
fn authserv_id(value: &[u8]) -> Vec<u8> {
    let mut rest = value;
    loop {
        rest = rest.trim_ascii_start();
        if rest.first() != Some(&b'(') {
            break;
        }
        let (mut depth, mut escaped, mut end) = (0usize, false, rest.len());
        for (i, &b) in rest.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    if let Some(quoted) = rest.strip_prefix(b"\"") {
        let mut id = Vec::new();
        let mut escaped = false;
        for &b in quoted {
            match b {
                _ if escaped => {
                    id.push(b);
                    escaped = false;
                }
                b'\\' => escaped = true,
                b'"' => break,
                _ => id.push(b),
            }
        }
        return id;
    }
    let end = rest
        .iter()
        .position(|&b| b == b';' || b == b'(' || b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    rest[..end].to_vec()
}

/// The message without Authentication-Results fields that claim to be ours (RFC 8601 5:
/// a border MTA removes them, or anyone could forge our verdicts); `None` when it has
/// none.
pub fn remove_forged(message: &[u8], authserv_id_ours: &str) -> Option<Vec<u8>> {
    header::without(message, |f| {
        if !f.is("authentication-results") {
            return false;
        }
        let raw = &message[f.range.clone()];
        let value = raw.splitn(2, |&b| b == b':').nth(1).unwrap_or_default();
        authserv_id(value).eq_ignore_ascii_case(authserv_id_ours.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_results_are_removed_others_kept() {
        let m = b"Authentication-Results: (x) MX.example.test;\r\n spf=pass\r\n\
Authentication-Results: other.test; dkim=pass\r\n\
Authentication-Results: mx.example.test 1; dmarc=pass\r\n\
Authentication-Results: \"mx.example.test\"; dkim=pass\r\n\
Authentication-Results: (a \\) b) mx.example.test; arc=pass\r\n\
Subject: hi\r\n\r\nAuthentication-Results: mx.example.test; body\r\n";
        let out = remove_forged(m, "mx.example.test").unwrap();
        assert_eq!(
            out,
            b"Authentication-Results: other.test; dkim=pass\r\nSubject: hi\r\n\r\n\
Authentication-Results: mx.example.test; body\r\n"
        );
        assert!(remove_forged(b"Subject: x\r\n\r\n", "mx.example.test").is_none());
    }

    #[test]
    fn values_and_comments_are_escaped() {
        assert_eq!(value("example.com"), "example.com");
        assert_eq!(value("a b\"c"), "\"a b\\\"c\"");
        assert_eq!(comment("bad (key)\r\n"), "bad \\(key\\)");
    }
}
