//! The spool's one writer: a thread that appends records to the active segment and makes
//! them durable in groups (group commit). It takes every request that arrived while the
//! previous `fdatasync` ran, writes them all, syncs once, and only then answers them, so
//! one sync covers many sessions' messages and none is answered before its sync.
//!
//! Requests that need not wait (delivery progress, a message done) are written at once
//! and ride on the next sync, at most `LAZY_SYNC` later. After a write or sync error the
//! segment is cut back to its last good length and a new one started: no later record
//! ever follows a damaged one.
//!
//! Space: a segment is removed once nothing in it is still queued and every older segment
//! is gone (so a "done" record is never removed while the message record it ends remains).
//! A segment that holds back removal while mostly dead has its live messages copied
//! forward, a budget per pass.

use super::SpoolId;
use super::content::{Content, OnDisk, Piece};
use super::index::{Index, segment_path};
use super::record::{self, Found, Kind, Record, Span};
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// While other transactions are open, how long a group waits for their commits (up to
/// GROUP_TARGET of them).
const GROUP_WINDOW: Duration = Duration::from_millis(5);
const GROUP_TARGET: usize = 32;
/// How long a written but unsynced record may wait for the next sync.
const LAZY_SYNC: Duration = Duration::from_millis(200);
/// An empty active segment at least this long is replaced, so its space returns.
const EMPTY_ROTATE: u64 = 1 << 20;
/// Octets of live messages copied forward per pass.
const COMPACT_BUDGET: u64 = 8 << 20;

pub(super) struct Request {
    pub records: Vec<Record>,
    pub reply: Answer,
    /// The index generation the records' parts were written in: refused when it moved on
    /// (a failed sync may have lost them).
    pub generation: Option<u64>,
}

/// How a request is answered.
pub(super) enum Answer {
    /// Not at all: written, synced with the next group.
    Lazy,
    /// Once the records are durable.
    Durable(oneshot::Sender<io::Result<()>>),
    /// A part (one `Record::Part`) once written, not synced: where it is, held in the index
    /// for the session receiving the message until it lets go (`super::Incoming`).
    Part(oneshot::Sender<io::Result<PartWritten>>),
}

impl Answer {
    fn is_durable(&self) -> bool {
        matches!(self, Answer::Durable(_))
    }
}

/// Told of each sync the writer makes (the server's metrics).
pub trait SyncObserver: Send + Sync {
    /// One fsync: how long it took, and how many records it made durable.
    fn synced(&self, took: Duration, records: usize);
}

/// Where the writer reports its syncs, once someone listens (`Spool::observe`).
pub(super) type Observer = Arc<std::sync::OnceLock<Arc<dyn SyncObserver>>>;

/// Where a part was written.
pub(super) struct PartWritten {
    pub span: Span,
    pub crc: u32,
    pub file: Arc<File>,
    pub generation: u64,
}

struct Active {
    seq: u64,
    file: File,
    /// Its length at the last sync.
    synced: u64,
}

pub(super) struct Writer {
    pub dir: PathBuf,
    pub index: Arc<Mutex<Index>>,
    pub segment_size: u64,
    /// The segment appended to; `None` until the first write (or after an error).
    active: Option<Active>,
    /// Records written since the last sync.
    dirty: bool,
    /// How many.
    unsynced_records: usize,
    observer: Observer,
    /// Transactions open in sessions (`super::OpenTransaction`).
    open: Arc<AtomicUsize>,
    /// The number of the next segment.
    next_seq: u64,
    /// When the oldest write not yet synced was made.
    unsynced_since: Option<Instant>,
    /// Whether this writer rotates, compacts and reclaims (not `wasmtp queue`'s, whose
    /// process lets go of the spool's lock as soon as its change is durable).
    maintains: bool,
}

impl Writer {
    pub fn new(
        dir: PathBuf,
        index: Arc<Mutex<Index>>,
        open: Arc<AtomicUsize>,
        segment_size: u64,
        maintains: bool,
        observer: Observer,
    ) -> Writer {
        Writer {
            dir,
            index,
            segment_size,
            active: None,
            dirty: false,
            unsynced_records: 0,
            observer,
            open,
            next_seq: 1,
            unsynced_since: None,
            maintains,
        }
    }

