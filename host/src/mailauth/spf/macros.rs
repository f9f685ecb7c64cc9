//! SPF macro strings (RFC 7208 7): parsed strictly, then expanded with the values of one
//! check (the `%{p}` name found once, by the evaluator, when a string asks for it).

use std::fmt::Write;
use std::net::IpAddr;

/// One macro letter (RFC 7208 7.2); `c`, `r` and `t` only in an explanation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Letter {
    Sender,
    Local,
    SenderDomain,
    Domain,
    Ip,
    Validated,
    Version,
    Helo,
    Client,
    Receiver,
    Time,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Macro {
        letter: Letter,
        /// Upper-case letter: the value is URL-encoded (RFC 7208 7.3).
        escape: bool,
        /// Rightmost parts kept (none: all).
        keep: Option<usize>,
        reverse: bool,
        /// Characters the value is split on ("." when none given).
        delimiters: String,
    },
    /// `%%`, `%_`, `%-`: "%", " ", "%20".
    Escape(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacroString(Vec<Part>);

/// What a check's macros expand from.
pub struct Values<'a> {
    pub sender: &'a str,
    pub domain: &'a str,
    pub ip: IpAddr,
    pub helo: &'a str,
    /// `%{r}`: our own name.
    pub receiver: &'a str,
    /// `%{p}`: the validated name, when the string uses it (else "unknown").
    pub validated: Option<&'a str>,
}

impl MacroString {
    /// `macro-string` (`explain` false) or `explain-string` (also spaces, and `c`, `r`, `t`).
    pub fn parse(text: &str, explain: bool) -> Result<MacroString, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if c != '%' {
                // macro-literal = %x21-24 / %x26-7E; an explanation has spaces too.
                if !(('!'..='~').contains(&c) || (explain && c == ' ')) {
                    return Err(format!("character {c:?} in a macro string"));
                }
                literal.push(c);
                rest = &rest[1..];
                continue;
            }
            let escape = match rest.as_bytes().get(1) {
                Some(b'%') => Some("%"),
                Some(b'_') => Some(" "),
                Some(b'-') => Some("%20"),
                Some(b'{') => None,
                _ => return Err("'%' not followed by '{', '%', '_' or '-'".into()),
            };
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            if let Some(e) = escape {
                parts.push(Part::Escape(e));
                rest = &rest[2..];
                continue;
            }
            let end = rest.find('}').ok_or("unclosed macro")?;
            parts.push(expand(&rest[2..end], explain)?);
            rest = &rest[end + 1..];
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(MacroString(parts))
    }

    /// Does it end in a macro (`domain-end` may be one, RFC 7208 7.1)?
    pub fn ends_with_macro(&self) -> bool {
        matches!(self.0.last(), Some(Part::Macro { .. } | Part::Escape(_)))
    }

    /// Does it use `%{p}` (which takes DNS lookups to know)?
    pub fn uses_validated(&self) -> bool {
        self.0.iter().any(|p| {
            matches!(
                p,
                Part::Macro {
                    letter: Letter::Validated,
                    ..
                }
            )
        })
    }

    pub fn expand(&self, v: &Values<'_>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Escape(e) => out.push_str(e),
                Part::Macro {
                    letter,
                    escape,
                    keep,
                    reverse,
                    delimiters,
                } => {
                    let value = value(*letter, v);
                    let mut parts: Vec<&str> = value.split(|c| delimiters.contains(c)).collect();
                    if *reverse {
                        parts.reverse();
                    }
                    if let Some(n) = keep {
                        parts.drain(..parts.len().saturating_sub(*n));
                    }
                    let joined = parts.join(".");
                    if *escape {
                        url_encode(&joined, &mut out);
                    } else {
                        out.push_str(&joined);
                    }
                }
            }
        }
        out
    }
}

/// The inside of `%{...}`: `macro-letter transformers *delimiter`.
fn expand(inside: &str, explain: bool) -> Result<Part, String> {
    let mut chars = inside.chars();
    let c = chars.next().ok_or("empty macro")?;
    let letter = match c.to_ascii_lowercase() {
        's' => Letter::Sender,
        'l' => Letter::Local,
        'o' => Letter::SenderDomain,
        'd' => Letter::Domain,
        'i' => Letter::Ip,
        'p' => Letter::Validated,
        'v' => Letter::Version,
        'h' => Letter::Helo,
        'c' if explain => Letter::Client,
        'r' if explain => Letter::Receiver,
        't' if explain => Letter::Time,
        _ => return Err(format!("no macro letter {c:?} here")),
    };
    let rest = chars.as_str();
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    // RFC 7208 7.3: a DIGIT transformer is not zero.
    let keep = match &rest[..digits] {
        "" => None,
        n => match n.parse::<usize>() {
            Ok(0) => return Err("a macro keeps zero parts".into()),
            Ok(n) => Some(n.min(128)),
            Err(_) => Some(128),
        },
    };
    let rest = &rest[digits..];
    let (reverse, delimiters) = match rest.strip_prefix(['r', 'R']) {
        Some(d) => (true, d),
        None => (false, rest),
    };
    if !delimiters.chars().all(|d| ".-+,/_=".contains(d)) {
        return Err(format!("bad macro delimiters {delimiters:?}"));
    }
    Ok(Part::Macro {
        letter,
        escape: c.is_ascii_uppercase(),
        keep,
        reverse,
        delimiters: if delimiters.is_empty() {
            ".".into()
        } else {
            delimiters.into()
        },
    })
}

