//! The spool's records, kind by kind: how each is encoded, how the writer lays it out, and
//! what it does to the index when written or found by a scan. The one place that knows
//! the record format (`log` frames and scans records, `index` keeps what they say).
//!
//! ```text
//! magic "WSP2" | kind u8 | id length u8 | 0u16 | meta length u32 | content length u32
//!   | head crc32 u32 | content crc32 u32 | id | meta | content
//! ```
//!
//! The head CRC covers the first 16 octets, the id and the meta; the content CRC the
//! content.
//!
//! Kinds: a message (meta: envelope length u32, envelope JSON, then the first delivery
//! state's JSON or nothing; content: the message), a delivery state (meta: its JSON), and
//! done (the message left the queue; no meta, no content). A kind this version does not
//! know (a newer wasmtp wrote it) is never skipped or cut off: the spool refuses to open
//! (`log::scan`).

use super::SpoolId;
use super::index::{Entry, Index};
use super::log::Span;
use bytes::Bytes;
use std::io;

pub(super) const HEAD: usize = 24;
pub(super) const MAGIC: &[u8; 4] = b"WSP2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Message = 1,
    State = 2,
    Done = 3,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::State),
            3 => Some(Kind::Done),
            _ => None,
        }
    }
}

/// A record to append.
pub(super) enum Record {
    Message {
        id: SpoolId,
        meta: Vec<u8>,
        /// Written one after the other: one content on disk, no copy to join them.
        content: Vec<Bytes>,
    },
    State {
        id: SpoolId,
        json: Vec<u8>,
    },
    Done {
        id: SpoolId,
    },
}

impl Record {
    /// A message record: its envelope, its first delivery state (if any) and its content.
    pub fn message(
        id: SpoolId,
        envelope: &[u8],
        state: Option<&[u8]>,
        content: Vec<Bytes>,
    ) -> Record {
        let mut meta = Vec::with_capacity(4 + envelope.len() + state.map_or(0, <[u8]>::len));
        meta.extend_from_slice(&(envelope.len() as u32).to_le_bytes());
        meta.extend_from_slice(envelope);
        meta.extend_from_slice(state.unwrap_or_default());
        Record::Message { id, meta, content }
    }

    /// What the writer puts on disk: kind, id, meta and the content in parts.
    pub fn layout(&self) -> (Kind, &SpoolId, &[u8], Vec<&[u8]>) {
        match self {
            Record::Message { id, meta, content } => (
                Kind::Message,
                id,
                meta,
                content.iter().map(|b| &b[..]).collect(),
            ),
            Record::State { id, json } => (Kind::State, id, json, Vec::new()),
            Record::Done { id } => (Kind::Done, id, &[], Vec::new()),
        }
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

/// Splits a message record's meta into the envelope and the first state (if any).
pub(super) fn split_message_meta(meta: &[u8]) -> io::Result<(&[u8], Option<&[u8]>)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad message record");
    let len = u32::from_le_bytes(meta.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
    let envelope = meta.get(4..4 + len).ok_or_else(bad)?;
    let state = &meta[4 + len..];
    Ok((envelope, (!state.is_empty()).then_some(state)))
}

/// The 32-bit little-endian field of a head at `at`.
pub(super) fn word(head: &[u8; HEAD], at: usize) -> u64 {
    u32::from_le_bytes(head[at..at + 4].try_into().unwrap()) as u64
}

/// One record found by a scan or just written, with where its meta and content are.
pub(super) struct Found {
    pub kind: Kind,
    pub id: SpoolId,
    pub meta: Span,
    pub content: Span,
    /// The content's CRC, checked again whenever the content is read.
    pub content_crc: u32,
}

impl Found {
    /// The record with `head` and `id` at offset `at` of segment `seg`: where its meta and
    /// content are. `None` for a kind this version does not know.
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

    /// What the record does to the index, as written or as found: the later record of a
    /// message wins.
    pub fn apply(self, index: &mut Index) {
        match self.kind {
            Kind::Message => {
                let mut copies = Vec::new();
                if let Some(old) = index.entries.remove(&self.id) {
                    index.forget(&old);
                    copies = old.copies;
                    copies.push(old.meta.seg);
                    copies.retain(|s| *s != self.meta.seg && index.segments.contains_key(s));
                }
                index.hold(self.meta);
                index.entries.insert(
                    self.id,
                    Entry {
                        meta: self.meta,
                        content: self.content,
                        state: None,
                        copies,
                        content_crc: self.content_crc,
                    },
                );
            }
            Kind::State => {
                // A state for a message not (or no longer) here is stale.
                let Some(entry) = index.entries.get_mut(&self.id) else {
                    return;
                };
                let old = entry.state.replace(self.meta);
                if let Some(old) = old {
                    index.release(old);
                }
                index.hold(self.meta);
            }
            Kind::Done => {
                if let Some(old) = index.entries.remove(&self.id) {
                    index.forget(&old);
                    // This "done" must stay while any copy of the message record does, or
                    // the message would come back after a restart.
                    let here = self.meta.seg;
                    let after: Vec<u64> = old
                        .copies
                        .iter()
                        .copied()
                        .chain([old.meta.seg])
                        .filter(|s| *s != here)
                        .collect();
                    if let Some(s) = index.segments.get_mut(&here) {
                        s.after.extend(after);
                    }
                }
            }
        }
    }
}
