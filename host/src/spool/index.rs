//! Where each queued message's records are, and what each segment still holds.

use super::SpoolId;
use super::log::{self, Found, Kind, Span};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A queued message: its message record (meta and content), its latest state record, and
/// the segments that hold earlier copies of its message record (see `Segment::after`).
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub meta: Span,
    pub content: Span,
    pub state: Option<Span>,
    pub copies: Vec<u64>,
    pub content_crc: u32,
}

/// A message found in the index, with the files to read it from.
pub(super) struct Located {
    pub entry: Entry,
    file: Arc<File>,
    state_file: Option<Arc<File>>,
}

impl Located {
    /// The envelope's JSON and the current delivery state's (`None`: the message was
    /// stored without one and has had none since).
    pub fn read_meta(&self) -> io::Result<(Vec<u8>, Option<Vec<u8>>)> {
        let meta = self.entry.meta.read(&self.file)?;
        let (envelope, first_state) = log::split_message_meta(&meta)?;
        let state = match self.entry.state.zip(self.state_file.as_ref()) {
            Some((span, file)) => Some(span.read(file)?),
            None => first_state.map(<[u8]>::to_vec),
        };
        Ok((envelope.to_vec(), state))
    }

    /// The content, checked against its CRC: damage on disk is an error, not a message.
    pub fn read_content(&self) -> io::Result<Vec<u8>> {
        log::checked(self.entry.content.read(&self.file)?, self.entry.content_crc)
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
    /// The newest segment's tail did not check out (a crash during a write): (segment,
    /// valid length, file length).
    pub torn: Option<(u64, u64, u64)>,
    /// Older segments with a record that does not check out (damage on disk, not a
    /// crash: those were synced before a newer one was started); read up to it.
    pub damaged: Vec<(u64, u64, u64)>,
}

impl Index {
    /// Rebuilds the index from the segments in `dir`. Only the newest segment can end in a
    /// torn record, so only its contents are read to check them; the others' are skipped.
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
            let valid = log::scan(&file, seq, newest, |f| found.push(f))?;
            let size = file.metadata()?.len();
            if valid < size && newest {
                recovered.torn = Some((seq, valid, size));
            } else if valid < size {
                recovered.damaged.push((seq, valid, size));
                index.segments.get_mut(&seq).unwrap().damaged = true;
            }
            index.segments.get_mut(&seq).unwrap().len = valid;
            for f in found {
                index.apply(f);
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

    fn hold(&mut self, span: Span) {
        if let Some(s) = self.segments.get_mut(&span.seg) {
            s.refs += 1;
            s.live += span.record;
        }
    }

    fn release(&mut self, span: Span) {
        if let Some(s) = self.segments.get_mut(&span.seg) {
            s.refs -= 1;
            s.live -= span.record;
        }
    }

    fn forget(&mut self, entry: &Entry) {
        self.release(entry.meta);
        if let Some(state) = entry.state {
            self.release(state);
        }
    }

    /// Applies a record, as written or as found: the later record of a message wins.
    pub fn apply(&mut self, found: Found) {
        match found.kind {
            Kind::Message => {
                let mut copies = Vec::new();
                if let Some(old) = self.entries.remove(&found.id) {
                    self.forget(&old);
                    copies = old.copies;
                    copies.push(old.meta.seg);
                    copies.retain(|s| *s != found.meta.seg && self.segments.contains_key(s));
                }
                self.hold(found.meta);
                self.entries.insert(
                    found.id,
                    Entry {
                        meta: found.meta,
                        content: found.content,
                        state: None,
                        copies,
                        content_crc: found.content_crc,
                    },
                );
            }
            Kind::State => {
                // A state for a message not (or no longer) here is stale.
                let Some(entry) = self.entries.get_mut(&found.id) else {
                    return;
                };
                let old = entry.state.replace(found.meta);
                if let Some(old) = old {
                    self.release(old);
                }
                self.hold(found.meta);
            }
            Kind::Done => {
                if let Some(old) = self.entries.remove(&found.id) {
                    self.forget(&old);
                    let here = found.meta.seg;
                    let after: Vec<u64> = old
                        .copies
                        .iter()
                        .copied()
                        .chain([old.meta.seg])
                        .filter(|s| *s != here)
                        .collect();
                    if let Some(s) = self.segments.get_mut(&here) {
                        s.after.extend(after);
                    }
                }
            }
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
        Ok(Located {
            entry,
            file,
            state_file,
        })
    }

    pub fn file(&self, seg: u64) -> io::Result<Arc<File>> {
        self.segments
            .get(&seg)
            .map(|s| s.file.clone())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "segment reclaimed"))
    }
}