fn value(letter: Letter, v: &Values<'_>) -> String {
    let local = || match v.sender.rsplit_once('@') {
        Some((l, _)) if !l.is_empty() => l.to_string(),
        _ => "postmaster".into(),
    };
    match letter {
        Letter::Sender => format!("{}@{}", local(), sender_domain(v)),
        Letter::Local => local(),
        Letter::SenderDomain => sender_domain(v),
        Letter::Domain => v.domain.to_string(),
        // RFC 7208 7.3: IPv6 as dotted nibbles.
        Letter::Ip => match v.ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => nibbles(&ip.octets()),
        },
        Letter::Validated => v.validated.unwrap_or("unknown").to_string(),
        Letter::Version => match v.ip {
            IpAddr::V4(_) => "in-addr".into(),
            IpAddr::V6(_) => "ip6".into(),
        },
        Letter::Helo => v.helo.to_string(),
        Letter::Client => v.ip.to_string(),
        Letter::Receiver => v.receiver.to_string(),
        Letter::Time => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string(),
    }
}

fn sender_domain(v: &Values<'_>) -> String {
    v.sender
        .rsplit_once('@')
        .map_or(v.helo, |(_, d)| d)
        .to_string()
}

/// `1.0.0.0.…` for an IPv6 address: each nibble, high first, dot-separated.
fn nibbles(octets: &[u8; 16]) -> String {
    let mut out = String::with_capacity(63);
    for b in octets {
        for n in [b >> 4, b & 0xF] {
            if !out.is_empty() {
                out.push('.');
            }
            let _ = write!(out, "{n:x}");
        }
    }
    out
}

/// RFC 3986 2.3: unreserved characters stay, the rest as `%XX`.
fn url_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(m: &str, explain: bool) -> String {
        let values = Values {
            sender: "strong-bad@email.example.com",
            domain: "email.example.com",
            ip: "192.0.2.3".parse().unwrap(),
            helo: "mx.example.org",
            receiver: "mx.test",
            validated: None,
        };
        MacroString::parse(m, explain).unwrap().expand(&values)
    }

    /// RFC 7208 7.4's examples.
    #[test]
    fn the_rfc_examples() {
        assert_eq!(expand("%{s}", false), "strong-bad@email.example.com");
        assert_eq!(expand("%{o}", false), "email.example.com");
        assert_eq!(expand("%{d4}", false), "email.example.com");
        assert_eq!(expand("%{d3}", false), "email.example.com");
        assert_eq!(expand("%{d2}", false), "example.com");
        assert_eq!(expand("%{d1}", false), "com");
        assert_eq!(expand("%{dr}", false), "com.example.email");
        assert_eq!(expand("%{d2r}", false), "example.email");
        assert_eq!(expand("%{l}", false), "strong-bad");
        assert_eq!(expand("%{l-}", false), "strong.bad");
        assert_eq!(expand("%{lr}", false), "strong-bad");
        assert_eq!(expand("%{lr-}", false), "bad.strong");
        assert_eq!(expand("%{l1r-}", false), "strong");
        assert_eq!(
            expand("%{ir}.%{v}._spf.%{d2}", false),
            "3.2.0.192.in-addr._spf.example.com"
        );
        assert_eq!(
            expand("%{lr-}.lp._spf.%{d2}", false),
            "bad.strong.lp._spf.example.com"
        );
        assert_eq!(expand("%{S}", false), "strong-bad%40email.example.com");
        assert_eq!(expand("%%%_%-", false), "% %20");
        assert_eq!(
            expand("from %{c} to %{r}", true),
            "from 192.0.2.3 to mx.test"
        );
    }

    #[test]
    fn syntax_errors() {
        for bad in ["%{d0}", "%{x}", "%{c}", "%{d", "%a", "%", "a b", "%{d2r!}"] {
            assert!(MacroString::parse(bad, false).is_err(), "{bad}");
        }
        assert!(MacroString::parse("%{c} %{t}", true).is_ok());
    }
}
