//! Where each queued message's records are, and what each segment still holds.

use super::SpoolId;
use super::content::{Content, OnDisk, Piece, checked};
use super::log;
use super::record::{self, Effects, Entry, Span, Stored};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A message content up to this size is read into memory when loaded.
const IN_MEMORY: usize = 256 << 10;

/// A message found in the index, with the files to read it from.
pub(super) struct Located {
    pub entry: Entry,
    file: Arc<File>,
    state_file: Option<Arc<File>>,
    /// The files of the records its pieces name, in order.
    part_files: Vec<Arc<File>>,
}

impl Located {
    /// The envelope's JSON and the current delivery state's (`None`: the message was
    /// stored without one and has had none since).
    pub fn read_meta(&self) -> io::Result<(Vec<u8>, Option<Vec<u8>>)> {
        let meta = self.entry.meta.read(&self.file)?;
        let split = record::split_message_meta(self.entry.kind, &meta)?;
        let state = match self.entry.state.zip(self.state_file.as_ref()) {
            Some((span, file)) => Some(span.read(file)?),
            None => split.state.map(<[u8]>::to_vec),
        };
        Ok((split.envelope.to_vec(), state))
    }

    /// The content, checked against its CRC: damage on disk is an error, not a message.
    pub fn read_content(&self) -> io::Result<Vec<u8>> {
        checked(self.entry.content.read(&self.file)?, self.entry.content_crc)
    }

    /// The content to read: in memory when small, else read from disk as it is used.
    pub fn content(&self) -> io::Result<Content> {
        let span = self.entry.content;
        let own = |from: u64, to: u64| {
            Piece::Disk(OnDisk {
                file: self.file.clone(),
                seg: span.seg,
                off: span.off,
                len: span.len as u64,
                crc: self.entry.content_crc,
                record: span.record,
                from,
                to,
            })
        };
        let inline = if span.len as usize <= IN_MEMORY {
            Some(bytes::Bytes::from(self.read_content()?))
        } else {
            None
        };
        let Some(pieces) = &self.entry.pieces else {
            return Ok(match inline {
                Some(bytes) => Content::new(vec![Piece::Mem(bytes)]),
                None => Content::new(vec![own(0, span.len as u64)]),
            });
        };
        let mut files = self.part_files.iter();
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces.iter() {
            out.push(match *piece {
                Stored::Inline { from, len } => {
                    let (from, to) = (from as usize, from as usize + len as usize);
                    if to > span.len as usize {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "bad spanned message record",
                        ));
                    }
                    match &inline {
                        Some(bytes) => Piece::Mem(bytes.slice(from..to)),
                        None => own(from as u64, to as u64),
                    }
                }
                Stored::Part {
                    span,
                    crc,
                    from,
                    to,
                } => Piece::Disk(OnDisk {
                    file: files.next().expect("a file per part").clone(),
                    seg: span.seg,
                    off: span.off,
                    len: span.len as u64,
                    crc,
                    record: span.record,
                    from: from as u64,
                    to: to as u64,
                }),
            });
        }
        Ok(Content::new(out))
    }
}

#[derive(Debug)]
pub(super) struct Segment {
    pub file: Arc<File>,
    /// Octets written (and valid).
    pub len: u64,
    /// Records in it that the index points to, and their octets.
    pub refs: usize,
    pub live: u64,
    /// Segments holding message records that "done" records in this one end: this one
    /// stays while any of them does, or those messages would come back after a restart.
    pub after: BTreeSet<u64>,
    /// A record in it did not check out (damage on disk): never removed by us.
    pub damaged: bool,
}

#[derive(Debug, Default)]
pub(super) struct Index {
    pub segments: BTreeMap<u64, Segment>,
    pub entries: BTreeMap<SpoolId, Entry>,
    /// Bumped each time the index is rebuilt after a failed sync: parts written before
    /// (by sessions still receiving) may be gone, and their messages are refused.
    pub generation: u64,
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016X}.seg"))
}

/// The segments in `dir`, oldest first.
pub(super) fn segment_numbers(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let seq = u64::from_str_radix(name.strip_suffix(".seg")?, 16).ok()?;
            // Only the names we write: another spelling of a number would be read twice.
            (name == format!("{seq:016X}.seg")).then_some(seq)
        })
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// What a scan of the segments found.
#[derive(Debug, Default)]
pub(super) struct Recovered {
    /// The newest segment's tail did not check out, with nothing after it that does (a
    /// crash during a write): (segment, valid length, file length).
    pub torn: Option<(u64, u64, u64)>,
    /// Records that do not check out where no crash could have left them: with records
    /// that do after them, or at the end of an older segment (synced before a newer one
    /// was started). (segment, offset.)
    pub damaged: Vec<(u64, u64)>,
}

