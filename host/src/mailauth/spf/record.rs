//! SPF records as RFC 7208 12 writes them: a record that does not follow that grammar
//! is a syntax error, and check_host() then answers `permerror` (RFC 7208 4.6), however
//! well the rest of it would evaluate.

use super::macros::MacroString;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A mechanism's result when it matches (RFC 7208 4.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    Pass,
    Fail,
    SoftFail,
    Neutral,
}

/// CIDR prefix lengths of `a` and `mx` (RFC 7208 5.6): IPv4's, IPv6's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub v4: u8,
    pub v6: u8,
}

impl Cidr {
    const WHOLE: Cidr = Cidr { v4: 32, v6: 128 };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    All,
    Include(MacroString),
    A(Option<MacroString>, Cidr),
    Mx(Option<MacroString>, Cidr),
    Ptr(Option<MacroString>),
    Ip4(Ipv4Addr, u8),
    Ip6(Ipv6Addr, u8),
    Exists(MacroString),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub qualifier: Qualifier,
    pub mechanism: Mechanism,
}

/// A parsed record: its directives in order, and the two modifiers it may have once each
/// (RFC 7208 6); unknown modifiers are checked and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub directives: Vec<Directive>,
    pub redirect: Option<MacroString>,
    pub exp: Option<MacroString>,
}

/// Is this TXT record an SPF record: `v=spf1` alone or followed by a space (RFC 7208 4.5)?
pub fn is_spf1(record: &[u8]) -> bool {
    record.len() >= 6
        && record[..6].eq_ignore_ascii_case(b"v=spf1")
        && record.get(6).is_none_or(|&b| b == b' ')
}

impl Record {
    /// Parses an SPF record (one that `is_spf1`); `Err`: why it is not valid.
    pub fn parse(record: &[u8]) -> Result<Record, String> {
        // RFC 7208 3.1: SPF records are 7-bit ASCII; terms are separated by spaces only.
        let text = std::str::from_utf8(record).map_err(|_| "not ASCII".to_string())?;
        if let Some(c) = text.chars().find(|c| !(' '..='~').contains(c)) {
            return Err(format!("character {c:?} in the record"));
        }
        if !is_spf1(record) {
            return Err("not an SPF record".into());
        }
        let mut out = Record::default();
        for term in text[6..].split(' ').filter(|t| !t.is_empty()) {
            out.term(term).map_err(|why| format!("{term:?}: {why}"))?;
        }
        Ok(out)
    }

    fn term(&mut self, term: &str) -> Result<(), String> {
        // name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." ), then "=": a modifier.
        let name_len = term
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            .count();
        if term.as_bytes().get(name_len) == Some(&b'=') {
            let (name, value) = (&term[..name_len], &term[name_len + 1..]);
            if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return Err("a modifier's name starts with a letter".into());
            }
            return self.modifier(name, value);
        }
        let (qualifier, rest) = match term.as_bytes()[0] {
            b'+' => (Qualifier::Pass, &term[1..]),
            b'-' => (Qualifier::Fail, &term[1..]),
            b'~' => (Qualifier::SoftFail, &term[1..]),
            b'?' => (Qualifier::Neutral, &term[1..]),
            _ => (Qualifier::Pass, term),
        };
        let mechanism = mechanism(rest)?;
        self.directives.push(Directive {
            qualifier,
            mechanism,
        });
        Ok(())
    }

    fn modifier(&mut self, name: &str, value: &str) -> Result<(), String> {
        let slot = if name.eq_ignore_ascii_case("redirect") {
            &mut self.redirect
        } else if name.eq_ignore_ascii_case("exp") {
            &mut self.exp
        } else {
            // unknown-modifier = name "=" macro-string: checked, then ignored (RFC 7208 6).
            MacroString::parse(value, false)?;
            return Ok(());
        };
        // RFC 7208 6: each at most once.
        if slot.is_some() {
            return Err(format!("{name} appears twice"));
        }
        *slot = Some(domain_spec(value)?);
        Ok(())
    }
}

fn mechanism(term: &str) -> Result<Mechanism, String> {
    let name_len = term.find([':', '/']).unwrap_or(term.len());
    let (name, rest) = term.split_at(name_len);
    let name = name.to_ascii_lowercase();
    // `name:arg` or just `name`, with what follows it (CIDR lengths).
    let arg = |rest: &str| rest.strip_prefix(':').map(str::to_string);
    match name.as_str() {
        "all" if rest.is_empty() => Ok(Mechanism::All),
        "include" | "exists" => {
            let spec = domain_spec(rest.strip_prefix(':').ok_or("needs a domain")?)?;
            Ok(if name == "include" {
                Mechanism::Include(spec)
            } else {
                Mechanism::Exists(spec)
            })
        }
        "ptr" => {
            let spec = match arg(rest) {
                Some(spec) => Some(domain_spec(&spec)?),
                None if rest.is_empty() => None,
                None => return Err("bad argument".into()),
            };
            Ok(Mechanism::Ptr(spec))
        }
        "a" | "mx" => {
            let (spec, cidr) = dual_cidr(rest)?;
            let spec = match spec.strip_prefix(':') {
                Some(spec) => Some(domain_spec(spec)?),
                None if spec.is_empty() => None,
                None => return Err("bad argument".into()),
            };
            Ok(if name == "a" {
                Mechanism::A(spec, cidr)
            } else {
                Mechanism::Mx(spec, cidr)
            })
        }
        "ip4" | "ip6" => {
            let network = rest.strip_prefix(':').ok_or("needs a network")?;
            let max = if name == "ip4" { 32 } else { 128 };
            let (addr, len) = match network.rsplit_once('/') {
                Some((addr, len)) => (addr, cidr_length(len, max)?),
                None => (network, max),
            };
            if name == "ip4" {
                let addr = addr.parse().map_err(|_| "bad IPv4 address")?;
                Ok(Mechanism::Ip4(addr, len))
            } else {
                // RFC 4291 2.2 text, an embedded IPv4 address included; not an IPv4 one.
                let addr = addr.parse().map_err(|_| "bad IPv6 address")?;
                Ok(Mechanism::Ip6(addr, len))
            }
        }
        _ => Err("unknown mechanism".into()),
    }
}

