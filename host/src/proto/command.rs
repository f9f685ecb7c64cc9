//! SMTP command lines (RFC 5321 4.1.1) and ESMTP parameters: SIZE (RFC 1870), BODY (RFC 6152),
//! SMTPUTF8 (RFC 6531), DSN's RET/ENVID/NOTIFY/ORCPT (RFC 3461), AUTH= (RFC 4954 5).

use super::address::{AddressError, Mailbox, parse_path};
use super::replies;
use super::reply::{EnhancedCode as E, Reply};
use serde::{Deserialize, Serialize};

/// RFC 5321 4.5.3.1.4: 512 octets for a command line including CRLF.
pub const MAX_COMMAND_LINE: usize = 512;
/// MAIL and RCPT may grow with extension parameters (RFC 5321 4.5.3.1.4, RFC 3461 4, RFC 4954 5).
pub const MAX_MAIL_RCPT_LINE: usize = 2048;
/// RFC 4954 4: AUTH lines, including SASL responses, up to 12288 octets.
pub const MAX_AUTH_LINE: usize = 12288;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    Mail(Option<Mailbox>, MailParams),
    Rcpt(RcptPath, RcptParams),
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy(String),
    Expn(String),
    StartTls,
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    Etrn(String),
    /// SEND, SOML, SAML, TURN: answered 502 5.5.1 (seed advice; RFC 5321 4.1.3 Appendix F).
    Obsolete,
}

/// The argument of RCPT TO: a mailbox, or the bare `<Postmaster>` of RFC 5321 4.5.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptPath {
    Mailbox(Mailbox),
    Postmaster,
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

/// Why a command line was refused, and the reply it becomes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command")]
    Unknown,
    #[error("syntax: {0}")]
    Syntax(&'static str),
    #[error("bad sender address: {0}")]
    Sender(AddressError),
    #[error("bad recipient address: {0}")]
    Recipient(AddressError),
    #[error("unrecognized parameter {0}")]
    UnknownParam(String),
    #[error("invalid parameter {0}")]
    InvalidParam(String),
}

impl ParseError {
    pub fn reply(&self) -> Reply {
        match self {
            ParseError::Unknown => replies::UNKNOWN_COMMAND,
            ParseError::Syntax(usage) => Reply::dynamic(501, 5, 4, format!("Syntax: {usage}")),
            ParseError::Sender(e) => Reply::dynamic(501, 1, 7, format!("Bad sender address: {e}")),
            ParseError::Recipient(e) => {
                Reply::dynamic(501, 1, 3, format!("Bad recipient address: {e}"))
            }
            ParseError::UnknownParam(p) => {
                Reply::new(555, E(5, 5, 4), "").with_text(format!("Unsupported parameter {p}"))
            }
            ParseError::InvalidParam(p) => {
                Reply::dynamic(501, 5, 4, format!("Invalid parameter {p}"))
            }
        }
    }
}

/// The maximum line length for a command starting with this line (see the constants above).
pub fn line_limit(line: &[u8]) -> usize {
    let verb = line.get(..4).map(|v| v.to_ascii_uppercase());
    match verb.as_deref() {
        Some(b"MAIL") | Some(b"RCPT") => MAX_MAIL_RCPT_LINE,
        Some(b"AUTH") => MAX_AUTH_LINE,
        _ => MAX_COMMAND_LINE,
    }
}

/// Parses one command line without its CRLF.
pub fn parse_command(line: &str) -> Result<Command, ParseError> {
    let (verb, arg) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let arg_trimmed = arg.trim();
    let verb = verb.to_ascii_uppercase();
    let no_arg = |cmd: Command, usage: &'static str| {
        if arg_trimmed.is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::Syntax(usage))
        }
    };
    match verb.as_str() {
        "HELO" | "EHLO" => {
            if arg_trimmed.is_empty() || arg_trimmed.contains(' ') {
                return Err(ParseError::Syntax(if verb == "HELO" {
                    "HELO hostname"
                } else {
                    "EHLO hostname"
                }));
            }
            let name = arg_trimmed.to_string();
            Ok(if verb == "HELO" {
                Command::Helo(name)
            } else {
                Command::Ehlo(name)
            })
        }
        "MAIL" => parse_mail(arg),
        "RCPT" => parse_rcpt(arg),
        "DATA" => no_arg(Command::Data, "DATA"),
        "BDAT" => parse_bdat(arg_trimmed),
        "RSET" => no_arg(Command::Rset, "RSET"),
        // RFC 5321 4.1.1.9: NOOP may carry a string, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_arg(Command::Quit, "QUIT"),
        "HELP" => Ok(Command::Help),
        "VRFY" | "EXPN" if arg_trimmed.is_empty() => Err(ParseError::Syntax(if verb == "VRFY" {
            "VRFY user"
        } else {
            "EXPN list"
        })),
        "VRFY" => Ok(Command::Vrfy(arg_trimmed.to_string())),
        "EXPN" => Ok(Command::Expn(arg_trimmed.to_string())),
        "STARTTLS" => no_arg(Command::StartTls, "STARTTLS"),
        "AUTH" => {
            let mut parts = arg_trimmed.split_ascii_whitespace();
            let mechanism = parts
                .next()
                .ok_or(ParseError::Syntax("AUTH mechanism [initial-response]"))?
                .to_ascii_uppercase();
            let initial = parts.next().map(str::to_string);
            if parts.next().is_some() {
                return Err(ParseError::Syntax("AUTH mechanism [initial-response]"));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        "ETRN" if arg_trimmed.is_empty() => Err(ParseError::Syntax("ETRN domain")),
        "ETRN" => Ok(Command::Etrn(arg_trimmed.to_string())),
        "SEND" | "SOML" | "SAML" | "TURN" => Ok(Command::Obsolete),
        _ => Err(ParseError::Unknown),
    }
}

/// Strips `FROM:`/`TO:` case-insensitively; tolerates a space after the colon as many
/// clients send one (RFC 5321 4.1.2 has none, Postfix and Exim accept it).
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg[keyword.len()..].trim_start_matches(' '))
}

