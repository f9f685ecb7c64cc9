//! Mailbox and path syntax of RFC 5321 4.1.2, with UTF-8 per RFC 6531 3.3 and the
//! length limits of RFC 5321 4.5.3.1.

use std::fmt;

/// RFC 5321 4.5.3.1.1
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 4.5.3.1.2
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 4.5.3.1.3, including the angle brackets.
pub const MAX_PATH: usize = 256;

/// A mailbox `local@domain`. The local part is kept as written on the wire (quotes included)
/// so that relaying reproduces it exactly.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mailbox {
    pub local: String,
    pub domain: String,
}

impl Mailbox {
    /// The local part with quoting removed, for policy decisions.
    pub fn local_unquoted(&self) -> String {
        match self
            .local
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
        {
            Some(inner) => {
                let mut out = String::new();
                let mut escaped = false;
                for c in inner.chars() {
                    if !escaped && c == '\\' {
                        escaped = true;
                    } else {
                        out.push(c);
                        escaped = false;
                    }
                }
                out
            }
            None => self.local.clone(),
        }
    }

    /// True when any part needs SMTPUTF8 (RFC 6531).
    pub fn is_utf8(&self) -> bool {
        !self.local.is_ascii() || !self.domain.is_ascii()
    }

    /// The domain in lower case for comparisons (address literals kept as they are).
    pub fn domain_lower(&self) -> String {
        self.domain.to_lowercase()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Why an address failed to parse; the session turns this into 501 with 5.1.7 or 5.1.3.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address must be enclosed in <>")]
    NoBrackets,
    #[error("bad address syntax")]
    Syntax,
    #[error("local part longer than 64 octets")]
    LocalTooLong,
    #[error("domain longer than 255 octets")]
    DomainTooLong,
    #[error("path longer than 256 octets")]
    PathTooLong,
}

/// Parses `<[@route,...:]mailbox>` and returns the mailbox and the rest of the input (the
/// parameters). A source route (RFC 5321 4.1.2 `A-d-l`, deprecated by Appendix C) is
/// accepted and stripped. `<>` gives `None`.
pub fn parse_path(input: &str) -> Result<(Option<Mailbox>, &str), AddressError> {
    let input = input.trim_start_matches(' ');
    let Some(rest) = input.strip_prefix('<') else {
        return Err(AddressError::NoBrackets);
    };
    let end = find_closing_bracket(rest).ok_or(AddressError::Syntax)?;
    let inner = &rest[..end];
    let after = &rest[end + 1..];
    if !after.is_empty() && !after.starts_with(' ') {
        return Err(AddressError::Syntax);
    }
    if inner.len() + 2 > MAX_PATH {
        return Err(AddressError::PathTooLong);
    }
    if inner.is_empty() {
        return Ok((None, after));
    }
    let mailbox_text = if inner.starts_with('@') {
        let colon = inner.find(':').ok_or(AddressError::Syntax)?;
        for hop in inner[..colon].split(',') {
            let domain = hop.strip_prefix('@').ok_or(AddressError::Syntax)?;
            if !is_domain(domain) {
                return Err(AddressError::Syntax);
            }
        }
        &inner[colon + 1..]
    } else {
        inner
    };
    Ok((Some(parse_mailbox(mailbox_text)?), after))
}

/// Finds the `>` that closes the path, skipping quoted strings.
fn find_closing_bracket(s: &str) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '>' if !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

/// RFC 6531 3.3 `UTF8-non-ascii`, less what must not reach a log line or a header field
/// through an address: C1 controls, line and paragraph separators, bidirectional overrides.
fn is_utf8_non_ascii(c: char) -> bool {
    !c.is_ascii()
        && !c.is_control()
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Parses `Local-part "@" ( Domain / address-literal )`.
pub fn parse_mailbox(s: &str) -> Result<Mailbox, AddressError> {
    let at = s.rfind('@').ok_or(AddressError::Syntax)?;
    let (local, domain) = (&s[..at], &s[at + 1..]);
    if !(is_dot_string(local) || is_quoted_string(local)) {
        return Err(AddressError::Syntax);
    }
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::LocalTooLong);
    }
    if domain.len() > MAX_DOMAIN {
        return Err(AddressError::DomainTooLong);
    }
    if !(is_domain(domain) || is_address_literal(domain)) {
        return Err(AddressError::Syntax);
    }
    Ok(Mailbox {
        local: local.to_string(),
        domain: domain.to_string(),
    })
}

