//! A message's content as the spool holds it, read in order or in slices, never joined in
//! memory: pieces in memory (a small message, our own header fields, the block a session
//! is still filling) and pieces on disk (the content of a record, checked against its CRC
//! as it is read: damage is an error, never a message).

use super::record::{Span, Stored};
use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

/// Content read back, checked against its CRC: damage on disk is an error, not a message.
pub(super) fn checked(content: Vec<u8>, crc: u32) -> io::Result<Vec<u8>> {
    if crc32fast::hash(&content) == crc {
        Ok(content)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message content damaged on disk (CRC mismatch)",
        ))
    }
}

/// Octets read from disk at a time.
pub const BLOCK: usize = 128 << 10;
/// A record content up to this size is read whole (and checked) to serve a slice of it;
/// a larger one (a big message stored whole by an earlier version) is read in place.
const WHOLE: u64 = 1 << 20;

/// Where on disk a piece is: the content of a record, whose CRC covers `off..off + len`,
/// and the part of it (`from..to`, relative to `off`) that belongs to this message.
#[derive(Clone)]
pub(super) struct OnDisk {
    pub file: Arc<File>,
    /// The record's segment, and its whole length (what the piece keeps alive there).
    pub seg: u64,
    pub record: u64,
    pub off: u64,
    pub len: u64,
    pub crc: u32,
    pub from: u64,
    pub to: u64,
}

impl OnDisk {
    /// All of the content `span` (of the record it names), read from `file`.
    pub fn whole(file: Arc<File>, span: Span, crc: u32) -> OnDisk {
        OnDisk {
            file,
            seg: span.seg,
            record: span.record,
            off: span.off,
            len: span.len as u64,
            crc,
            from: 0,
            to: span.len as u64,
        }
    }

    /// The whole record content, checked, then the part of it that is ours.
    fn read_checked(&self) -> io::Result<Bytes> {
        let mut buf = vec![0; self.len as usize];
        self.file.read_exact_at(&mut buf, self.off)?;
        let buf = checked(buf, self.crc)?;
        Ok(Bytes::from(buf).slice(self.from as usize..self.to as usize))
    }
}

#[derive(Clone)]
pub(super) enum Piece {
    Mem(Bytes),
    Disk(OnDisk),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Mem(b) => b.len() as u64,
            Piece::Disk(d) => d.to - d.from,
        }
    }
}

/// The content of one message. Cheap to clone (the pieces are shared).
#[derive(Clone)]
pub struct Content {
    pieces: Arc<[Piece]>,
    len: u64,
    /// The last disk piece read whole for a slice (a guest reading a body in small slices
    /// costs one read per piece, not one per slice).
    cache: Arc<Mutex<Option<(usize, Bytes)>>>,
}

impl From<Vec<u8>> for Content {
    fn from(bytes: Vec<u8>) -> Content {
        Content::from(Bytes::from(bytes))
    }
}

impl From<Bytes> for Content {
    fn from(bytes: Bytes) -> Content {
        Content::new(vec![Piece::Mem(bytes)])
    }
}

impl Content {
    pub(super) fn new(pieces: Vec<Piece>) -> Content {
        let pieces: Vec<Piece> = pieces.into_iter().filter(|p| p.len() > 0).collect();
        Content {
            len: pieces.iter().map(Piece::len).sum(),
            pieces: pieces.into(),
            cache: Default::default(),
        }
    }

    /// `head` (our own fields, in memory) before this content.
    pub fn after(&self, head: Vec<u8>) -> Content {
        let mut pieces = vec![Piece::Mem(Bytes::from(head))];
        pieces.extend(self.pieces.iter().cloned());
        Content::new(pieces)
    }

    /// This content without the octet ranges `skip` (sorted, not overlapping; header
    /// fields removed): no octet is copied.
    pub fn without(&self, skip: &[std::ops::Range<u64>]) -> Content {
        if skip.is_empty() {
            return self.clone();
        }
        let mut out = Vec::new();
        let mut at = 0u64;
        // The first range that may still cut this piece or a later one.
        let mut next = 0;
        for piece in self.pieces.iter() {
            let (start, end) = (at, at + piece.len());
            at = end;
            let mut keep = start;
            while let Some(r) = skip.get(next).filter(|r| r.start < end) {
                if r.start > keep {
                    out.push(sub(piece, keep - start, r.start - start));
                }
                keep = keep.max(r.end.min(end));
                if r.end > end {
                    break;
                }
                next += 1;
            }
            if keep < end {
                out.push(sub(piece, keep - start, end - start));
            }
        }
        Content::new(out)
    }

