//! ESMTP parameters of MAIL and RCPT and their wire form: SIZE (RFC 1870), BODY (RFC 6152),
//! SMTPUTF8 (RFC 6531), DSN's RET/ENVID/NOTIFY/ORCPT (RFC 3461), AUTH= (RFC 4954 5),
//! REQUIRETLS (RFC 8689 3). Parsed
//! for the session; rendered back for plugins (as received) and for the delivery client.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a parameter was refused; `command::ParseError` turns it into its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamError {
    /// A parameter we do not advertise (555).
    Unknown(String),
    /// A known parameter with a bad value, or given twice (501).
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    #[serde(rename = "7BIT")]
    SevenBit,
    #[serde(rename = "8BITMIME")]
    EightBitMime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    #[serde(rename = "FULL")]
    Full,
    #[serde(rename = "HDRS")]
    Hdrs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailParams {
    pub size: Option<u64>,
    pub body: Option<Body>,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// ENVID as xtext, exactly as received (RFC 3461 4.4).
    pub envid: Option<String>,
    /// AUTH= mailbox as xtext (RFC 4954 5); recorded, not trusted.
    pub auth: Option<String>,
    /// REQUIRETLS (RFC 8689): relay only over TLS validated by MTA-STS or DANE (or a
    /// route's own trust anchors), to hops that offer REQUIRETLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requiretls: bool,
}

/// NOTIFY values (RFC 3461 4.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    pub fn to_param(&self) -> String {
        if self.never {
            return "NEVER".into();
        }
        let mut v = Vec::new();
        if self.success {
            v.push("SUCCESS");
        }
        if self.failure {
            v.push("FAILURE");
        }
        if self.delay {
            v.push("DELAY");
        }
        v.join(",")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// ORCPT as `addr-type;xtext`, exactly as received (RFC 3461 4.2).
    pub orcpt: Option<String>,
}

/// The ESMTP keywords we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    Size,
    Body,
    SmtpUtf8,
    Ret,
    Envid,
    Auth,
    Notify,
    Orcpt,
    RequireTls,
}

impl Keyword {
    pub fn as_str(self) -> &'static str {
        match self {
            Keyword::Size => "SIZE",
            Keyword::Body => "BODY",
            Keyword::SmtpUtf8 => "SMTPUTF8",
            Keyword::Ret => "RET",
            Keyword::Envid => "ENVID",
            Keyword::Auth => "AUTH",
            Keyword::Notify => "NOTIFY",
            Keyword::Orcpt => "ORCPT",
            Keyword::RequireTls => "REQUIRETLS",
        }
    }
}

/// One parameter in its wire form: `KEYWORD` or `KEYWORD=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub keyword: Keyword,
    pub value: Option<String>,
}

impl Param {
    fn new(keyword: Keyword, value: Option<String>) -> Param {
        Param { keyword, value }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.keyword.as_str())?;
        match &self.value {
            Some(v) => write!(f, "={v}"),
            None => Ok(()),
        }
    }
}

impl Body {
    pub fn as_str(self) -> &'static str {
        match self {
            Body::SevenBit => "7BIT",
            Body::EightBitMime => "8BITMIME",
        }
    }
}