/// `atext` of RFC 5322 3.2.3, extended with UTF-8 by RFC 6531 3.3.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_utf8_non_ascii(c)
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

fn is_quoted_string(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return false;
    };
    if s.len() < 2 {
        return false;
    }
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            // quoted-pairSMTP = %d92 %d32-126
            '\\' => match chars.next() {
                Some(n) if (' '..='~').contains(&n) => {}
                _ => return false,
            },
            // qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF-8
            '"' => return false,
            c if (' '..='~').contains(&c) || is_utf8_non_ascii(c) => {}
            _ => return false,
        }
    }
    true
}

/// `Domain = sub-domain *("." sub-domain)`; sub-domain is `Let-dig [Ldh-str]`, or a U-label.
pub fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DOMAIN
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || is_utf8_non_ascii(c))
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

fn is_address_literal(s: &str) -> bool {
    let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return false;
    };
    if let Some(v6) = inner.strip_prefix("IPv6:") {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    inner.parse::<std::net::Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(local: &str, domain: &str) -> Option<Mailbox> {
        Some(Mailbox {
            local: local.into(),
            domain: domain.into(),
        })
    }

    type Parsed<'a> = Result<(Option<Mailbox>, &'a str), AddressError>;

    #[test]
    fn paths() {
        let cases: &[(&str, Parsed)] = &[
            ("<a@b.c>", Ok((mb("a", "b.c"), ""))),
            ("<> SIZE=1", Ok((None, " SIZE=1"))),
            ("<@x.y,@z.w:u@c.d>", Ok((mb("u", "c.d"), ""))),
            ("<\"a b>\"@c.d>", Ok((mb("\"a b>\"", "c.d"), ""))),
            ("<a@[127.0.0.1]>", Ok((mb("a", "[127.0.0.1]"), ""))),
            ("<a@[IPv6:::1]>", Ok((mb("a", "[IPv6:::1]"), ""))),
            (
                "<jörg@bücher.example>",
                Ok((mb("jörg", "bücher.example"), "")),
            ),
            ("a@b.c", Err(AddressError::NoBrackets)),
            ("<a@b.c", Err(AddressError::Syntax)),
            ("<a@b.c>x", Err(AddressError::Syntax)),
            ("<a..b@c.d>", Err(AddressError::Syntax)),
            ("<a@-b.c>", Err(AddressError::Syntax)),
            ("<a@b..c>", Err(AddressError::Syntax)),
            ("<a b@c.d>", Err(AddressError::Syntax)),
            ("<a@[1.2.3]>", Err(AddressError::Syntax)),
            ("<@x.y:u>", Err(AddressError::Syntax)),
        ];
        for (input, want) in cases {
            assert_eq!(&parse_path(input), want, "{input}");
        }
    }

    #[test]
    fn limits() {
        let local = "a".repeat(65);
        assert_eq!(
            parse_path(&format!("<{local}@b.c>")),
            Err(AddressError::LocalTooLong)
        );
        let domain = format!("{}.com", "d".repeat(60)).repeat(5);
        assert!(parse_path(&format!("<a@{domain}>")).is_err());
        let path = format!(
            "<{}@{}.{}.{}.{}>",
            "a".repeat(60),
            "b".repeat(60),
            "c".repeat(60),
            "d".repeat(60),
            "e".repeat(20)
        );
        assert_eq!(parse_path(&path), Err(AddressError::PathTooLong));
    }

    #[test]
    fn unquote() {
        let m = parse_mailbox("\"a\\\"b@c\"@d.e").unwrap();
        assert_eq!(m.local_unquoted(), "a\"b@c");
    }
}