    /// This content from octet `n` on.
    pub fn skip(&self, n: u64) -> Content {
        self.without(std::slice::from_ref(&(0..n)))
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What a message record keeps of it (its pieces in memory, one after the other) and
    /// the pieces it lists (ranges of that, and of records on disk).
    pub(super) fn stored(&self) -> (Vec<Bytes>, Vec<Stored>) {
        let mut inline = Vec::new();
        let mut pieces = Vec::new();
        let mut inline_len = 0u32;
        for piece in self.pieces.iter() {
            match piece {
                Piece::Mem(bytes) => {
                    let len = bytes.len() as u32;
                    match pieces.last_mut() {
                        Some(Stored::Inline { len: last, .. }) => *last += len,
                        _ => pieces.push(Stored::Inline {
                            from: inline_len,
                            len,
                        }),
                    }
                    inline_len += len;
                    inline.push(bytes.clone());
                }
                Piece::Disk(d) => pieces.push(Stored::Part {
                    span: Span {
                        seg: d.seg,
                        off: d.off,
                        len: d.len as u32,
                        record: d.record,
                    },
                    crc: d.crc,
                    from: d.from as u32,
                    to: d.to as u32,
                }),
            }
        }
        (inline, pieces)
    }

    /// Whether any of it is on disk (else reading never waits for I/O).
    pub fn on_disk(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Disk(_)))
    }

    /// Up to `max` octets from `offset` (fewer at the end). Blocking when on disk.
    pub fn read_at(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(max as u64).min(self.len);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = 0u64;
        for (i, piece) in self.pieces.iter().enumerate() {
            let (start, stop) = (at, at + piece.len());
            at = stop;
            if stop <= offset {
                continue;
            }
            if start >= end {
                break;
            }
            let (from, to) = (offset.max(start) - start, end.min(stop) - start);
            match piece {
                Piece::Mem(b) => out.extend_from_slice(&b[from as usize..to as usize]),
                Piece::Disk(d) if d.len <= WHOLE => {
                    let bytes = self.cached(i, d)?;
                    out.extend_from_slice(&bytes[from as usize..to as usize]);
                }
                Piece::Disk(d) => {
                    let mut buf = vec![0; (to - from) as usize];
                    d.file.read_exact_at(&mut buf, d.off + d.from + from)?;
                    out.extend_from_slice(&buf);
                }
            }
        }
        Ok(out)
    }

    fn cached(&self, i: usize, d: &OnDisk) -> io::Result<Bytes> {
        let mut cache = self.cache.lock().unwrap();
        if let Some((at, bytes)) = &*cache
            && *at == i
        {
            return Ok(bytes.clone());
        }
        let bytes = d.read_checked()?;
        *cache = Some((i, bytes.clone()));
        Ok(bytes)
    }

    /// Reads it in order, a block at a time.
    pub fn blocks(&self) -> Blocks {
        Blocks {
            content: self.clone(),
            piece: 0,
            pos: 0,
            crc: crc32fast::Hasher::new(),
        }
    }

    /// The whole content in one buffer, for the few who need it so (blocking when on
    /// disk): what it costs is the message's size.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len as usize);
        let mut blocks = self.blocks();
        while let Some(block) = blocks.next_blocking()? {
            out.extend_from_slice(&block);
        }
        Ok(out)
    }
}

/// `piece`'s octets `from..to` (relative to the piece).
fn sub(piece: &Piece, from: u64, to: u64) -> Piece {
    match piece {
        Piece::Mem(b) => Piece::Mem(b.slice(from as usize..to as usize)),
        Piece::Disk(d) => Piece::Disk(OnDisk {
            from: d.from + from,
            to: d.from + to,
            ..d.clone()
        }),
    }
}

/// A content read in order. A disk piece is read in blocks of `BLOCK` and its CRC checked
/// before its last block is handed out: a reader that sends as it reads (delivery) never
/// gets to the end of a damaged message, so never completes its transfer.
pub struct Blocks {
    content: Content,
    piece: usize,
    /// Where in the current piece's record content the next read starts.
    pos: u64,
    crc: crc32fast::Hasher,
}

