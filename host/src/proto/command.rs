//! SMTP command lines (RFC 5321 4.1.1); their ESMTP parameters are parsed in `params`.

use super::address::{AddressError, Mailbox, parse_path};
use super::params::{MailParams, ParamError, RcptParams};
use super::replies;
use super::reply::{EnhancedCode as E, Reply};

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
    /// RFC 2645: the domains to collect (none: all of the user's).
    Atrn(Vec<String>),
    /// SEND, SOML, SAML, TURN: answered 502 5.5.1 (seed advice; RFC 5321 4.1.3 Appendix F).
    Obsolete,
}

/// The argument of RCPT TO: a mailbox, or the bare `<Postmaster>` of RFC 5321 4.5.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptPath {
    Mailbox(Mailbox),
    Postmaster,
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

impl From<ParamError> for ParseError {
    fn from(e: ParamError) -> ParseError {
        match e {
            ParamError::Unknown(key) => ParseError::UnknownParam(key),
            ParamError::Invalid(what) => ParseError::InvalidParam(what),
        }
    }
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
        // RFC 2645 4.2.2: "ATRN" [SP domain *("," domain)].
        "ATRN" if arg_trimmed.is_empty() => Ok(Command::Atrn(Vec::new())),
        "ATRN" => {
            let domains: Vec<String> = arg_trimmed
                .split(',')
                .map(|d| d.trim().to_string())
                .collect();
            if domains.iter().any(|d| !super::address::is_domain(d)) {
                return Err(ParseError::Syntax("ATRN domain[,domain...]"));
            }
            Ok(Command::Atrn(domains))
        }
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
    let p = MailParams::parse(params)?;
    Ok(Command::Mail(from, p))
}

fn parse_rcpt(arg: &str) -> Result<Command, ParseError> {
    const USAGE: &str = "RCPT TO:<address> [parameters]";
    let rest = strip_keyword(arg, "TO:").ok_or(ParseError::Syntax(USAGE))?;
    let trimmed = rest.trim_start_matches(' ');
    // RFC 5321 4.1.1.3: "<Postmaster>" without a domain, case-insensitive.
    let (path, params) = match trimmed.get(..12) {
        Some(head) if head.eq_ignore_ascii_case("<postmaster>") => {
            let params = &trimmed[12..];
            if !params.is_empty() && !params.starts_with(' ') {
                return Err(ParseError::Syntax(USAGE));
            }
            (RcptPath::Postmaster, params)
        }
        _ => match parse_path(trimmed).map_err(ParseError::Recipient)? {
            (Some(mailbox), params) => (RcptPath::Mailbox(mailbox), params),
            (None, _) => return Err(ParseError::Recipient(AddressError::Syntax)),
        },
    };
    let p = RcptParams::parse(params)?;
    Ok(Command::Rcpt(path, p))
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
    use super::super::params::{Body, Ret};
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
            ("ATRN", Command::Atrn(Vec::new())),
            (
                "atrn a.test,B.test",
                Command::Atrn(vec!["a.test".into(), "B.test".into()]),
            ),
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
            (
                "RCPT TO:<Postmaster>NOTIFY=NEVER",
                ParseError::Syntax("RCPT TO:<address> [parameters]"),
            ),
            (
                "MAIL FROM:<a@b> AUTH=<> AUTH=<>",
                ParseError::InvalidParam("AUTH (duplicate)".into()),
            ),
            (
                "MAIL FROM:<a@b> AUTH=a+0D+0A",
                ParseError::InvalidParam("AUTH".into()),
            ),
            (
                "MAIL FROM:<a\u{85}b@c.d>",
                ParseError::Sender(AddressError::Syntax),
            ),
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
