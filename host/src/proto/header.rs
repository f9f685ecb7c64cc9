//! The header section of a message (RFC 5322 2.2): its fields, each with its continuation
//! lines, as ranges of the message. No copies: callers slice what they need.

use std::ops::Range;

/// One header field: where it is in the message (its line ending included) and its name.
pub struct Field<'a> {
    pub range: Range<usize>,
    pub name: &'a [u8],
}

impl Field<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }
}

/// The header fields of `message`, up to the empty line that ends the header section.
/// Lines before the first field that do not look like one are skipped.
pub fn fields(message: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut at = 0;
    while at < message.len() {
        let end = memchr::memchr(b'\n', &message[at..]).map_or(message.len(), |i| at + i + 1);
        let line = &message[at..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if let Some(last) = out.last_mut() {
                last.range.end = end;
            }
        } else {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            out.push(Field {
                range: at..end,
                name: name.trim_ascii(),
            });
        }
        at = end;
    }
    out
}

/// Where the body starts: after the empty line that ends the header section (the
/// message's end when there is none).
pub fn body_start(message: &[u8]) -> usize {
    let fields = fields(message);
    let after = fields.last().map_or(0, |f| f.range.end);
    match &message[after..] {
        [b'\r', b'\n', ..] => after + 2,
        [b'\n', ..] => after + 1,
        _ => after,
    }
}

/// `message` without the fields `drop` picks (with their continuation lines); `None` when
/// it picks none, so that nothing is copied then. `drop` sees each field once, in order.
pub fn without(message: &[u8], mut drop: impl FnMut(&Field<'_>) -> bool) -> Option<Vec<u8>> {
    let fields: Vec<Field<'_>> = fields(message).into_iter().filter(|f| drop(f)).collect();
    if fields.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(message.len());
    let mut at = 0;
    for f in &fields {
        out.extend_from_slice(&message[at..f.range.start]);
        at = f.range.end;
    }
    out.extend_from_slice(&message[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_continuations_stop_at_the_body() {
        let m = b"A: 1\r\nX-Drop: a\r\n b\r\nB: 2\r\n\r\nX-Drop: body\r\n";
        let f = fields(m);
        let names: Vec<&[u8]> = f.iter().map(|f| f.name).collect();
        assert_eq!(names, [&b"A"[..], b"X-Drop", b"B"]);
        assert_eq!(&m[f[1].range.clone()], b"X-Drop: a\r\n b\r\n");
        assert_eq!(&m[body_start(m)..], b"X-Drop: body\r\n");
        let out = without(m, |f| f.is("x-drop")).unwrap();
        assert_eq!(out, b"A: 1\r\nB: 2\r\n\r\nX-Drop: body\r\n");
        assert!(without(m, |f| f.is("c")).is_none());
        assert_eq!(body_start(b"A: 1\r\n"), 6);
    }
}
