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
//! Kinds:
//! - message (1): meta: envelope length u32, envelope JSON, then the first delivery state's
//!   JSON or nothing; content: the message.
//! - spanned message (4): a message whose content is partly in part records: meta: envelope
//!   length u32, envelope JSON, piece count u32, the pieces (below), then the first state's
//!   JSON or nothing; content: the pieces kept in the record itself.
//! - part (5): a block of a message still being received (no meta): nothing until a
//!   spanned message names it; one that none names is dead space.
//! - delivery state (2): meta: its JSON.
//! - done (3): the message left the queue; no meta, no content.
//!
//! A piece is `0 u8, from u32, len u32` (octets of the record's own content) or
//! `1 u8, segment u64, offset u64, length u32, crc u32, record length u32, from u32,
//! to u32` (octets `from..to` of the content of the record at that segment and offset,
//! whose CRC covers all of it).
//!
//! A kind this version does not know (a newer wasmtp wrote it) is never skipped or cut
//! off: the spool refuses to open (`log::scan`).

use super::SpoolId;
use bytes::Bytes;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

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

pub(super) const HEAD: usize = 24;
pub(super) const MAGIC: &[u8; 4] = b"WSP2";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Message = 1,
    State = 2,
    Done = 3,
    Spanned = 4,
    Part = 5,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::State),
            3 => Some(Kind::Done),
            4 => Some(Kind::Spanned),
            5 => Some(Kind::Part),
            _ => None,
        }
    }
}

/// One piece of a spanned message, as its record lists it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stored {
    /// Octets of the message record's own content.
    Inline { from: u32, len: u32 },
    /// Octets `from..to` of the content of another record (`span`; `record` its length),
    /// checked against `crc`, which covers all of it.
    Part {
        span: Span,
        crc: u32,
        from: u32,
        to: u32,
    },
}

const INLINE: u8 = 0;
const PART: u8 = 1;
const PART_LEN: usize = 1 + 8 + 8 + 4 * 5;

