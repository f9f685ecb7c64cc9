//! 8-bit to 7-bit conversion for a next hop without 8BITMIME (RFC 6152 3: "convert the
//! message to 7 bit"): every MIME entity whose body has 8-bit octets gets a
//! quoted-printable body (RFC 2045 6.7) and `Content-Transfer-Encoding: quoted-printable`;
//! multiparts are walked part by part. What cannot be converted is refused: 8-bit octets
//! in a header, or inside a message/* entity (RFC 2046 5.2.1 allows it no encoding).

use crate::spool::Content;
use std::io;

/// Why a message cannot be made 7-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unconvertible {
    EightBitHeader,
    EightBitMessagePart,
    BadMultipart,
    TooDeep,
}

impl std::fmt::Display for Unconvertible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unconvertible::EightBitHeader => "8-bit octets in a header field",
            Unconvertible::EightBitMessagePart => "8-bit octets in an attached message",
            Unconvertible::BadMultipart => "a multipart without its boundary",
            Unconvertible::TooDeep => "multiparts nested deeper than 20",
        })
    }
}

fn has_8bit(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b >= 0x80)
}

/// Whether any octet of the content is 8-bit, read block by block.
pub async fn content_has_8bit(content: &Content) -> io::Result<bool> {
    let mut blocks = content.blocks();
    while let Some(block) = blocks.next().await? {
        if has_8bit(&block) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The message, 7-bit. The conversion works on the whole message in memory (on a
/// blocking thread): a hop without 8BITMIME costs the message's size, once per attempt.
pub async fn content_to_seven_bit(content: &Content) -> io::Result<Result<Content, Unconvertible>> {
    let content = content.clone();
    tokio::task::spawn_blocking(move || Ok(to_seven_bit(&content.to_vec()?).map(Content::from)))
        .await
        .map_err(io::Error::other)?
}

/// Multiparts nested deeper than this are not converted (each level is a recursion).
const MAX_DEPTH: usize = 20;

/// The message, 7-bit.
fn to_seven_bit(message: &[u8]) -> Result<Vec<u8>, Unconvertible> {
    entity(message, 0)
}

/// A MIME entity, 7-bit; `depth`: multiparts around it.
fn entity(entity: &[u8], depth: usize) -> Result<Vec<u8>, Unconvertible> {
    if depth > MAX_DEPTH {
        return Err(Unconvertible::TooDeep);
    }
    // A part may have no header at all (RFC 2046 5.1.1): it starts with the empty line.
    let (header, body) = match entity.strip_prefix(b"\r\n") {
        Some(body) => (&b""[..], body),
        None => match find(entity, b"\r\n\r\n") {
            Some(at) => (&entity[..at + 2], &entity[at + 4..]),
            None => (entity, &b""[..]),
        },
    };
    if has_8bit(header) {
        return Err(Unconvertible::EightBitHeader);
    }
    if !has_8bit(body) {
        return Ok(entity.to_vec());
    }
    let content_type = field(header, "content-type").unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let mut out = Vec::with_capacity(entity.len() + entity.len() / 8);
    if let Some(boundary) = media
        .starts_with("multipart/")
        .then(|| parameter(&content_type, "boundary"))
    {
        let boundary = boundary.ok_or(Unconvertible::BadMultipart)?;
        out.extend_from_slice(header);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&multipart(body, boundary.as_bytes(), depth + 1)?);
        return Ok(out);
    }
    if media.starts_with("message/") {
        return Err(Unconvertible::EightBitMessagePart);
    }
    out.extend_from_slice(&without_field(header, "content-transfer-encoding"));
    out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    quoted_printable(body, &mut out);
    Ok(out)
}

/// Converts each part between the boundary lines; the preamble and epilogue are for
/// readers without MIME and are dropped when 8-bit.
fn multipart(body: &[u8], boundary: &[u8], depth: usize) -> Result<Vec<u8>, Unconvertible> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut out = Vec::with_capacity(body.len() + body.len() / 8);
    let mut lines = body.split_inclusive(|&b| b == b'\n');
    let mut part: Vec<u8> = Vec::new();
    let mut in_part = false;
    let mut closed = false;
    for line in lines.by_ref() {
        let bare = line.strip_suffix(b"\r\n").unwrap_or(line);
        let bare = trim_end(bare);
        if bare.starts_with(&delimiter) {
            let rest = &bare[delimiter.len()..];
            if rest.is_empty() || rest == b"--" {
                if in_part {
                    // The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1).
                    let content = part.strip_suffix(b"\r\n").unwrap_or(&part);
                    out.extend_from_slice(&entity(content, depth)?);
                    out.extend_from_slice(b"\r\n");
                } else if !has_8bit(&part) {
                    out.extend_from_slice(&part);
                }
                part.clear();
                out.extend_from_slice(line);
                in_part = rest.is_empty();
                if rest == b"--" {
                    closed = true;
                    break;
                }
                continue;
            }
        }
        part.extend_from_slice(line);
    }
    if !closed {
        return Err(Unconvertible::BadMultipart);
    }
    let epilogue: Vec<u8> = lines.flatten().copied().collect();
    if !has_8bit(&epilogue) {
        out.extend_from_slice(&epilogue);
    }
    Ok(out)
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The header's fields, each unfolded: (name, value).
fn fields(header: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(header);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn field(header: &[u8], name: &str) -> Option<String> {
    fields(header)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
}

/// A parameter of a structured field such as `multipart/mixed; boundary="x"`.
fn parameter(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The header without every occurrence of field `name` (continuation lines included).
fn without_field(header: &[u8], name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len());
    let mut dropping = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            dropping = line
                .iter()
                .position(|&b| b == b':')
                .is_some_and(|c| line[..c].trim_ascii().eq_ignore_ascii_case(name.as_bytes()));
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out
}

/// RFC 2045 6.7: printable ASCII other than `=` as is, the rest `=XX`; spaces and tabs at the end
/// of a line encoded; lines of at most 76 characters with soft breaks (`=` CRLF).
fn quoted_printable(body: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut lines = body.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut width = 0;
        for (i, &b) in line.iter().enumerate() {
            let at_end = i + 1 == line.len();
            let literal =
                (b == b' ' || b == b'\t') && !at_end || (33..=126).contains(&b) && b != b'=';
            let len = if literal { 1 } else { 3 };
            if width + len > 75 {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
            }
            width += len;
        }
        if !last {
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_part_body_becomes_quoted_printable() {
        let msg = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße = hi \r\n.dot\r\n";
        let out = String::from_utf8(to_seven_bit(msg.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out,
            "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe =3D hi=20\r\n.dot\r\n"
        );
        assert!(!has_8bit(out.as_bytes()));
    }

    #[test]
    fn long_lines_get_soft_breaks() {
        let body = "é".repeat(60);
        let out = to_seven_bit(format!("A: b\r\n\r\n{body}").as_bytes()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().all(|l| l.len() <= 76), "{text}");
        assert!(text.contains("=\r\n"));
    }

    #[test]
    fn multipart_parts_are_converted_one_by_one() {
        let msg = "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nnaïve\r\n--b1--\r\n";
        let out = String::from_utf8(to_seven_bit(msg.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out,
            "Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain ascii\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nna=C3=AFve\r\n--b1--\r\n"
        );
    }

    #[test]
    fn a_part_without_a_header() {
        let msg = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nnaïve\r\n--b--\r\n";
        let out = String::from_utf8(to_seven_bit(msg.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            out,
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nna=C3=AFve\r\n--b--\r\n"
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_followed() {
        let mut msg = String::from("ü");
        for i in 0..1000 {
            msg = format!(
                "Content-Type: multipart/mixed; boundary=x{i}\r\n\r\n--x{i}\r\n{msg}\r\n--x{i}--\r\n"
            );
        }
        assert_eq!(to_seven_bit(msg.as_bytes()), Err(Unconvertible::TooDeep));
    }

    #[test]
    fn what_cannot_be_converted_is_refused() {
        assert_eq!(
            to_seven_bit("Subject: Grüße\r\n\r\nx".as_bytes()),
            Err(Unconvertible::EightBitHeader)
        );
        let attached = "Content-Type: message/rfc822\r\n\r\nSubject: a\r\n\r\nü\r\n";
        assert_eq!(
            to_seven_bit(attached.as_bytes()),
            Err(Unconvertible::EightBitMessagePart)
        );
        assert_eq!(
            to_seven_bit(
                "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\nü\r\n".as_bytes()
            ),
            Err(Unconvertible::BadMultipart)
        );
    }
}