    pub fn run(mut self, requests: Receiver<Request>) {
        loop {
            let first = if self.dirty {
                match requests.recv_timeout(LAZY_SYNC) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match requests.recv() {
                    Ok(r) => Some(r),
                    Err(_) => break,
                }
            };
            let mut batch: Vec<Request> = first.into_iter().collect();
            while batch.len() < 4096 {
                match requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let waiting = |b: &[Request]| b.iter().filter(|r| r.reply.is_durable()).count();
            // Under concurrent load a little patience makes the groups larger (PostgreSQL's
            // commit_delay and commit_siblings): while other sessions have a transaction
            // open, wait up to GROUP_WINDOW for their commits. A lone sender never waits.
            let siblings = self.open.load(Ordering::Relaxed).min(GROUP_TARGET);
            if (1..siblings).contains(&waiting(&batch)) {
                let deadline = Instant::now() + GROUP_WINDOW;
                while waiting(&batch) < siblings {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match requests.recv_timeout(left) {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
            }
            self.commit(batch);
            if self.maintains {
                self.maintain();
            }
        }
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "spool: final sync failed");
        }
    }

    /// Writes a group, syncs it if anyone waits (or it has waited long enough), answers.
    fn commit(&mut self, batch: Vec<Request>) {
        let generation = self.index.lock().unwrap().generation;
        let (batch, stale): (Vec<Request>, Vec<Request>) = batch
            .into_iter()
            .partition(|r| r.generation.is_none_or(|g| g == generation));
        for request in stale {
            let lost =
                || io::Error::other("a failed spool write lost part of the message before its end");
            match request.reply {
                Answer::Durable(reply) => drop(reply.send(Err(lost()))),
                Answer::Part(reply) => drop(reply.send(Err(lost()))),
                Answer::Lazy => {}
            }
        }
        let overdue = self
            .unsynced_since
            .is_some_and(|t| t.elapsed() >= LAZY_SYNC);
        let waiting = batch.is_empty() || overdue || batch.iter().any(|r| r.reply.is_durable());
        let result = self.write(batch.iter().flat_map(|r| &r.records), waiting);
        if let Err(e) = &result {
            tracing::error!(error = %e, "spool write failed");
        }
        let error = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        let mut parts = match &result {
            Ok(parts) => parts.iter(),
            Err(_) => [].iter(),
        };
        let mut index = self.index.lock().unwrap();
        for request in batch {
            match (request.reply, &result) {
                (Answer::Lazy, _) => {}
                (Answer::Durable(reply), Ok(_)) => drop(reply.send(Ok(()))),
                (Answer::Durable(reply), Err(e)) => drop(reply.send(Err(error(e)))),
                (Answer::Part(reply), Ok(_)) => {
                    let found = parts.next().expect("a part per part request");
                    let written = index.file(found.content.seg).map(|file| PartWritten {
                        span: found.content,
                        crc: found.content_crc,
                        file,
                        generation: index.generation,
                    });
                    let held = written.is_ok();
                    if held {
                        index.hold(found.content);
                    }
                    if reply.send(written).is_err() && held {
                        // The session went away meanwhile: nobody will let go of it.
                        index.release(found.content);
                    }
                }
                (Answer::Part(reply), Err(e)) => drop(reply.send(Err(error(e)))),
            }
        }
    }

    /// Appends records (synced when `sync`) and then shows them in the index. Returns the
    /// parts written, in order (they mean nothing to the index until a message names them).
    pub fn write<'a>(
        &mut self,
        records: impl Iterator<Item = &'a Record>,
        sync: bool,
    ) -> io::Result<Vec<Found>> {
        let found = self.append(records)?;
        if sync {
            self.sync()?;
        }
        let mut index = self.index.lock().unwrap();
        let mut parts = Vec::new();
        for f in found {
            if f.kind == Kind::Part {
                parts.push(f);
            } else {
                f.apply(&mut *index);
            }
        }
        Ok(parts)
    }