fn encode_pieces(pieces: &[Stored], out: &mut Vec<u8>) {
    out.extend_from_slice(&(pieces.len() as u32).to_le_bytes());
    for p in pieces {
        match *p {
            Stored::Inline { from, len } => {
                out.push(INLINE);
                out.extend_from_slice(&from.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
            Stored::Part {
                span,
                crc,
                from,
                to,
            } => {
                out.push(PART);
                out.extend_from_slice(&span.seg.to_le_bytes());
                out.extend_from_slice(&span.off.to_le_bytes());
                for w in [span.len, crc, span.record as u32, from, to] {
                    out.extend_from_slice(&w.to_le_bytes());
                }
            }
        }
    }
}

/// The pieces at the start of `bytes`, and what follows them.
fn decode_pieces(bytes: &[u8]) -> Option<(Vec<Stored>, &[u8])> {
    let u32_at = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
    };
    let u64_at = |b: &[u8], at: usize| {
        b.get(at..at + 8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
    };
    let count = u32_at(bytes, 0)? as usize;
    let mut at = 4;
    let mut pieces = Vec::with_capacity(count.min(bytes.len() / 9));
    for _ in 0..count {
        match *bytes.get(at)? {
            INLINE => {
                pieces.push(Stored::Inline {
                    from: u32_at(bytes, at + 1)?,
                    len: u32_at(bytes, at + 5)?,
                });
                at += 9;
            }
            PART => {
                let w = |i: usize| u32_at(bytes, at + 17 + 4 * i);
                let span = Span {
                    seg: u64_at(bytes, at + 1)?,
                    off: u64_at(bytes, at + 9)?,
                    len: w(0)?,
                    record: w(2)? as u64,
                };
                let (from, to) = (w(3)?, w(4)?);
                if from > to || to > span.len {
                    return None;
                }
                pieces.push(Stored::Part {
                    span,
                    crc: w(1)?,
                    from,
                    to,
                });
                at += PART_LEN;
            }
            _ => return None,
        }
    }
    Some((pieces, &bytes[at..]))
}

/// A record to append.
pub(super) enum Record {
    Message {
        id: SpoolId,
        meta: Vec<u8>,
        /// Written one after the other: one content on disk, no copy to join them.
        content: Vec<Bytes>,
    },
    Spanned {
        id: SpoolId,
        meta: Vec<u8>,
        content: Vec<Bytes>,
    },
    Part {
        id: SpoolId,
        content: Bytes,
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
    /// A message record: its envelope, its first delivery state (if any) and its content
    /// (`Content::stored`: what is kept in the record, and its pieces); a spanned one when
    /// some of the content is in other records.
    pub fn message(
        id: SpoolId,
        envelope: &[u8],
        state: Option<&[u8]>,
        (inline, pieces): (Vec<Bytes>, Vec<Stored>),
    ) -> Record {
        let spanned = pieces.iter().any(|p| matches!(p, Stored::Part { .. }));
        let mut meta = Vec::with_capacity(64 + envelope.len() + state.map_or(0, <[u8]>::len));
        meta.extend_from_slice(&(envelope.len() as u32).to_le_bytes());
        meta.extend_from_slice(envelope);
        if spanned {
            encode_pieces(&pieces, &mut meta);
        }
        meta.extend_from_slice(state.unwrap_or_default());
        if spanned {
            Record::Spanned {
                id,
                meta,
                content: inline,
            }
        } else {
            Record::Message {
                id,
                meta,
                content: inline,
            }
        }
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
            Record::Spanned { id, meta, content } => (
                Kind::Spanned,
                id,
                meta,
                content.iter().map(|b| &b[..]).collect(),
            ),
            Record::Part { id, content } => (Kind::Part, id, &[], vec![&content[..]]),
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

/// A message record's meta: the envelope, the pieces of a spanned one, the first state.
pub(super) struct MessageMeta<'a> {
    pub envelope: &'a [u8],
    pub pieces: Option<Vec<Stored>>,
    pub state: Option<&'a [u8]>,
}

/// Splits the meta of a message record of `kind` (message or spanned).
pub(super) fn split_message_meta(kind: Kind, meta: &[u8]) -> io::Result<MessageMeta<'_>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad message record");
    let len = u32::from_le_bytes(meta.get(..4).ok_or_else(bad)?.try_into().unwrap()) as usize;
    let envelope = meta.get(4..4 + len).ok_or_else(bad)?;
    let mut rest = &meta[4 + len..];
    let mut pieces = None;
    if kind == Kind::Spanned {
        let (decoded, after) = decode_pieces(rest).ok_or_else(bad)?;
        pieces = Some(decoded);
        rest = after;
    }
    Ok(MessageMeta {
        envelope,
        pieces,
        state: (!rest.is_empty()).then_some(rest),
    })
}

/// The 32-bit little-endian field of a head at `at`.
pub(super) fn word(head: &[u8; HEAD], at: usize) -> u64 {
    u32::from_le_bytes(head[at..at + 4].try_into().unwrap()) as u64
}

/// A queued message: its message record (meta and content), its latest state record, and
/// the segments that hold earlier copies of its message record (see `Segment::after`).
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Message or spanned message.
    pub kind: Kind,
    pub meta: Span,
    pub content: Span,
    pub state: Option<Span>,
    pub copies: Vec<u64>,
    pub content_crc: u32,
    /// A spanned message's pieces (the records they name are held as long as it is).
    pub pieces: Option<Arc<[Stored]>>,
}

impl Entry {
    /// The octets of its content (a spanned message's from all its pieces).
    pub fn content_len(&self) -> u64 {
        match &self.pieces {
            None => self.content.len as u64,
            Some(pieces) => pieces
                .iter()
                .map(|p| match *p {
                    Stored::Inline { len, .. } => len as u64,
                    Stored::Part { from, to, .. } => (to - from) as u64,
                })
                .sum(),
        }
    }

    /// The other records its content is in.
    pub fn parts(&self) -> impl Iterator<Item = Span> + '_ {
        self.pieces
            .iter()
            .flat_map(|p| p.iter())
            .filter_map(|p| match p {
                Stored::Part { span, .. } => Some(*span),
                Stored::Inline { .. } => None,
            })
    }
}

/// What a record can do to the index (`index::Index` does it): the one place that knows
/// what each kind means is `Found::apply`.
pub(super) trait Effects {
    /// Takes a message out, letting go of its records.
    fn take(&mut self, id: &SpoolId) -> Option<Entry>;
    /// Puts a message in, holding its records.
    fn put(&mut self, id: SpoolId, entry: Entry);
    /// A message's latest state (for a message not here: nothing).
    fn set_state(&mut self, id: &SpoolId, state: Span);
    fn has_segment(&self, seg: u64) -> bool;
    /// Segment `seg` stays while any of `on` does.
    fn depends(&mut self, seg: u64, on: Vec<u64>);
}

/// One record found by a scan or just written, with where its meta and content are.
pub(super) struct Found {
    pub kind: Kind,
    pub id: SpoolId,
    pub meta: Span,
    pub content: Span,
    /// The content's CRC, checked again whenever the content is read.
    pub content_crc: u32,
    /// A spanned message's pieces.
    pub pieces: Option<Arc<[Stored]>>,
}

impl Found {
    /// The record with `head`, `id` and `meta` at offset `at` of segment `seg`: where its
    /// meta and content are. `None` for a kind this version does not know (or a spanned
    /// message whose pieces it cannot read).
    pub fn at(seg: u64, at: u64, id: SpoolId, head: &[u8; HEAD], meta: &[u8]) -> Option<Found> {
        let kind = Kind::from_u8(head[4])?;
        let pieces = match kind {
            Kind::Spanned => Some(split_message_meta(kind, meta).ok()?.pieces?.into()),
            _ => None,
        };
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
            pieces,
        })
    }

    /// What the record does to the index, as written or as found: the later record of a
    /// message wins.
    pub fn apply(self, index: &mut impl Effects) {
        match self.kind {
            // Nothing until a message names it (the session receiving it holds it meanwhile).
            Kind::Part => {}
            Kind::Message | Kind::Spanned => {
                let mut copies = Vec::new();
                if let Some(old) = index.take(&self.id) {
                    copies = old.copies;
                    copies.push(old.meta.seg);
                    copies.retain(|s| *s != self.meta.seg && index.has_segment(*s));
                }
                let entry = Entry {
                    kind: self.kind,
                    meta: self.meta,
                    content: self.content,
                    state: None,
                    copies,
                    content_crc: self.content_crc,
                    pieces: self.pieces,
                };
                index.put(self.id, entry);
            }
            // A state for a message not (or no longer) here is stale.
            Kind::State => index.set_state(&self.id, self.meta),
            Kind::Done => {
                if let Some(old) = index.take(&self.id) {
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
                    index.depends(here, after);
                }
            }
        }
    }
}