fn parse_mail(arg: &str) -> Result<Command, ParseError> {
    const USAGE: &str = "MAIL FROM:<address> [parameters]";
    let rest = strip_keyword(arg, "FROM:").ok_or(ParseError::Syntax(USAGE))?;
    let (from, params) = parse_path(rest).map_err(ParseError::Sender)?;
    let mut p = MailParams::default();
    for (key, value) in split_params(params)? {
        let dup = || ParseError::InvalidParam(format!("{key} (duplicate)"));
        let bad = || ParseError::InvalidParam(key.clone());
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
                // RFC 3461 4.4: at most 100 characters, xtext.
                if v.len() > 100 || !is_xtext(v) {
                    return Err(bad());
                }
                p.envid = Some(v.to_string());
            }
            ("AUTH", Some(v)) => {
                if !is_xtext(v) && v != "<>" {
                    return Err(bad());
                }
                p.auth = Some(v.to_string());
            }
            _ => return Err(ParseError::UnknownParam(key)),
        }
    }
    Ok(Command::Mail(from, p))
}

fn parse_rcpt(arg: &str) -> Result<Command, ParseError> {
    const USAGE: &str = "RCPT TO:<address> [parameters]";
    let rest = strip_keyword(arg, "TO:").ok_or(ParseError::Syntax(USAGE))?;
    let trimmed = rest.trim_start_matches(' ');
    // RFC 5321 4.1.1.3: "<Postmaster>" without a domain, case-insensitive.
    let (path, params) = match trimmed.get(..12) {
        Some(head) if head.eq_ignore_ascii_case("<postmaster>") => {
            (RcptPath::Postmaster, &trimmed[12..])
        }
        _ => match parse_path(trimmed).map_err(ParseError::Recipient)? {
            (Some(mailbox), params) => (RcptPath::Mailbox(mailbox), params),
            (None, _) => return Err(ParseError::Recipient(AddressError::Syntax)),
        },
    };
    let mut p = RcptParams::default();
    for (key, value) in split_params(params)? {
        let dup = || ParseError::InvalidParam(format!("{key} (duplicate)"));
        let bad = || ParseError::InvalidParam(key.clone());
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
                // RFC 3461 4.2: at most 500 characters.
                if !atom_ok || v.len() > 500 || addr.is_empty() || !is_xtext(addr) {
                    return Err(bad());
                }
                p.orcpt = Some(v.to_string());
            }
            _ => return Err(ParseError::UnknownParam(key)),
        }
    }
    Ok(Command::Rcpt(path, p))
}

/// Splits `SP key[=value]` parameters; keys are returned upper-cased.
fn split_params(s: &str) -> Result<Vec<(String, Option<&str>)>, ParseError> {
    let mut out = Vec::new();
    for item in s.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (item, None),
        };
        // esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ParseError::InvalidParam(item.to_string()));
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

