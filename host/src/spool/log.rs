//! The spool's record format and the scan that rebuilds the index from the segments.
//!
//! A segment (`log/<seq>.seg`, `seq` in 16 hex digits) is a run of records:
//!
//! ```text
//! magic "WSP2" | kind u8 | id length u8 | 0u16 | meta length u32 | content length u32
//!   | head crc32 u32 | content crc32 u32 | id | meta | content
//! ```
//!
//! The head CRC covers the first 16 octets, the id and the meta; the content CRC the
//! content. A record that does not check out ends its segment: it can only be the tail a
//! crash tore (segments are only appended to, and each process appends to new ones).
//!
//! Kinds: a message (meta: envelope length u32, envelope JSON, then the first delivery
//! state's JSON or nothing; content: the message), a delivery state (meta: its JSON), and
//! done (the message left the queue; no meta, no content).

use super::SpoolId;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

pub(super) const HEAD: usize = 24;
const MAGIC: &[u8; 4] = b"WSP2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Message = 1,
    State = 2,
    Done = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::State),
            3 => Some(Kind::Done),
            _ => None,
        }
    }
}

/// Where a part of a record lies: its segment, offset and length; `record` is the whole
/// record's length, what the part keeps alive in its segment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub seg: u64,
    pub off: u64,
    pub len: u32,
    pub record: u64,
}

impl Span {
    pub fn read(&self, file: &File) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; self.len as usize];
        file.read_exact_at(&mut buf, self.off)?;
        Ok(buf)
    }
}

/// Lays out a record's head (the id, meta and content follow it); the content may come in
/// parts (our trace header, then the message as received), written one after the other.
pub(super) fn head(kind: Kind, id: &SpoolId, meta: &[u8], content: &[&[u8]]) -> [u8; HEAD] {
    let mut h = [0u8; HEAD];
    h[..4].copy_from_slice(MAGIC);
    h[4] = kind as u8;
    h[5] = id.as_str().len() as u8;
    h[8..12].copy_from_slice(&(meta.len() as u32).to_le_bytes());
    let len: usize = content.iter().map(|p| p.len()).sum();
    h[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[..16]);
    crc.update(id.as_str().as_bytes());
    crc.update(meta);
    h[16..20].copy_from_slice(&crc.finalize().to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    content.iter().for_each(|p| crc.update(p));
    h[20..24].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// The meta of a message record.
pub(super) fn message_meta(envelope: &[u8], state: Option<&[u8]>) -> Vec<u8> {
    let mut meta = Vec::with_capacity(4 + envelope.len() + state.map_or(0, <[u8]>::len));
    meta.extend_from_slice(&(envelope.len() as u32).to_le_bytes());
    meta.extend_from_slice(envelope);
    meta.extend_from_slice(state.unwrap_or_default());
    meta
}

/// Splits a message record's meta into the envelope and the first state (if any).
pub(super) fn split_message_meta(meta: &[u8]) -> io::Result<(&[u8], Option<&[u8]>)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad message record");
    let len = u32::from_le_bytes(meta.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
    let envelope = meta.get(4..4 + len).ok_or_else(bad)?;
    let state = &meta[4 + len..];
    Ok((envelope, (!state.is_empty()).then_some(state)))
}

/// One record found by `scan`, with where its meta and content are.
pub(super) struct Found {
    pub kind: Kind,
    pub id: SpoolId,
    pub meta: Span,
    pub content: Span,
    /// The content's CRC, checked again whenever the content is read.
    pub content_crc: u32,
}

/// The 32-bit little-endian field of a head at `at`.
fn word(head: &[u8; HEAD], at: usize) -> u64 {
    u32::from_le_bytes(head[at..at + 4].try_into().unwrap()) as u64
}

impl Found {
    /// The record with `head` and `id` at offset `at` of segment `seg`: where its meta and
    /// content are (the one place that knows the layout). `None` for an unknown kind.
    pub fn at(seg: u64, at: u64, id: SpoolId, head: &[u8; HEAD]) -> Option<Found> {
        let kind = Kind::from_u8(head[4])?;
        let (meta_len, content_len) = (word(head, 8), word(head, 12));
        let meta_at = at + (HEAD + id.as_str().len()) as u64;
        let record = meta_at + meta_len + content_len - at;
        let span = |off, len| Span {
            seg,
            off,
            len: len as u32,
            record,
        };
        Some(Found {
            kind,
            meta: span(meta_at, meta_len),
            content: span(meta_at + meta_len, content_len),
            content_crc: word(head, 20) as u32,
            id,
        })
    }
}

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

/// Reads a segment's records in order until its end or the first one that does not check
/// out (a torn tail). `verify_content` also checks the content CRCs (reading them).
/// Returns the length of the valid part.
pub(super) fn scan(
    file: &File,
    seg: u64,
    verify_content: bool,
    mut each: impl FnMut(Found),
) -> io::Result<u64> {
    let size = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(256 << 10, file);
    reader.seek(SeekFrom::Start(0))?;
    let mut at = 0u64;
    let mut buf = Vec::new();
    loop {
        if size - at < HEAD as u64 {
            return Ok(at);
        }
        let mut h = [0u8; HEAD];
        reader.read_exact(&mut h)?;
        if &h[..4] != MAGIC || Kind::from_u8(h[4]).is_none() {
            return Ok(at);
        }
        let id_len = h[5] as u64;
        let (meta_len, content_len) = (word(&h, 8), word(&h, 12));
        let record = HEAD as u64 + id_len + meta_len + content_len;
        if size - at < record {
            return Ok(at);
        }
        buf.resize((id_len + meta_len) as usize, 0);
        reader.read_exact(&mut buf)?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h[..16]);
        crc.update(&buf);
        if crc.finalize().to_le_bytes() != h[16..20] {
            return Ok(at);
        }
        if verify_content {
            let mut crc = crc32fast::Hasher::new();
            let mut left = content_len;
            let mut chunk = vec![0u8; (64 << 10).min(content_len as usize)];
            while left > 0 {
                let n = (left as usize).min(chunk.len());
                reader.read_exact(&mut chunk[..n])?;
                crc.update(&chunk[..n]);
                left -= n as u64;
            }
            if crc.finalize().to_le_bytes() != h[20..24] {
                return Ok(at);
            }
        } else {
            reader.seek_relative(content_len as i64)?;
        }
        let Some(id) = std::str::from_utf8(&buf[..id_len as usize])
            .ok()
            .and_then(SpoolId::parse)
        else {
            return Ok(at);
        };
        let Some(found) = Found::at(seg, at, id, &h) else {
            return Ok(at);
        };
        each(found);
        at += record;
    }
}
