//! Framing and scanning of the segments (`log/<seq>.seg`, `seq` in 16 hex digits): runs of
//! records (`record` has their format), read back to rebuild the index at start.
//!
//! Segments are only appended to, and each process appends to new ones, so a record that
//! does not check out at the very end of the newest segment is the tail a crash tore: that
//! alone is cut off. A record whose head checks out but whose content does not, with a
//! record right after it, is damage: it is skipped (its length is known) and the segment
//! kept for the operator. A damaged head with records somewhere after it refuses to open
//! the spool, naming segment and offset: finding where the next record starts would mean
//! searching contents that clients wrote, where anyone can plant a record whose CRCs check
//! out. A record of a kind this version does not know is an error too: the spool was
//! written by a newer wasmtp, and skipping its records could lose or repeat mail.

use super::SpoolId;
use super::record::{Found, HEAD, MAGIC, word};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// How the scan of a segment ended.
#[derive(Debug)]
pub(super) struct Scanned {
    /// The end of the last record that checked out.
    pub valid: u64,
    /// Offsets of records that did not check out although records after them do (damage,
    /// not a torn tail); the scan went on at the next one that does.
    pub damaged: Vec<u64>,
}

/// A meta longer than this is no record of ours (envelopes and states are small): a
/// damaged length, not a reason to read megabytes.
const MAX_META: u64 = 16 << 20;
const READ_AHEAD: usize = 256 << 10;

/// Positional reads through one read-ahead buffer: the scan reads records in order, the
/// search after damage at any offset.
struct Reader<'a> {
    file: &'a File,
    size: u64,
    buf: Vec<u8>,
    buf_at: u64,
}

impl Reader<'_> {
    /// `len` octets at `at` (the caller checked they are within the file).
    fn read(&mut self, at: u64, len: usize) -> io::Result<&[u8]> {
        let end = at + len as u64;
        if at < self.buf_at || end > self.buf_at + self.buf.len() as u64 {
            let want = len.max(READ_AHEAD).min((self.size - at) as usize);
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, at)?;
            self.buf_at = at;
        }
        let from = (at - self.buf_at) as usize;
        Ok(&self.buf[from..from + len])
    }
}

enum Check {
    Record(Found),
    /// No record of ours starts here (its head is damaged, or it is no record at all).
    Bad,
    /// A record head whose record runs past the end of the file: a torn write.
    Torn,
    /// A record whose head checks out but whose content does not; it ends at `end`.
    BadContent {
        end: u64,
    },
    /// A well-formed record (its head CRC checks out) of a kind unknown to this version.
    Unknown(u8),
}

/// Is there a record that checks out at `at`?
fn check(r: &mut Reader, seg: u64, at: u64, verify_content: bool) -> io::Result<Check> {
    if r.size - at < HEAD as u64 {
        return Ok(Check::Bad);
    }
    let h: [u8; HEAD] = r.read(at, HEAD)?.try_into().expect("HEAD octets");
    if &h[..4] != MAGIC {
        return Ok(Check::Bad);
    }
    let id_len = h[5] as u64;
    let (meta_len, content_len) = (word(&h, 8), word(&h, 12));
    if meta_len > MAX_META {
        return Ok(Check::Bad);
    }
    if r.size - at < HEAD as u64 + id_len + meta_len + content_len {
        return Ok(Check::Torn);
    }
    let id_meta = r.read(at + HEAD as u64, (id_len + meta_len) as usize)?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[..16]);
    crc.update(id_meta);
    if crc.finalize().to_le_bytes() != h[16..20] {
        return Ok(Check::Bad);
    }
    let Some(id) = std::str::from_utf8(&id_meta[..id_len as usize])
        .ok()
        .and_then(SpoolId::parse)
    else {
        return Ok(Check::Bad);
    };
    let meta = &id_meta[id_len as usize..];
    let Some(found) = Found::at(seg, at, id, &h, meta) else {
        return Ok(Check::Unknown(h[4]));
    };
    if verify_content {
        let mut crc = crc32fast::Hasher::new();
        let mut off = at + HEAD as u64 + id_len + meta_len;
        let end = off + content_len;
        while off < end {
            let n = ((end - off) as usize).min(READ_AHEAD);
            crc.update(r.read(off, n)?);
            off += n as u64;
        }
        if crc.finalize().to_le_bytes() != h[20..24] {
            return Ok(Check::BadContent { end });
        }
    }
    Ok(Check::Record(found))
}

fn unknown_kind(seg: u64, at: u64, kind: u8) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "spool segment {seg:016X}.seg, offset {at}: a record of kind {kind}, unknown to \
             this version of wasmtp (a newer one wrote it); refusing to open the spool, \
             which could lose or repeat mail: run the newer version"
        ),
    )
}

fn damaged(seg: u64, at: u64, found: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "spool segment {seg:016X}.seg, offset {at}: a damaged record, with records after \
             it (the next at offset {found}); refusing to open the spool rather than lose or \
             guess at what follows. Keep a copy of the segment; moving it out of the spool's \
             log/ directory starts the server without the messages in it"
        ),
    )
}

/// Is there a record that checks out after `from`? Its offset. Only to tell damage from
/// a torn tail: what is found is never read as a record, since a search through contents
/// (which clients wrote, and whose CRCs anyone can compute) could find one planted there.
fn next_record(r: &mut Reader, seg: u64, mut from: u64) -> io::Result<Option<u64>> {
    while r.size - from >= HEAD as u64 {
        let window = ((r.size - from) as usize).min(READ_AHEAD);
        let Some(i) = memchr::memmem::find(r.read(from, window)?, MAGIC) else {
            // A magic may straddle the window's end: look again from just before it.
            from += window.saturating_sub(MAGIC.len() - 1).max(1) as u64;
            continue;
        };
        let at = from + i as u64;
        match check(r, seg, at, true)? {
            Check::Record(_) | Check::Unknown(_) => return Ok(Some(at)),
            _ => from = at + 1,
        }
    }
    Ok(None)
}

/// Reads a segment's records in order, handing each to `each`. `verify_content` also checks
/// the content CRCs (reading them). See the module comment for what does not check out.
pub(super) fn scan(
    file: &File,
    seg: u64,
    verify_content: bool,
    mut each: impl FnMut(Found),
) -> io::Result<Scanned> {
    let size = file.metadata()?.len();
    let mut r = Reader {
        file,
        size,
        buf: Vec::new(),
        buf_at: 0,
    };
    let mut scanned = Scanned {
        valid: 0,
        damaged: Vec::new(),
    };
    let mut at = 0u64;
    while at < size {
        let found = match check(&mut r, seg, at, verify_content)? {
            Check::Record(found) => found,
            Check::Unknown(kind) => return Err(unknown_kind(seg, at, kind)),
            // A record cut short by the end of the file: the tail a crash tore.
            Check::Torn => break,
            // Its head (and so its length) checks out: damage if a record follows it
            // right there, else the torn tail.
            Check::BadContent { end } => match check(&mut r, seg, end, verify_content)? {
                Check::Record(_) | Check::Unknown(_) | Check::BadContent { .. } => {
                    scanned.damaged.push(at);
                    at = end;
                    scanned.valid = at;
                    continue;
                }
                _ => break,
            },
            Check::Bad => match next_record(&mut r, seg, at + 1)? {
                None => break,
                Some(next) => return Err(damaged(seg, at, next)),
            },
        };
        at = record_end(&found);
        each(found);
        scanned.valid = at;
    }
    Ok(scanned)
}

/// Where a record ends.
fn record_end(found: &Found) -> u64 {
    found.content.off + found.content.len as u64
}
