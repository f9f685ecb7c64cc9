//! SMTP replies as values (RFC 5321 4.2) with enhanced status codes (RFC 3463, RFC 2034).

use std::borrow::Cow;
use std::fmt;

/// An enhanced status code `class.subject.detail` (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedCode(pub u8, pub u16, pub u16);

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Kept as its text, "5.1.1".
impl serde::Serialize for EnhancedCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EnhancedCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EnhancedCode, D::Error> {
        let text = String::deserialize(d)?;
        parse_enhanced(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not an enhanced code")))
    }
}

/// One SMTP reply: a code, an optional enhanced status code and text.
/// Text containing `\n` becomes a multi-line reply (RFC 5321 4.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<EnhancedCode>,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub const fn new(code: u16, enhanced: EnhancedCode, text: &'static str) -> Reply {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: Cow::Borrowed(text),
        }
    }

    /// A reply whose enhanced code follows the class of `code` with subject and detail given.
    pub fn dynamic(code: u16, subject: u16, detail: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: Some(EnhancedCode((code / 100) as u8, subject, detail)),
            text: Cow::Owned(text.into()),
        }
    }

    /// A reply without an enhanced code: the greeting and HELO/EHLO replies, which come
    /// before the extension is negotiated (RFC 2034 3), and SASL challenges (RFC 4954 4).
    pub fn plain(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            text: Cow::Owned(text.into()),
        }
    }

    /// Same code and enhanced code, other text.
    pub fn with_text(&self, text: impl Into<String>) -> Reply {
        Reply {
            code: self.code,
            enhanced: self.enhanced,
            text: Cow::Owned(text.into()),
        }
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Appends the wire form, CRLF-terminated, one line per text line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut lines = self.text.split('\n').peekable();
        while let Some(line) = lines.next() {
            let sep = if lines.peek().is_some() { '-' } else { ' ' };
            out.extend_from_slice(format!("{}{}", self.code, sep).as_bytes());
            if let Some(e) = self.enhanced {
                out.extend_from_slice(format!("{e} ").as_bytes());
            }
            out.extend_from_slice(line.trim_end_matches('\r').as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Why a next hop's reply could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("bad reply line {0:?}")]
    BadLine(String),
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    #[error("reply of more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
}

/// Longest reply line taken from a server (RFC 5321 4.5.3.1.5 says 512; servers send more).
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines of one reply (an EHLO reply has one per extension).
pub const MAX_REPLY_LINES: usize = 100;

impl Reply {
    /// Parses one reply from the start of `input` (RFC 5321 4.2.1): `Ok(None)` until its last
    /// line is complete, then the reply and the number of octets it took. An enhanced code on
    /// the first line (RFC 2034) is kept apart, and stripped from the other lines.
    pub fn parse(input: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        let mut code = None;
        let mut lines: Vec<String> = Vec::new();
        let mut used = 0;
        loop {
            let rest = &input[used..];
            let Some(end) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() > MAX_REPLY_LINE {
                    return Err(ReplyError::LineTooLong);
                }
                return Ok(None);
            };
            if end > MAX_REPLY_LINE {
                return Err(ReplyError::LineTooLong);
            }
            used += end + 1;
            let raw = &rest[..end];
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let bad = || ReplyError::BadLine(String::from_utf8_lossy(raw).into_owned());
            // RFC 5321 4.2: three digits, the first 2 to 5; then a space (last line), a
            // hyphen (more to come), or nothing; every line with the same code.
            let (this, more) = match raw {
                [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', tail @ ..] => {
                    let this = [a, b, c]
                        .iter()
                        .fold(0u16, |n, d| n * 10 + u16::from(*d - b'0'));
                    match tail.first() {
                        None | Some(b' ') => (this, false),
                        Some(b'-') => (this, true),
                        Some(_) => return Err(bad()),
                    }
                }
                _ => return Err(bad()),
            };
            if *code.get_or_insert(this) != this {
                return Err(bad());
            }
            lines.push(clean_text(raw.get(4..).unwrap_or_default()));
            if !more {
                return Ok(Some((Reply::from_lines(this, lines), used)));
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(ReplyError::TooManyLines);
            }
        }
    }

    fn from_lines(code: u16, mut lines: Vec<String>) -> Reply {
        let first = lines[0]
            .split_once(' ')
            .and_then(|(word, rest)| Some((parse_enhanced(word)?, rest.to_string())));
        let enhanced = first.map(|(e, rest)| {
            lines[0] = rest;
            e
        });
        // Continuation lines repeat the enhanced code (RFC 2034 3): an enhanced code at the
        // start of one is dropped, other text stays.
        if enhanced.is_some() {
            for l in lines.iter_mut().skip(1) {
                if let Some((first, rest)) = l.split_once(' ')
                    && parse_enhanced(first).is_some()
                {
                    *l = rest.to_string();
                }
            }
        }
        Reply {
            code,
            enhanced,
            text: lines.join("\n").into(),
        }
    }
}

/// `class.subject.detail`, each a number (RFC 3463 2).
fn parse_enhanced(word: &str) -> Option<EnhancedCode> {
    let mut parts = word.split('.');
    let e = EnhancedCode(
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(e)
}

/// A reply line's text as we keep it: it reaches logs, `queue list` and delivery reports,
/// so controls become spaces, and what is not UTF-8 becomes `?` (never longer than it was).
fn clean_text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .chars()
        .map(|c| match c {
            '\u{FFFD}' => '?',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text.replace('\n', " / ")),
            None => write!(f, "{} {}", self.code, self.text.replace('\n', " / ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        let mut out = Vec::new();
        Reply::new(250, EnhancedCode(2, 0, 0), "OK").write_to(&mut out);
        assert_eq!(out, b"250 2.0.0 OK\r\n");
        out.clear();
        Reply::dynamic(250, 0, 0, "a\nb\nc").write_to(&mut out);
        assert_eq!(out, b"250-2.0.0 a\r\n250-2.0.0 b\r\n250 2.0.0 c\r\n");
    }

    #[test]
    fn parses_what_it_writes() {
        let input =
            b"250-2.0.0 mx.test greets\r\n250-2.0.0 PIPELINING\r\n250 2.0.0 SIZE 100\r\nNEXT";
        let (r, used) = Reply::parse(input).unwrap().unwrap();
        assert_eq!(used, input.len() - 4);
        assert_eq!(r.code, 250);
        assert_eq!(r.enhanced, Some(EnhancedCode(2, 0, 0)));
        assert_eq!(r.text, "mx.test greets\nPIPELINING\nSIZE 100");
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(Reply::parse(&out).unwrap().unwrap().0, r);
    }

    #[test]
    fn parse_table() {
        for (input, expect) in [
            (&b"220 mx ready\r\n"[..], Ok(Some((220, None, "mx ready")))),
            (b"250 ok", Ok(None)),
            (b"250-a\r\n", Ok(None)),
            (b"421\n", Ok(Some((421, None, "")))),
            (
                b"550 5.1.1 no such user\n",
                Ok(Some((550, Some(EnhancedCode(5, 1, 1)), "no such user"))),
            ),
            (b"hello\r\n", Err(ReplyError::BadLine("hello".into()))),
            (b"451 a\x1b[2Jb\0c\r\n", Ok(Some((451, None, "a [2Jb c")))),
            (b"25\r\n", Err(ReplyError::BadLine("25".into()))),
        ] {
            let got = Reply::parse(input)
                .map(|r| r.map(|(r, _)| (r.code, r.enhanced, r.text.into_owned())));
            let expect = expect.map(|r| {
                r.map(|(c, e, t): (u16, Option<EnhancedCode>, &str)| (c, e, t.to_string()))
            });
            assert_eq!(got, expect, "{input:?}");
        }
        assert_eq!(Reply::parse(&[b'2'; 5000]), Err(ReplyError::LineTooLong));
        // Found by fuzzing (host/fuzz/regressions): what `parse` takes, `write_to` gives back.
        for bad in [
            &b"010\n"[..],
            b"650 x\n",
            b"250x hello\n",
            b"250-a\r\n550 b\r\n",
        ] {
            assert!(Reply::parse(bad).is_err(), "{bad:?}");
        }
        let mut invalid = b"250 ".to_vec();
        invalid.extend([0xFF; 1364]);
        invalid.push(b'\n');
        let (r, _) = Reply::parse(&invalid).unwrap().unwrap();
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(Reply::parse(&out).unwrap().unwrap().0, r);
        // Only a repeated enhanced code is dropped from continuation lines.
        let (r, _) = Reply::parse(b"250-2.0.0 a\r\n250 b c\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(r.text, "a\nb c");
        let many = b"250-x\r\n".repeat(200);
        assert_eq!(Reply::parse(&many), Err(ReplyError::TooManyLines));
    }
}
