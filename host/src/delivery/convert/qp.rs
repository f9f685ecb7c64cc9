//! Quoted-printable (RFC 2045 6.7), streamed: printable ASCII other than `=` as is, the rest
//! `=XX`; a space or tab at the end of a line encoded; lines of at most 76 characters with
//! soft breaks (`=` CRLF). A line may come in pieces: a space or tab that ends a piece waits
//! for the next, which tells whether it ended the line. A line a soft break starts never
//! starts with a literal `-`: it could read as a multipart's delimiter line (RFC 2045 6.7
//! warns of it; `--boundary` where the original line had text before it).

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[derive(Default)]
pub struct Encoder {
    width: usize,
    held: Option<u8>,
    /// The output line was started by a soft break.
    continued: bool,
}

impl Encoder {
    /// A line (`end`: with its line ending, CRLF or LF) or a piece of one.
    pub fn piece(&mut self, bytes: &[u8], end: bool, out: &mut Vec<u8>) {
        let text = if end {
            let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            line.strip_suffix(b"\r").unwrap_or(line)
        } else {
            bytes
        };
        for &b in text {
            if let Some(h) = self.held.take() {
                self.put(h, false, out);
            }
            if b == b' ' || b == b'\t' {
                self.held = Some(b);
            } else {
                self.put(b, false, out);
            }
        }
        if end {
            self.end_line(out);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The end of the body: a last line without its line ending.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.end_line(out);
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        if let Some(h) = self.held.take() {
            self.put(h, true, out);
        }
        self.width = 0;
        self.continued = false;
    }

    fn put(&mut self, b: u8, at_end: bool, out: &mut Vec<u8>) {
        let printable =
            (b == b' ' || b == b'\t') && !at_end || (33..=126).contains(&b) && b != b'=';
        let width = |literal| if literal { 1 } else { 3 };
        if self.width + width(printable) > 75 {
            out.extend_from_slice(b"=\r\n");
            self.width = 0;
            self.continued = true;
        }
        let literal = printable && !(b == b'-' && self.continued && self.width == 0);
        let len = width(literal);
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
        self.width += len;
    }
}
