//! Message content receivers, free of I/O: fed bytes, they say when the message is complete.
//!
//! SMTP smuggling defence (RFC 5321 2.3.8, 4.1.1.4): only `CRLF . CRLF` ends DATA. A bare CR or
//! a bare LF never starts a line, so `\n.\n`, `\r.\r`, `\n.\r\n` and the like stay content; the
//! receiver records that it saw one and the session refuses the message once the real end
//! arrives. No second message can begin inside the first.

/// Where the receiver is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// After CRLF (or at the start of DATA).
    LineStart,
    /// A `.` at the start of a line.
    Dot,
    /// `.` then CR at the start of a line.
    DotCr,
    /// Inside a line.
    Text,
    /// CR inside a line, waiting for LF.
    Cr,
}

/// Receives DATA content: dot-unstuffing (RFC 5321 4.5.2), end detection, size cap. The
/// content goes to the caller's buffer as it comes (the session hands it on to the spool
/// block by block).
#[derive(Debug)]
pub struct DataReceiver {
    state: State,
    max_size: usize,
    size: usize,
    bare_newline: bool,
}

/// What the content looked like once complete.
#[derive(Debug)]
pub struct Received {
    /// More octets than allowed were sent; the excess was dropped and the message is refused.
    pub too_large: bool,
    pub bare_newline: bool,
}

impl DataReceiver {
    pub fn new(max_size: usize) -> DataReceiver {
        DataReceiver {
            state: State::LineStart,
            max_size,
            size: 0,
            bare_newline: false,
        }
    }

    /// Keeps what fits under the size cap (a prefix of the content), counts everything.
    fn push(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        let room = self.max_size.saturating_sub(self.size);
        out.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.size += bytes.len();
    }

    /// Consumes bytes, appending the content to `out`; returns how many were used and
    /// whether the end of data was reached. Bytes after the end are left for the command
    /// reader (pipelined commands).
    pub fn ingest(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Text {
                // Within a line: everything up to the next CR or LF is text, taken at once.
                match memchr::memchr2(b'\r', b'\n', &input[i..]) {
                    Some(0) => {}
                    Some(n) => {
                        self.push(out, &input[i..i + n]);
                        i += n;
                    }
                    None => {
                        self.push(out, &input[i..]);
                        return (input.len(), false);
                    }
                }
            }
            let b = input[i];
            i += 1;
            match (self.state, b) {
                (State::LineStart, b'.') => self.state = State::Dot,
                (State::Dot, b'\r') => self.state = State::DotCr,
                (State::DotCr, b'\n') => {
                    self.state = State::LineStart;
                    return (i, true);
                }
                (State::DotCr, other) => {
                    // ".\r" then not LF: the dot was stuffing, the CR is bare.
                    self.bare_newline = true;
                    self.push(out, b"\r");
                    self.state = State::Text;
                    self.text_byte(out, other);
                }
                // A leading dot is removed (RFC 5321 4.5.2).
                (State::Dot, other) | (State::LineStart, other) | (State::Text, other) => {
                    self.state = State::Text;
                    self.text_byte(out, other);
                }
                (State::Cr, b'\n') => {
                    self.push(out, b"\r\n");
                    self.state = State::LineStart;
                }
                (State::Cr, other) => {
                    self.bare_newline = true;
                    self.push(out, b"\r");
                    self.state = State::Text;
                    self.text_byte(out, other);
                }
            }
        }
        (i, false)
    }

    fn text_byte(&mut self, out: &mut Vec<u8>, b: u8) {
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                self.bare_newline = true;
                self.push(out, b"\n");
            }
            _ => self.push(out, &[b]),
        }
    }

    pub fn finish(self) -> Received {
        Received {
            too_large: self.size > self.max_size,
            bare_newline: self.bare_newline,
        }
    }
}

/// Receives a message sent in BDAT chunks (RFC 3030): the content is taken as is (no
/// dot-stuffing), up to the size cap, into the caller's buffer; bare CR/LF are tracked
/// across chunks.
#[derive(Debug)]
pub struct BdatReceiver {
    size: u64,
    max_size: u64,
    bare: BareNewlineCheck,
    /// The last two octets kept.
    tail: [u8; 2],
}

impl BdatReceiver {
    pub fn new(max_size: u64) -> BdatReceiver {
        BdatReceiver {
            size: 0,
            max_size,
            bare: BareNewlineCheck::default(),
            tail: [0; 2],
        }
    }

    /// Takes octets of the current chunk into `out`; beyond the cap they are counted, not
    /// kept.
    pub fn ingest(&mut self, octets: &[u8], out: &mut Vec<u8>) {
        self.size += octets.len() as u64;
        self.bare.scan(octets);
        if self.size <= self.max_size && !octets.is_empty() {
            out.extend_from_slice(octets);
            self.tail = match octets {
                [only] => [self.tail[1], *only],
                [.., a, b] => [*a, *b],
                [] => self.tail,
            };
        }
    }

    /// More octets than allowed arrived: the message will be refused (RFC 3030 4.2).
    pub fn too_large(&self) -> bool {
        self.size > self.max_size
    }

    /// After the LAST chunk. Content that does not end in CRLF gets one (into `out`), as
    /// relaying uses DATA, where content must end so (RFC 5321 4.1.1.4).
    pub fn finish(mut self, out: &mut Vec<u8>) -> Received {
        if self.size > 0 && self.tail != *b"\r\n" && !self.too_large() {
            out.extend_from_slice(b"\r\n");
        }
        Received {
            too_large: self.too_large(),
            bare_newline: self.bare.finish(),
        }
    }
}