impl Blocks {
    /// The next block (`None` at the end). Blocking when on disk.
    pub fn next_blocking(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            let Some(piece) = self.content.pieces.get(self.piece) else {
                return Ok(None);
            };
            let d = match piece {
                Piece::Mem(b) => {
                    self.piece += 1;
                    return Ok(Some(b.clone()));
                }
                Piece::Disk(d) => d.clone(),
            };
            let n = (d.len - self.pos).min(BLOCK as u64) as usize;
            let mut buf = vec![0; n];
            d.file.read_exact_at(&mut buf, d.off + self.pos)?;
            self.crc.update(&buf);
            let (start, end) = (self.pos, self.pos + n as u64);
            self.pos = end;
            if end == d.len {
                let crc = std::mem::take(&mut self.crc).finalize();
                if crc != d.crc {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "message content damaged on disk (CRC mismatch)",
                    ));
                }
                self.piece += 1;
                self.pos = 0;
            }
            // The octets of this block that belong to the message.
            let (from, to) = (d.from.clamp(start, end), d.to.clamp(start, end));
            if from < to {
                let block = Bytes::from(buf);
                return Ok(Some(
                    block.slice((from - start) as usize..(to - start) as usize),
                ));
            }
        }
    }

    /// `next_blocking`, with disk reads on a blocking thread.
    pub async fn next(&mut self) -> io::Result<Option<Bytes>> {
        match self.content.pieces.get(self.piece) {
            None => Ok(None),
            Some(Piece::Mem(_)) => self.next_blocking(),
            Some(Piece::Disk(_)) => {
                let mut this = Blocks {
                    content: self.content.clone(),
                    piece: self.piece,
                    pos: self.pos,
                    crc: self.crc.clone(),
                };
                let (this, block) = tokio::task::spawn_blocking(move || {
                    let block = this.next_blocking();
                    (this, block)
                })
                .await
                .map_err(io::Error::other)?;
                *self = this;
                block
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A content of `text` in pieces: in memory and in a file, `cuts` apart.
    fn pieces(text: &[u8], cuts: &[usize]) -> (tempfile::NamedTempFile, Content) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, b"junk").unwrap();
        std::io::Write::write_all(&mut file, text).unwrap();
        let f = Arc::new(file.reopen().unwrap());
        let mut out = Vec::new();
        let mut at = 0;
        for (i, &cut) in cuts.iter().chain([&text.len()]).enumerate() {
            let bytes = &text[at..cut];
            out.push(if i % 2 == 0 {
                Piece::Mem(Bytes::copy_from_slice(bytes))
            } else {
                // The whole record is "junk" + text; this piece is its part at..cut.
                Piece::Disk(OnDisk {
                    file: f.clone(),
                    seg: 1,
                    record: 4 + text.len() as u64,
                    off: 0,
                    len: 4 + text.len() as u64,
                    crc: {
                        let mut all = b"junk".to_vec();
                        all.extend_from_slice(text);
                        crc32fast::hash(&all)
                    },
                    from: 4 + at as u64,
                    to: 4 + cut as u64,
                })
            });
            at = cut;
        }
        (file, Content::new(out))
    }

    #[test]
    fn reads_in_order_in_slices_and_without_ranges() {
        let text: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (_f, c) = pieces(&text, &[10, 200_000, 200_001]);
        assert_eq!(c.len(), text.len() as u64);
        assert_eq!(c.to_vec().unwrap(), text);
        for (off, len) in [(0, 5), (5, 10), (199_990, 20), (299_990, 100), (400_000, 4)] {
            let want = &text[off.min(text.len())..(off + len).min(text.len())];
            assert_eq!(c.read_at(off as u64, len).unwrap(), want, "{off}+{len}");
        }
        let cut = c.without(&[2..4, 9..200_002, 250_000..250_001]);
        let mut want = text[..2].to_vec();
        want.extend_from_slice(&text[4..9]);
        want.extend_from_slice(&text[200_002..250_000]);
        want.extend_from_slice(&text[250_001..]);
        assert_eq!(cut.to_vec().unwrap(), want);
        assert_eq!(cut.len(), want.len() as u64);
        let head = c.after(b"Received: x\r\n".to_vec());
        assert_eq!(head.read_at(0, 13).unwrap(), b"Received: x\r\n");
    }

    #[test]
    fn damage_is_an_error_before_the_last_block() {
        let text = vec![b'x'; 3 * BLOCK];
        let (file, c) = pieces(&text, &[0]);
        let mut bytes = std::fs::read(file.path()).unwrap();
        bytes[10] ^= 1;
        std::fs::write(file.path(), &bytes).unwrap();
        let mut blocks = c.blocks();
        let mut got = 0;
        let err = loop {
            match blocks.next_blocking() {
                Ok(Some(b)) => got += b.len(),
                Ok(None) => panic!("a damaged content read to its end"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(got < text.len());
        assert!(c.read_at(0, 10).is_err());
    }
}