impl Ret {
    pub fn as_str(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

impl MailParams {
    /// Parses the parameters after `MAIL FROM:<path>`.
    pub fn parse(params: &str) -> Result<MailParams, ParamError> {
        let mut p = MailParams::default();
        for (key, value) in split_params(params)? {
            let dup = || ParamError::Invalid(format!("{key} (duplicate)"));
            let bad = || ParamError::Invalid(key.clone());
            match (key.as_str(), value) {
                ("SIZE", Some(v)) => {
                    if p.size.is_some() {
                        return Err(dup());
                    }
                    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(bad());
                    }
                    p.size = Some(v.parse().map_err(|_| bad())?);
                }
                ("BODY", Some(v)) => {
                    if p.body.is_some() {
                        return Err(dup());
                    }
                    p.body = Some(match v.to_ascii_uppercase().as_str() {
                        "7BIT" => Body::SevenBit,
                        "8BITMIME" => Body::EightBitMime,
                        _ => return Err(bad()),
                    });
                }
                ("SMTPUTF8", None) => p.smtputf8 = true,
                ("REQUIRETLS", None) if p.requiretls => return Err(dup()),
                ("REQUIRETLS", None) => p.requiretls = true,
                // RFC 8689 3: a keyword without a value.
                ("REQUIRETLS", Some(_)) => return Err(bad()),
                ("RET", Some(v)) => {
                    if p.ret.is_some() {
                        return Err(dup());
                    }
                    p.ret = Some(match v.to_ascii_uppercase().as_str() {
                        "FULL" => Ret::Full,
                        "HDRS" => Ret::Hdrs,
                        _ => return Err(bad()),
                    });
                }
                ("ENVID", Some(v)) => {
                    if p.envid.is_some() {
                        return Err(dup());
                    }
                    // RFC 3461 4.4: at most 100 characters, xtext of printable US-ASCII.
                    if v.len() > 100 || decode_xtext(v).is_none() {
                        return Err(bad());
                    }
                    p.envid = Some(v.to_string());
                }
                ("AUTH", Some(v)) => {
                    if p.auth.is_some() {
                        return Err(dup());
                    }
                    // RFC 4954 5: xtext (printable once decoded), or "<>".
                    if v.len() > 500 || (decode_xtext(v).is_none() && v != "<>") {
                        return Err(bad());
                    }
                    p.auth = Some(v.to_string());
                }
                _ => return Err(ParamError::Unknown(key)),
            }
        }
        Ok(p)
    }

    /// The parameters as received, in wire form and wire order.
    pub fn to_wire(&self) -> Vec<Param> {
        let mut out = Vec::new();
        if let Some(size) = self.size {
            out.push(Param::new(Keyword::Size, Some(size.to_string())));
        }
        if let Some(body) = self.body {
            out.push(Param::new(Keyword::Body, Some(body.as_str().into())));
        }
        if self.smtputf8 {
            out.push(Param::new(Keyword::SmtpUtf8, None));
        }
        if let Some(ret) = self.ret {
            out.push(Param::new(Keyword::Ret, Some(ret.as_str().into())));
        }
        if let Some(envid) = &self.envid {
            out.push(Param::new(Keyword::Envid, Some(envid.clone())));
        }
        if let Some(auth) = &self.auth {
            out.push(Param::new(Keyword::Auth, Some(auth.clone())));
        }
        if self.requiretls {
            out.push(Param::new(Keyword::RequireTls, None));
        }
        out
    }
}

impl RcptParams {
    /// Parses the parameters after `RCPT TO:<path>`.
    pub fn parse(params: &str) -> Result<RcptParams, ParamError> {
        let mut p = RcptParams::default();
        for (key, value) in split_params(params)? {
            let dup = || ParamError::Invalid(format!("{key} (duplicate)"));
            let bad = || ParamError::Invalid(key.clone());
            match (key.as_str(), value) {
                ("NOTIFY", Some(v)) => {
                    if p.notify.is_some() {
                        return Err(dup());
                    }
                    let mut n = Notify::default();
                    for item in v.split(',') {
                        match item.to_ascii_uppercase().as_str() {
                            "NEVER" => n.never = true,
                            "SUCCESS" => n.success = true,
                            "FAILURE" => n.failure = true,
                            "DELAY" => n.delay = true,
                            _ => return Err(bad()),
                        }
                    }
                    // RFC 3461 4.1: NEVER excludes the others.
                    if n.never && (n.success || n.failure || n.delay) {
                        return Err(bad());
                    }
                    p.notify = Some(n);
                }
                ("ORCPT", Some(v)) => {
                    if p.orcpt.is_some() {
                        return Err(dup());
                    }
                    let (addr_type, addr) = v.split_once(';').ok_or_else(bad)?;
                    let atom_ok = !addr_type.is_empty()
                        && addr_type
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
                    // RFC 3461 4.2: at most 500 characters, xtext of printable US-ASCII.
                    if !atom_ok || v.len() > 500 || addr.is_empty() || decode_xtext(addr).is_none()
                    {
                        return Err(bad());
                    }
                    p.orcpt = Some(v.to_string());
                }
                _ => return Err(ParamError::Unknown(key)),
            }
        }
        Ok(p)
    }

    /// The parameters as received, in wire form and wire order.
    pub fn to_wire(&self) -> Vec<Param> {
        let mut out = Vec::new();
        if let Some(n) = &self.notify {
            out.push(Param::new(Keyword::Notify, Some(n.to_param())));
        }
        if let Some(o) = &self.orcpt {
            out.push(Param::new(Keyword::Orcpt, Some(o.clone())));
        }
        out
    }
}

/// Splits `SP key[=value]` parameters; keys are returned upper-cased.
fn split_params(s: &str) -> Result<Vec<(String, Option<&str>)>, ParamError> {
    let mut out = Vec::new();
    for item in s.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ParamError::Invalid(item.to_string()));
        }
        out.push((key.to_ascii_uppercase(), value));
    }
    Ok(out)
}

/// xtext of RFC 3461 4: printable ASCII but `+` and `=`, with `+HH` (upper-case hex) escapes.
pub fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
                if i + 2 >= b.len() || !(hex(b[i + 1]) && hex(b[i + 2])) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            33..=126 => i += 1,
            _ => return false,
        }
    }
    true
}

/// Decodes xtext (RFC 3461 4: `+HH` is the octet HH); `None` unless it is xtext and decodes
/// to printable US-ASCII, as ENVID and ORCPT must (RFC 3461 4.2, 4.4). What it returns is
/// safe to write into a header field: no CR, LF or other control.
pub fn decode_xtext(s: &str) -> Option<String> {
    if !is_xtext(s) {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let byte = if c == '+' {
            let v = u8::from_str_radix(rest.get(1..3)?, 16).ok()?;
            rest = &rest[3..];
            v
        } else {
            rest = &rest[1..];
            c as u8
        };
        if !(b' '..=b'~').contains(&byte) {
            return None;
        }
        out.push(byte as char);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext() {
        assert_eq!(decode_xtext("a+2Bb+40c").as_deref(), Some("a+b@c"));
        assert_eq!(decode_xtext("tail+4"), None);
        // RFC 3461 4.2, 4.4: what decodes to a control is refused (header injection).
        assert_eq!(decode_xtext("x+0D+0AX-Injected:+20yes"), None);
        assert_eq!(decode_xtext("a+7F"), None);
        assert_eq!(decode_xtext("a+20b").as_deref(), Some("a b"));
        assert!(is_xtext("a+2Bb") && !is_xtext("a=b") && !is_xtext("a+2"));
    }

    #[test]
    fn wire_form_round_trips() {
        for line in [
            "SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1 AUTH=<>",
            "BODY=7BIT REQUIRETLS",
            "",
        ] {
            let p = MailParams::parse(line).unwrap();
            let wire: Vec<String> = p.to_wire().iter().map(ToString::to_string).collect();
            assert_eq!(wire.join(" "), line);
        }
        let r = RcptParams::parse("NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x+40y.z").unwrap();
        let wire: Vec<String> = r.to_wire().iter().map(ToString::to_string).collect();
        assert_eq!(wire.join(" "), "NOTIFY=SUCCESS,DELAY ORCPT=rfc822;x+40y.z");
    }
}