    /// Appends records to the active segment; on error, cuts it back to where it was and
    /// gives it up (the next write starts a new one).
    fn append<'a>(&mut self, records: impl Iterator<Item = &'a Record>) -> io::Result<Vec<Found>> {
        let mut records = records.peekable();
        if records.peek().is_none() {
            // A bare sync request: no segment to start for it.
            return Ok(Vec::new());
        }
        let (seq, start) = self.active()?;
        let file = &self.active.as_ref().unwrap().file;
        let mut found = Vec::new();
        let mut at = start;
        let written = (|| {
            let mut out = BufWriter::with_capacity(256 << 10, file);
            for record in records {
                let (kind, id, meta, content) = record.layout();
                let content_len: usize = content.iter().map(|p| p.len()).sum();
                // The format's lengths are 32 bits: a longer one would be cut, and the
                // record's end fall inside its content.
                if u32::try_from(content_len).is_err() || u32::try_from(meta.len()).is_err() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a record of 4 GiB or more",
                    ));
                }
                let head = record::head(kind, id, meta, &content);
                out.write_all(&head)?;
                out.write_all(id.as_str().as_bytes())?;
                out.write_all(meta)?;
                for part in &content {
                    out.write_all(part)?;
                }
                let record = Found::at(seq, at, id.clone(), &head, meta).expect("a kind we wrote");
                at += record.meta.record;
                found.push(record);
            }
            out.flush()
        })();
        match written {
            Ok(()) => {
                if at > start && !self.dirty {
                    self.unsynced_since = Some(Instant::now());
                }
                self.dirty |= at > start;
                self.unsynced_records += found.len();
                self.index
                    .lock()
                    .unwrap()
                    .segments
                    .get_mut(&seq)
                    .unwrap()
                    .len = at;
                Ok(found)
            }
            Err(e) => {
                self.abandon(start, true);
                Err(e)
            }
        }
    }

    /// Cuts the active segment back to `len` and stops appending to it. After a failed
    /// write (`synced_before`: what precedes `len` is sound), nothing of the failed group
    /// was shown in the index, so it stands once the cut is durable. After a failed sync,
    /// or a cut that cannot be made durable, the index is rebuilt from the disk: states
    /// written after the cut are gone, and each message falls back to its last durable
    /// state (never to an older one, which could let a held message go); the generation
    /// moves on, so parts of messages still being received are not trusted.
    fn abandon(&mut self, len: u64, sound_before: bool) {
        if let Some(Active { seq, file, .. }) = self.active.take() {
            let cut = file.set_len(len).and_then(|()| file.sync_data());
            if let Err(e) = &cut {
                tracing::error!(segment = seq, error = %e, "spool: cannot cut a failed write back");
            }
            if cut.is_err() || !sound_before {
                // Whether or not the log can be read again, what sessions were told was
                // written may be gone: their messages are refused from here on.
                let mut old = self.index.lock().unwrap();
                let generation = old.generation + 1;
                old.generation = generation;
                match Index::scan(&self.dir) {
                    Ok((mut index, _)) => {
                        index.generation = generation;
                        *old = index;
                    }
                    Err(e) => tracing::error!(error = %e, "spool: cannot re-read the log"),
                }
            }
        }
        self.dirty = false;
        self.unsynced_records = 0;
        self.unsynced_since = None;
    }

    /// Makes everything written durable. After a failed fsync the page cache cannot be
    /// trusted (what reached the disk is unknown): the segment is cut back to its last
    /// synced length and nothing more goes into it.
    fn sync(&mut self) -> io::Result<()> {
        let Some(active) = &mut self.active else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let started = Instant::now();
        match active.file.sync_data() {
            Ok(()) => {
                if let Some(observer) = self.observer.get() {
                    observer.synced(started.elapsed(), self.unsynced_records);
                }
                self.unsynced_records = 0;
                active.synced = self.index.lock().unwrap().segments[&active.seq].len;
                self.dirty = false;
                self.unsynced_since = None;
                Ok(())
            }
            Err(e) => {
                let synced = active.synced;
                self.abandon(synced, false);
                Err(e)
            }
        }
    }

    /// The active segment and its length, starting one when there is none.
    fn active(&mut self) -> io::Result<(u64, u64)> {
        if let Some(active) = &self.active {
            let len = self.index.lock().unwrap().segments[&active.seq].len;
            return Ok((active.seq, len));
        }
        // A number never used by this writer: one whose creation failed is not tried again.
        let seq = {
            let index = self.index.lock().unwrap();
            let next = index.segments.keys().next_back().map_or(1, |s| s + 1);
            next.max(self.next_seq)
        };
        self.next_seq = seq
            .checked_add(1)
            .ok_or_else(|| io::Error::other("segment numbers exhausted"))?;
        let path = segment_path(&self.dir, seq);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let reader = File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .and_then(|()| file.try_clone());
        let reader = match reader {
            Ok(r) => Arc::new(r),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        self.index.lock().unwrap().add_segment(seq, reader, 0);
        self.active = Some(Active {
            seq,
            file,
            synced: 0,
        });
        Ok((seq, 0))
    }

    /// Starts a new segment, so the active one can be removed once it is done with.
    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        self.active = None;
        self.active().map(|_| ())
    }

    /// Rotates a full (or done-with) active segment, copies live messages out of a mostly
    /// dead oldest segment, and removes segments nothing needs.
    fn maintain(&mut self) {
        if let Err(e) = self.try_maintain() {
            tracing::error!(error = %e, "spool maintenance failed; will retry");
        }
    }

    fn try_maintain(&mut self) -> io::Result<()> {
        let (active_len, active_refs) = match &self.active {
            Some(active) => {
                let index = self.index.lock().unwrap();
                let s = &index.segments[&active.seq];
                (s.len, s.refs)
            }
            None => (0, 0),
        };
        if active_len >= self.segment_size || (active_refs == 0 && active_len >= EMPTY_ROTATE) {
            self.rotate()?;
        }
        // Space comes back even when a copy cannot be made (a full disk, a bad old record).
        let compacted = self.compact();
        self.reclaim()?;
        compacted
    }

    fn active_seq(&self) -> Option<u64> {
        self.active.as_ref().map(|a| a.seq)
    }

    /// Copies the live messages of the emptiest segment forward when less than half of it
    /// is live, up to `COMPACT_BUDGET` octets per pass: a few long-deferred messages do not
    /// keep a segment (and the "done" records that depend on it) on disk.
    fn compact(&mut self) -> io::Result<()> {
        let active = self.active_seq();
        let copies = {
            let index = self.index.lock().unwrap();
            let Some(seg) = index
                .segments
                .iter()
                .filter(|(seq, s)| Some(**seq) != active && s.refs > 0 && s.live * 2 < s.len)
                .min_by_key(|(_, s)| s.live * 1000 / s.len.max(1))
                .map(|(seq, _)| *seq)
            else {
                return Ok(());
            };
            let mut copies = Vec::new();
            let mut budget = 0u64;
            for (id, e) in &index.entries {
                if budget >= COMPACT_BUDGET {
                    break;
                }
                if e.meta.seg == seg
                    || e.state.is_some_and(|s| s.seg == seg)
                    || e.parts().any(|p| p.seg == seg)
                {
                    copies.push((id.clone(), index.locate(id)?));
                    budget += e.meta.record + e.parts().map(|p| p.record).sum::<u64>();
                }
            }
            copies
        };
        let count = copies.len();
        for (id, located) in copies {
            let (envelope, state) = located.read_meta()?;
            let mut content = located.content()?;
            if content.on_disk() {
                content = self.copy_parts(&id, &content)?;
            }
            let record = Record::message(id, &envelope, state.as_deref(), content.stored());
            self.write(std::iter::once(&record), false)?;
        }
        self.sync()?;
        tracing::debug!(count, "spool: live messages copied forward");
        Ok(())
    }

    /// Writes `content` again as parts, a block at a time (a large message is never read
    /// whole); its new pieces.
    fn copy_parts(&mut self, id: &SpoolId, content: &Content) -> io::Result<Content> {
        let mut blocks = content.blocks();
        let mut pieces = Vec::new();
        while let Some(block) = blocks.next_blocking()? {
            let part = Record::Part {
                id: id.clone(),
                content: block,
            };
            let found = self.append(std::iter::once(&part))?.remove(0);
            let file = self.index.lock().unwrap().file(found.content.seg)?;
            pieces.push(Piece::Disk(OnDisk::whole(
                file,
                found.content,
                found.content_crc,
            )));
        }
        Ok(Content::new(pieces))
    }

    /// Removes the segments nothing needs: no live record in them, none of the segments
    /// their "done" records depend on left; after making everything written so far
    /// durable (a copy or a "done" must not be lost once what it replaces is gone).
    fn reclaim(&mut self) -> io::Result<()> {
        let active = self.active_seq();
        loop {
            let removable: Vec<u64> = {
                let index = self.index.lock().unwrap();
                index
                    .segments
                    .iter()
                    .filter(|(seq, s)| {
                        Some(**seq) != active
                            && s.refs == 0
                            && !s.damaged
                            && s.after.iter().all(|a| !index.segments.contains_key(a))
                    })
                    .map(|(seq, _)| *seq)
                    .collect()
            };
            if removable.is_empty() {
                return Ok(());
            }
            self.sync()?;
            for seq in removable {
                match std::fs::remove_file(segment_path(&self.dir, seq)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                self.index.lock().unwrap().segments.remove(&seq);
            }
            // Removed for good before segments that depended on these go in the next pass
            // (or a "done" could vanish while the message it ends comes back).
            File::open(&self.dir)?.sync_all()?;
        }
    }
}