impl Index {
    /// Rebuilds the index from the segments in `dir`. Only the newest segment can end in a
    /// torn record, so only its contents are read to check them; the others' are skipped.
    /// A segment with damage is kept as it is (never removed by us) for the operator.
    /// Segments removed meanwhile (a running server reclaiming them) are skipped too.
    pub fn scan(dir: &Path) -> io::Result<(Index, Recovered)> {
        let mut index = Index::default();
        let mut recovered = Recovered::default();
        let seqs = segment_numbers(dir)?;
        for (i, &seq) in seqs.iter().enumerate() {
            let file = match File::open(segment_path(dir, seq)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            index.add_segment(seq, Arc::new(file), 0);
            let newest = i + 1 == seqs.len();
            let file = index.segments[&seq].file.clone();
            let mut found = Vec::new();
            let scanned = log::scan(&file, seq, newest, |f| found.push(f))?;
            let size = file.metadata()?.len();
            let damaged = !scanned.damaged.is_empty() || (scanned.valid < size && !newest);
            if scanned.valid < size && newest {
                recovered.torn = Some((seq, scanned.valid, size));
            }
            for &at in &scanned.damaged {
                recovered.damaged.push((seq, at));
            }
            if scanned.valid < size && !newest {
                recovered.damaged.push((seq, scanned.valid));
            }
            let segment = index.segments.get_mut(&seq).unwrap();
            segment.len = scanned.valid;
            segment.damaged = damaged;
            for f in found {
                f.apply(&mut index);
            }
        }
        Ok((index, recovered))
    }

    pub fn add_segment(&mut self, seq: u64, file: Arc<File>, len: u64) {
        self.segments.insert(
            seq,
            Segment {
                file,
                len,
                refs: 0,
                live: 0,
                after: BTreeSet::new(),
                damaged: false,
            },
        );
    }

    pub fn hold(&mut self, span: Span) {
        if let Some(s) = self.segments.get_mut(&span.seg) {
            s.refs += 1;
            s.live += span.record;
        }
    }

    pub fn release(&mut self, span: Span) {
        if let Some(s) = self.segments.get_mut(&span.seg) {
            s.refs -= 1;
            s.live -= span.record;
        }
    }

    /// Holds a new entry's records: its message record and what its pieces name.
    pub fn hold_entry(&mut self, entry: &Entry) {
        self.hold(entry.meta);
        for part in entry.parts() {
            self.hold(part);
        }
    }

    pub fn forget(&mut self, entry: &Entry) {
        self.release(entry.meta);
        if let Some(state) = entry.state {
            self.release(state);
        }
        for part in entry.parts() {
            self.release(part);
        }
    }

    /// A message's records and the files they are in (its message record's, its latest
    /// state's), taken together under the lock: a segment removed afterwards stays
    /// readable through them.
    pub fn locate(&self, id: &SpoolId) -> io::Result<Located> {
        let entry =
            self.entries.get(id).cloned().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no message {id}"))
            })?;
        let file = self.file(entry.meta.seg)?;
        let state_file = entry.state.map(|s| self.file(s.seg)).transpose()?;
        let part_files = entry
            .parts()
            .map(|p| self.file(p.seg))
            .collect::<io::Result<_>>()?;
        Ok(Located {
            entry,
            file,
            state_file,
            part_files,
        })
    }

    pub fn file(&self, seg: u64) -> io::Result<Arc<File>> {
        self.segments
            .get(&seg)
            .map(|s| s.file.clone())
            .ok_or_else(|| io::Error::other(format!("segment {seg} is gone from the spool")))
    }
}

impl Effects for Index {
    fn take(&mut self, id: &SpoolId) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.forget(&entry);
        Some(entry)
    }

    fn put(&mut self, id: SpoolId, entry: Entry) {
        self.hold_entry(&entry);
        self.entries.insert(id, entry);
    }

    fn set_state(&mut self, id: &SpoolId, state: Span) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        let old = entry.state.replace(state);
        if let Some(old) = old {
            self.release(old);
        }
        self.hold(state);
    }

    fn has_segment(&self, seg: u64) -> bool {
        self.segments.contains_key(&seg)
    }

    fn depends(&mut self, seg: u64, on: Vec<u64>) {
        if let Some(s) = self.segments.get_mut(&seg) {
            s.after.extend(on);
        }
    }
}