/// The octets of one BDAT chunk, counted off the input as they arrive: they are always
/// consumed, even when the command is refused, so that they are never taken for commands
/// (RFC 3030 2).
#[derive(Debug)]
pub struct BdatChunk {
    remaining: u64,
}

impl BdatChunk {
    pub fn new(size: u64) -> BdatChunk {
        BdatChunk { remaining: size }
    }

    /// The part of `input` that belongs to this chunk.
    pub fn take<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let n = input
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        self.remaining -= n as u64;
        &input[..n]
    }

    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }
}

/// Tracks bare CR/LF across BDAT chunks (RFC 3030 has no dot-stuffing; the content is taken
/// as is, but a bare CR or LF is refused as for DATA, so that relaying it later by DATA can
/// never smuggle a message to the next hop).
#[derive(Debug, Default)]
struct BareNewlineCheck {
    pending_cr: bool,
    found: bool,
}

impl BareNewlineCheck {
    fn scan(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match (self.pending_cr, b) {
                (true, b'\n') => self.pending_cr = false,
                (true, b'\r') => self.found = true,
                (true, _) => {
                    self.found = true;
                    self.pending_cr = false;
                }
                (false, b'\r') => self.pending_cr = true,
                (false, b'\n') => self.found = true,
                _ => {}
            }
        }
    }

    /// At the last chunk: a trailing CR without LF is bare too.
    fn finish(&mut self) -> bool {
        if self.pending_cr {
            self.found = true;
        }
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> (Option<usize>, Vec<u8>, Received) {
        let mut r = DataReceiver::new(1 << 20);
        let mut out = Vec::new();
        let (used, done) = r.ingest(input, &mut out);
        (done.then_some(used), out, r.finish())
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf() {
        let (end, message, got) = run(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(end, Some(24));
        assert_eq!(message, b"Subject: x\r\n\r\nhello\r\n");
        assert!(!got.bare_newline);
    }

    #[test]
    fn empty_message() {
        let (end, message, _) = run(b".\r\n");
        assert_eq!(end, Some(3));
        assert!(message.is_empty());
    }

    #[test]
    fn unstuffing() {
        let (_, message, _) = run(b"..x\r\n...\r\n.\r\n");
        assert_eq!(message, b".x\r\n..\r\n");
    }

    #[test]
    fn smuggling_variants_do_not_end_data() {
        for variant in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\n.\r",
            b"\r\n.\r",
        ] {
            let mut input = b"a".to_vec();
            input.extend_from_slice(variant);
            input.extend_from_slice(b"MAIL FROM:<x@y>\r\n");
            let (end, _, got) = run(&input);
            assert_eq!(end, None, "{variant:?} ended data");
            assert!(got.bare_newline, "{variant:?} not flagged");
            // The real end still works, the flag stays.
            let mut r = DataReceiver::new(1 << 20);
            let mut out = Vec::new();
            r.ingest(&input, &mut out);
            let (_, done) = r.ingest(b"\r\n.\r\n", &mut out);
            assert!(done, "{variant:?}");
            assert!(r.finish().bare_newline);
        }
    }

    #[test]
    fn split_across_reads() {
        let input = b"line one\r\n..two\r\n.\r\n";
        for split in 0..input.len() {
            let mut r = DataReceiver::new(1 << 20);
            let mut out = Vec::new();
            let (used, done) = r.ingest(&input[..split], &mut out);
            assert_eq!((used, done), (split, false));
            let (_, done) = r.ingest(&input[split..], &mut out);
            assert!(done, "split at {split}");
            assert_eq!(out, b"line one\r\n.two\r\n");
        }
    }

    #[test]
    fn size_cap_keeps_scanning() {
        let mut r = DataReceiver::new(4);
        let mut out = Vec::new();
        let (_, done) = r.ingest(b"0123456789\r\n.\r\n", &mut out);
        assert!(done);
        let got = r.finish();
        assert!(got.too_large);
        assert_eq!(out, b"0123");
    }

    #[test]
    fn long_lines_are_kept_whole() {
        let line = vec![b'x'; 5000];
        let mut input = line.clone();
        input.extend_from_slice(b"\r\n.\r\n");
        let (_, message, _) = run(&input);
        assert_eq!(message.len(), 5002);
    }

    #[test]
    fn bdat_chunks_and_cap() {
        let mut chunk = BdatChunk::new(5);
        assert_eq!(chunk.take(b"abc"), b"abc");
        assert_eq!(chunk.take(b"deMAIL"), b"de");
        assert!(chunk.is_complete());
        assert_eq!(chunk.take(b"more"), b"");
        let mut out = Vec::new();
        let mut r = BdatReceiver::new(4);
        r.ingest(b"ab\r", &mut out);
        r.ingest(b"\n", &mut out);
        assert!(!r.too_large());
        r.finish(&mut out);
        assert_eq!(out, b"ab\r\n");
        let mut r = BdatReceiver::new(4);
        r.ingest(b"abc", &mut out);
        r.ingest(b"de", &mut out);
        assert!(r.too_large());
        let mut out = Vec::new();
        let mut r = BdatReceiver::new(100);
        r.ingest(b"no end", &mut out);
        r.finish(&mut out);
        assert_eq!(out, b"no end\r\n");
    }

    #[test]
    fn bdat_bare_newlines() {
        let mut c = BareNewlineCheck::default();
        c.scan(b"a\r");
        c.scan(b"\nb\r\n");
        assert!(!c.finish());
        for bad in [&b"a\nb"[..], b"a\rb", b"a\r\r\n", b"a\r"] {
            let mut c = BareNewlineCheck::default();
            c.scan(bad);
            assert!(c.finish(), "{bad:?}");
        }
    }
}