fn parse_bdat(arg: &str) -> Result<Command, ParseError> {
    const USAGE: &str = "BDAT chunk-size [LAST]";
    let mut parts = arg.split_ascii_whitespace();
    let size = parts.next().ok_or(ParseError::Syntax(USAGE))?;
    if size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Syntax(USAGE));
    }
    let size = size.parse().map_err(|_| ParseError::Syntax(USAGE))?;
    let last = match parts.next() {
        None => false,
        Some(l) if l.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(ParseError::Syntax(USAGE)),
    };
    if parts.next().is_some() {
        return Err(ParseError::Syntax(USAGE));
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(s: &str) -> Mailbox {
        super::super::address::parse_mailbox(s).unwrap()
    }

    #[test]
    fn verbs() {
        let ok: &[(&str, Command)] = &[
            ("helo x.y", Command::Helo("x.y".into())),
            ("EhLo x.y", Command::Ehlo("x.y".into())),
            ("data", Command::Data),
            ("RSET", Command::Rset),
            ("NOOP hello there", Command::Noop),
            ("quit", Command::Quit),
            ("HELP mail", Command::Help),
            ("VRFY bob", Command::Vrfy("bob".into())),
            ("expn staff", Command::Expn("staff".into())),
            ("starttls", Command::StartTls),
            ("SEND FROM:<a@b>", Command::Obsolete),
            ("soml", Command::Obsolete),
            ("SAML", Command::Obsolete),
            ("turn", Command::Obsolete),
            ("ETRN example.test", Command::Etrn("example.test".into())),
            (
                "BDAT 0 LAST",
                Command::Bdat {
                    size: 0,
                    last: true,
                },
            ),
            (
                "bdat 100",
                Command::Bdat {
                    size: 100,
                    last: false,
                },
            ),
            (
                "AUTH plain AGEAYg==",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some("AGEAYg==".into()),
                },
            ),
            (
                "RCPT TO:<postMaster>",
                Command::Rcpt(RcptPath::Postmaster, RcptParams::default()),
            ),
            ("MAIL FROM:<>", Command::Mail(None, MailParams::default())),
            (
                "mail from: <a@b.c>",
                Command::Mail(Some(mailbox("a@b.c")), MailParams::default()),
            ),
        ];
        for (line, want) in ok {
            assert_eq!(&parse_command(line).unwrap(), want, "{line}");
        }
        let bad: &[(&str, ParseError)] = &[
            ("FOO", ParseError::Unknown),
            ("HELO", ParseError::Syntax("HELO hostname")),
            ("DATA x", ParseError::Syntax("DATA")),
            ("BDAT x", ParseError::Syntax("BDAT chunk-size [LAST]")),
            ("BDAT 1 FIRST", ParseError::Syntax("BDAT chunk-size [LAST]")),
            (
                "MAIL TO:<a@b>",
                ParseError::Syntax("MAIL FROM:<address> [parameters]"),
            ),
            (
                "MAIL FROM:a@b",
                ParseError::Sender(AddressError::NoBrackets),
            ),
            ("RCPT TO:<>", ParseError::Recipient(AddressError::Syntax)),
            (
                "MAIL FROM:<a@b> FOO=1",
                ParseError::UnknownParam("FOO".into()),
            ),
            (
                "MAIL FROM:<a@b> SIZE=x",
                ParseError::InvalidParam("SIZE".into()),
            ),
            (
                "MAIL FROM:<a@b> SIZE=1 SIZE=2",
                ParseError::InvalidParam("SIZE (duplicate)".into()),
            ),
            (
                "MAIL FROM:<a@b> BODY=BINARYMIME",
                ParseError::InvalidParam("BODY".into()),
            ),
            (
                "MAIL FROM:<a@b> RET=ALL",
                ParseError::InvalidParam("RET".into()),
            ),
            (
                "MAIL FROM:<a@b> ENVID=a=b",
                ParseError::InvalidParam("ENVID".into()),
            ),
            (
                "MAIL FROM:<a@b> ENVID=a+2",
                ParseError::InvalidParam("ENVID".into()),
            ),
            (
                "RCPT TO:<a@b> NOTIFY=NEVER,DELAY",
                ParseError::InvalidParam("NOTIFY".into()),
            ),
            (
                "RCPT TO:<a@b> NOTIFY=SOMETIMES",
                ParseError::InvalidParam("NOTIFY".into()),
            ),
            (
                "RCPT TO:<a@b> ORCPT=rfc822",
                ParseError::InvalidParam("ORCPT".into()),
            ),
            (
                "RCPT TO:<a@b> ORCPT=rfc822;a+zz",
                ParseError::InvalidParam("ORCPT".into()),
            ),
            ("RCPT TO:<a@b> XYZ", ParseError::UnknownParam("XYZ".into())),
        ];
        for (line, want) in bad {
            assert_eq!(&parse_command(line).unwrap_err(), want, "{line}");
        }
    }

    #[test]
    fn dsn_and_size_params() {
        let Command::Mail(_, p) = parse_command(
            "MAIL FROM:<a@b.c> SIZE=1000 BODY=8bitmime SMTPUTF8 RET=HDRS ENVID=QQ+2B1",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(p.size, Some(1000));
        assert_eq!(p.body, Some(Body::EightBitMime));
        assert!(p.smtputf8);
        assert_eq!(p.ret, Some(Ret::Hdrs));
        assert_eq!(p.envid.as_deref(), Some("QQ+2B1"));
        let Command::Rcpt(RcptPath::Mailbox(m), p) =
            parse_command("RCPT TO:<@r.s:x@y.z> NOTIFY=success,failure ORCPT=rfc822;x+40y.z")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(m.to_string(), "x@y.z");
        assert_eq!(p.notify.unwrap().to_param(), "SUCCESS,FAILURE");
        assert_eq!(p.orcpt.as_deref(), Some("rfc822;x+40y.z"));
    }

    #[test]
    fn reply_codes() {
        assert_eq!(ParseError::Unknown.reply().code, 500);
        assert_eq!(ParseError::UnknownParam("X".into()).reply().code, 555);
        let r = ParseError::Sender(AddressError::Syntax).reply();
        assert_eq!((r.code, r.enhanced), (501, Some(E(5, 1, 7))));
    }
}