/// `ip4-cidr-length` / `ip6-cidr-length`: "0", or a number without a leading zero, at
/// most `max` (RFC 7208 5.6; 0 is allowed and matches every address).
fn cidr_length(len: &str, max: u8) -> Result<u8, String> {
    let digits = !len.is_empty() && len.len() <= 3 && len.bytes().all(|b| b.is_ascii_digit());
    if !digits || (len.len() > 1 && len.starts_with('0')) {
        return Err(format!("bad prefix length {len:?}"));
    }
    match len.parse::<u8>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("prefix length {len} past {max}")),
    }
}

/// `[ ":" domain-spec ] dual-cidr-length`: the part before the lengths, and the lengths
/// (`/24`, `//64`, `/24//64`; none: the whole address).
fn dual_cidr(rest: &str) -> Result<(&str, Cidr), String> {
    let mut cidr = Cidr::WHOLE;
    let mut rest = rest;
    let tail = |s: &str| {
        s.rfind('/')
            .filter(|&i| s[i + 1..].bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(i) = tail(rest)
        && i > 0
        && rest.as_bytes()[i - 1] == b'/'
    {
        cidr.v6 = cidr_length(&rest[i + 1..], 128)?;
        rest = &rest[..i - 1];
    }
    if let Some(i) = tail(rest) {
        cidr.v4 = cidr_length(&rest[i + 1..], 32)?;
        rest = &rest[..i];
    }
    Ok((rest, cidr))
}

/// `domain-spec = macro-string domain-end`, where `domain-end` is `"." toplabel ["."]`
/// or a macro (RFC 7208 7.1).
fn domain_spec(spec: &str) -> Result<MacroString, String> {
    let parsed = MacroString::parse(spec, false)?;
    if !parsed.ends_with_macro() {
        let name = spec.strip_suffix('.').unwrap_or(spec);
        let Some((_, top)) = name.rsplit_once('.') else {
            return Err(format!("{spec:?} is not a domain name"));
        };
        if !is_toplabel(top) {
            return Err(format!("{top:?} is not a top-level label"));
        }
    }
    Ok(parsed)
}

/// `toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" )
/// alphanum )`: not all digits, and a hyphen only inside.
pub fn is_toplabel(label: &str) -> bool {
    let b = label.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) if alnum(first) && alnum(last) => {
            b.iter().all(|c| alnum(c) || *c == b'-')
                && (b.contains(&b'-') || b.iter().any(u8::is_ascii_alphabetic))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(r: &str) -> Record {
        Record::parse(r.as_bytes()).unwrap_or_else(|e| panic!("{r}: {e}"))
    }

    #[test]
    fn valid_records() {
        let r = ok("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a/24 mx:x.test/24//64 -all");
        assert_eq!(r.directives.len(), 5);
        assert_eq!(
            r.directives[0].mechanism,
            Mechanism::Ip4([192, 0, 2, 0].into(), 24)
        );
        assert!(matches!(
            r.directives[3].mechanism,
            Mechanism::Mx(Some(_), Cidr { v4: 24, v6: 64 })
        ));
        assert_eq!(r.directives[4].qualifier, Qualifier::Fail);
        ok("v=spf1 ip4:0.0.0.0/0 ip6:::/0 a//0 ~all ");
        ok("V=SPF1 a:%{d}.x.test exists:%{ir}.%{v}._spf.%{d2} include:x.test.");
        ok("v=spf1 foo-bar.baz=%{l} redirect=x.test exp=%{d}");
        ok("v=spf1 a:foo:bar/baz.example.com mx:%{d}");
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "v=spf1 ip4:1.2.3.4/032",
            "v=spf1 ip4:1.2.3",
            "v=spf1 ip4:01.2.3.4",
            "v=spf1 ip6:1.2.3.4",
            "v=spf1 a/33",
            "v=spf1 mx//129",
            "v=spf1 a:foo",
            "v=spf1 a:example.com:8080",
            "v=spf1 a:foo.123",
            "v=spf1 mx:foo.-bar",
            "v=spf1 -all\tfoo",
            "v=spf1 =x",
            "v=spf1 1x=y",
            "v=spf1 exp=a.test exp=b.test",
            "v=spf1 redirect=",
            "v=spf1 redirect=%{q}.x.test",
            "v=spf1 x=%{",
            "v=spf1 all:x.test",
            "v=spf1 include",
            "v=spf1 foo",
            "v=spf1 a:\u{e9}.test",
        ] {
            assert!(Record::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn top_labels() {
        assert!(is_toplabel("com") && is_toplabel("x1") && is_toplabel("1-2"));
        assert!(
            !is_toplabel("123") && !is_toplabel("-a") && !is_toplabel("a-") && !is_toplabel("")
        );
    }
}
