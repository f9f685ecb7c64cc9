//! The header section of a message (RFC 5322 2.2): its fields, each with its continuation
//! lines, as ranges of the message, found one at a time (a hostile message may be millions
//! of header lines: nothing here grows with it). No copies: callers slice what they need.

use std::ops::Range;

/// The largest header section a message may have (Exim's header_maxsize): a larger one is
/// refused at the end of data. Plugins, sender verification and our own header edits read
/// the header section whole, so it is the one part of a message held in memory.
pub const HEADER_MAX: usize = 1 << 20;

/// One header field: where it is in the message (its line ending included) and its name.
pub struct Field<'a> {
    pub range: Range<usize>,
    pub name: &'a [u8],
}

impl Field<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// Its value in `message` (after the colon), with the surrounding white space and
    /// line ends trimmed.
    pub fn value<'m>(&self, message: &'m [u8]) -> &'m [u8] {
        let field = &message[self.range.clone()];
        let colon = memchr::memchr(b':', field).map_or(field.len(), |i| i + 1);
        field[colon..].trim_ascii()
    }
}

/// Does the header section ask that recipient-side TLS policies (MTA-STS, DANE) be
/// ignored, with `TLS-Required: No` (RFC 8689 5)?
pub fn tls_required_no(header: &[u8]) -> bool {
    fields(header).any(|f| f.is("TLS-Required") && f.value(header).eq_ignore_ascii_case(b"no"))
}

/// The header fields of a message, in order, up to the empty line that ends the header
/// section. Continuation lines before the first field belong to none and are skipped.
pub struct Fields<'a> {
    message: &'a [u8],
    at: usize,
}

pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields { message, at: 0 }
}

/// Where the body of `message` starts (see `Fields::body_start`).
pub fn body_start(message: &[u8]) -> Option<usize> {
    let mut fields = fields(message);
    fields.by_ref().for_each(drop);
    fields.body_start()
}

impl<'a> Fields<'a> {
    /// Where the body starts, once every field was taken: after the empty line that ends
    /// the header section; `None` when there is none (the message is all header so far).
    pub fn body_start(&self) -> Option<usize> {
        let rest = &self.message[self.at..];
        if rest.starts_with(b"\r\n") {
            Some(self.at + 2)
        } else if rest.starts_with(b"\n") {
            Some(self.at + 1)
        } else {
            None
        }
    }

    /// The line starting at `at`, with its LF (to the end when there is none).
    fn line_end(&self, at: usize) -> usize {
        memchr::memchr(b'\n', &self.message[at..]).map_or(self.message.len(), |i| at + i + 1)
    }

    fn continues(&self, at: usize) -> bool {
        matches!(self.message.get(at), Some(b' ' | b'\t'))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        if self.at == 0 {
            while self.at < self.message.len() && self.continues(self.at) {
                self.at = self.line_end(self.at);
            }
        }
        let start = self.at;
        let first = self.line_end(start);
        let line = &self.message[start..first];
        if line.is_empty() || line == b"\r\n" || line == b"\n" {
            return None;
        }
        let mut end = first;
        while end < self.message.len() && self.continues(end) {
            end = self.line_end(end);
        }
        self.at = end;
        let name = line.split(|&b| b == b':').next().unwrap_or_default();
        Some(Field {
            range: start..end,
            name: name.trim_ascii(),
        })
    }
}

/// `message` without the fields `drop` picks (with their continuation lines); `None` when
/// it picks none, so that nothing is copied then. `drop` sees each field once, in order.
pub fn without(message: &[u8], mut drop: impl FnMut(&Field<'_>) -> bool) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    for f in fields(message) {
        if drop(&f) {
            let out = out.get_or_insert_with(|| Vec::with_capacity(message.len()));
            out.extend_from_slice(&message[copied..f.range.start]);
            copied = f.range.end;
        }
    }
    let mut out = out?;
    out.extend_from_slice(&message[copied..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tls_required_no_is_found_in_any_case_and_folding() {
        assert!(tls_required_no(
            b"Subject: x\r\nTLS-Required: No\r\n\r\nbody"
        ));
        assert!(tls_required_no(b"tls-required:\r\n\tno \r\n\r\n"));
        assert!(!tls_required_no(b"TLS-Required: Yes\r\n\r\n"));
        assert!(!tls_required_no(b"X-TLS-Required: No\r\n\r\n"));
        assert!(!tls_required_no(b"Subject: x\r\n\r\nTLS-Required: No\r\n"));
    }

    use super::*;

    #[test]
    fn fields_with_continuations_stop_at_the_body() {
        let m = b" stray\r\nA: 1\r\nX-Drop: a\r\n b\r\nB: 2\r\n\r\nX-Drop: body\r\n";
        let f: Vec<Field<'_>> = fields(m).collect();
        let names: Vec<&[u8]> = f.iter().map(|f| f.name).collect();
        assert_eq!(names, [&b"A"[..], b"X-Drop", b"B"]);
        assert_eq!(&m[f[1].range.clone()], b"X-Drop: a\r\n b\r\n");
        let out = without(m, |f| f.is("x-drop")).unwrap();
        assert_eq!(out, b" stray\r\nA: 1\r\nB: 2\r\n\r\nX-Drop: body\r\n");
        assert!(without(m, |f| f.is("c")).is_none());
        assert_eq!(fields(b"A: 1\nB: 2").count(), 2);
        assert_eq!(fields(b"").count(), 0);
        assert_eq!(body_start(m), Some(m.len() - 14));
        assert_eq!(body_start(b"\r\nbody"), Some(2));
        assert_eq!(body_start(b"A: 1\nB: 2\n\nx"), Some(11));
        assert_eq!(body_start(b"A: 1\r\nB: 2"), None);
        assert_eq!(body_start(b"A: 1\r\n"), None);
    }
}
