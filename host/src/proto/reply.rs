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
}
