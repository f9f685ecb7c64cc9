//! The durable spool: an append-only log of segments under `[spool] path`/`log/`, written
//! by one thread with group commit (`writer`), indexed in memory (`index`), rebuilt from
//! the segments at start (`log::scan`).
//!
//! A message is one record (envelope, first state, content); each change of its delivery
//! state is another; "done" ends it. A session's `250` goes out only after the `fdatasync`
//! that covers its message; one sync covers every message that arrived while the previous
//! one ran. No file is created, renamed or removed per message: segments are removed
//! whole once nothing in them is queued.
//!
//! `wasmtp queue` reads the segments beside a running server (`attach`); only the lock
//! holder writes. A spool of the earlier one-file-per-message format is imported at start
//! (`legacy`).

mod content;
mod incoming;
mod index;
mod legacy;
mod log;
mod record;
mod state;
mod writer;

use crate::proto::{MailParams, Mailbox, RcptParams};
pub use content::{BLOCK, Blocks, Content};
pub use incoming::Incoming;
use index::{Index, Located};
use record::Record;
use serde::{Deserialize, Serialize};
pub use state::{PendingScan, QueueState, RecipientStatus, StoredReply};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;
use tokio::sync::oneshot;
pub use writer::SyncObserver;
use writer::{Answer, Request, Writer};

/// A queue id: time in microseconds, process id and a counter, in upper-case hex.
/// Unique across restarts (time moves on) and within a process (the counter).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpoolId(String);

impl SpoolId {
    pub fn generate() -> SpoolId {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros() as u64;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let pid = *PID.get_or_init(std::process::id);
        SpoolId(format!(
            "{micros:013X}{:05X}{:05X}",
            pid & 0xFFFFF,
            n & 0xFFFFF
        ))
    }

    /// Accepts only the characters `generate` produces, so an id never names another path.
    pub fn parse(s: &str) -> Option<SpoolId> {
        (!s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| SpoolId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The envelope of a spooled message (RFC 5321 2.3.1), immutable once spooled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub id: SpoolId,
    /// Unix seconds when the message was accepted.
    pub received_at: i64,
    /// `None` is the null reverse-path `<>`.
    pub sender: Option<Mailbox>,
    pub params: MailParams,
    pub recipients: Vec<Recipient>,
    pub client_ip: IpAddr,
    pub helo: String,
    pub auth_user: Option<String>,
    /// The message said `TLS-Required: No` without REQUIRETLS (RFC 8689 5): delivery
    /// ignores the recipient domains' TLS policies (MTA-STS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls_optional: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recipient {
    pub address: Mailbox,
    pub params: RcptParams,
}

/// The spool's lock, held as long as this lives (an advisory `flock`, released by the
/// kernel when the process dies).
#[derive(Debug)]
pub struct SpoolLock(File);

impl Drop for SpoolLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// A session's open mail transaction, counted while it lives: the writer waits a moment
/// for more commits while other transactions are open (`writer`'s group window).
#[derive(Debug)]
pub struct OpenTransaction(Arc<AtomicUsize>);

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
pub struct Spool {
    root: Arc<PathBuf>,
    index: Arc<Mutex<Index>>,
    /// Transactions open in sessions now (`OpenTransaction`).
    open: Arc<AtomicUsize>,
    /// The writer thread; `None` for a spool attached read-only.
    writer: Option<mpsc::Sender<Request>>,
    /// Told of the writer's syncs.
    observer: writer::Observer,
}

/// How soon a change must be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Answered once on disk (an operator's order, a new message).
    Now,
    /// Written at once, made durable with the next group (delivery progress: losing it to
    /// a crash means an attempt repeated, never a message lost).
    Soon,
}

impl Spool {
    /// Opens the spool for writing: creates it, takes its lock (one writer per spool),
    /// imports a spool of the earlier format, rebuilds the index from the segments and
    /// cuts a torn tail off the newest one.
    pub fn open(path: &Path, segment_size: u64) -> io::Result<(Spool, SpoolLock)> {
        fs::create_dir_all(path.join("log"))?;
        fs::create_dir_all(path.join("control"))?;
        let root = Arc::new(path.to_path_buf());
        let lock = try_lock(&root)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "another wasmtp server is using this spool",
            )
        })?;
        let spool = Spool::writer(root, segment_size, true)?;
        Ok((spool, lock))
    }

    /// `open` for a caller that already holds the lock (`wasmtp queue` without a server);
    /// `maintains`: rotates, compacts and reclaims (a server), or only appends (a queue
    /// command, whose lock goes as soon as its change is durable).
    fn writer(root: Arc<PathBuf>, segment_size: u64, maintains: bool) -> io::Result<Spool> {
        let started = Instant::now();
        let log_dir = root.join("log");
        let (index, recovered) = Index::scan(&log_dir)?;
        if let Some((seg, valid, size)) = recovered.torn {
            tracing::warn!(
                segment = seg,
                valid,
                size,
                "spool: torn tail ignored (a crash during a write); cut off"
            );
            let file = fs::OpenOptions::new()
                .write(true)
                .open(index::segment_path(&log_dir, seg))?;
            file.set_len(valid)?;
            file.sync_all()?;
        }
        for &(seg, offset) in &recovered.damaged {
            // Kept as it is for the operator; the records after the damage are read.
            tracing::error!(
                segment = %format!("{seg:016X}.seg"),
                offset,
                "spool: a damaged record (damage on disk, not a crash); what follows it is \
                 read, the segment kept as it is"
            );
        }
        let index = Arc::new(Mutex::new(index));
        let open = Arc::new(AtomicUsize::new(0));
        let observer = writer::Observer::default();
        let mut writer = Writer::new(
            log_dir,
            index.clone(),
            open.clone(),
            segment_size,
            maintains,
            observer.clone(),
        );
        let migrated = legacy::import(&root, &mut writer)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || writer.run(rx))?;
        let spool = Spool {
            root,
            index,
            open,
            writer: Some(tx),
            observer,
        };
        let (count, segments) = {
            let index = spool.index.lock().unwrap();
            (index.entries.len(), index.segments.len())
        };
        tracing::info!(
            messages = count,
            segments,
            migrated,
            ms = started.elapsed().as_millis() as u64,
            "spool recovered"
        );
        Ok(spool)
    }

    /// Opens an existing spool to read (`wasmtp queue list` beside a running server); it
    /// sees what was written up to now.
    pub fn attach(path: &Path) -> io::Result<Spool> {
        let root = Arc::new(path.to_path_buf());
        if !root.join("log").is_dir() && !root.join("queue").is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no spool at {} (spool.path)", path.display()),
            ));
        }
        fs::create_dir_all(root.join("control"))?;
        fs::create_dir_all(root.join("log"))?;
        let (index, _) = Index::scan(&root.join("log"))?;
        Ok(Spool {
            root,
            index: Arc::new(Mutex::new(index)),
            open: Default::default(),
            writer: None,
            observer: Default::default(),
        })
    }

    /// Takes the lock of an attached spool, when no server holds it, and opens it for
    /// writing (`None`: a server runs).
    pub fn take_over(&self) -> io::Result<Option<(Spool, SpoolLock)>> {
        let Some(lock) = try_lock(&self.root)? else {
            return Ok(None);
        };
        // The writer of a queue command appends a record or two: the default size will do.
        let segment_size = crate::config::SpoolConfig::default().segment_size.0;
        let spool = Spool::writer(self.root.clone(), segment_size, false)?;
        Ok(Some((spool, lock)))
    }

    /// Requests from `wasmtp queue` to a running server (flush, release).
    pub fn control_dir(&self) -> PathBuf {
        self.root.join("control")
    }

    /// Tells `observer` of every sync from here on (the first observer set stays).
    pub fn observe(&self, observer: Arc<dyn SyncObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Counts a new mail transaction as open until the guard is dropped.
    pub fn open_transaction(&self) -> OpenTransaction {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenTransaction(self.open.clone())
    }

    /// Free space for unprivileged writers on the spool's filesystem, in octets.
    pub fn free_space(&self) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(self.root.as_path())?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    fn send(&self, records: Vec<Record>, durability: Durability) -> io::Result<WaitFor> {
        let (reply, wait) = match durability {
            Durability::Now => {
                let (tx, rx) = oneshot::channel();
                (Answer::Durable(tx), Some(rx))
            }
            Durability::Soon => (Answer::Lazy, None),
        };
        self.request(Request {
            records,
            reply,
            generation: None,
        })?;
        Ok(WaitFor(wait))
    }

    fn request(&self, request: Request) -> io::Result<()> {
        let writer = self.writer.as_ref().ok_or_else(|| {
            io::Error::new(io::ErrorKind::PermissionDenied, "spool attached read-only")
        })?;
        writer
            .send(request)
            .map_err(|_| io::Error::other("the spool writer stopped"))
    }

    /// Commits a message durably: when this returns Ok it survives a crash. The message
    /// is `content` (our own fields, then the content as received: never joined in
    /// memory), whose parts on disk `incoming` wrote as it arrived. A first `state` (a
    /// quarantine hold) is part of the same record, so the message never exists without
    /// it.
    pub async fn store(
        &self,
        envelope: &Envelope,
        content: &Content,
        state: Option<&QueueState>,
        incoming: Option<&Incoming>,
    ) -> io::Result<()> {
        let record = Record::message(
            envelope.id.clone(),
            &serde_json::to_vec(envelope)?,
            state.map(serde_json::to_vec).transpose()?.as_deref(),
            content.stored(),
        );
        let (tx, rx) = oneshot::channel();
        self.request(Request {
            records: vec![record],
            reply: Answer::Durable(tx),
            generation: incoming.and_then(Incoming::generation),
        })?;
        WaitFor(Some(rx)).wait().await
    }

    /// Every queued message id, oldest first.
    pub fn list(&self) -> Vec<SpoolId> {
        self.index.lock().unwrap().entries.keys().cloned().collect()
    }

    fn locate(&self, id: &SpoolId) -> io::Result<Located> {
        self.index.lock().unwrap().locate(id)
    }

    /// Reads the envelope and the delivery state (without the content).
    pub fn load_envelope(&self, id: &SpoolId) -> io::Result<(Envelope, QueueState)> {
        let (envelope, state) = self.locate(id)?.read_meta()?;
        let envelope: Envelope = serde_json::from_slice(&envelope).map_err(invalid)?;
        let state = match state {
            Some(json) => serde_json::from_slice(&json).map_err(invalid)?,
            None => QueueState::new(&envelope),
        };
        Ok((envelope, state))
    }

    /// `content`, blocking, for the spool's own tests.
    #[cfg(test)]
    fn load_content(&self, id: &SpoolId) -> io::Result<Content> {
        self.locate(id)?.content()
    }

    /// The message content: read at once (and checked against its CRC) when small, most
    /// likely in the page cache, just written; a large one is read as it is used. A content
    /// of more than one block is read on a blocking thread; one block is read in less time
    /// than the hand-off to a blocking thread takes (measured: one hand-off per message
    /// cost the 1 KiB throughput cell 5%).
    pub async fn content(&self, id: &SpoolId) -> io::Result<Content> {
        let located = self.locate(id)?;
        if located.entry.content_len() <= content::BLOCK as u64 {
            return located.content();
        }
        tokio::task::spawn_blocking(move || located.content())
            .await
            .map_err(io::Error::other)?
    }

    /// Size of the stored message, for listings.
    pub fn message_size(&self, id: &SpoolId) -> io::Result<u64> {
        Ok(self.locate(id)?.entry.content_len())
    }

    /// Records a new delivery state.
    pub async fn save_state(
        &self,
        id: &SpoolId,
        state: &QueueState,
        durability: Durability,
    ) -> io::Result<()> {
        self.send(state_record(id, state)?, durability)?
            .wait()
            .await
    }

    /// `save_state` (durably) for callers outside the runtime (`wasmtp queue`).
    pub fn save_state_sync(&self, id: &SpoolId, state: &QueueState) -> io::Result<()> {
        self.send(state_record(id, state)?, Durability::Now)?
            .wait_blocking()
    }

    /// Returns once everything asked of the writer before is written and durable.
    pub async fn sync(&self) -> io::Result<()> {
        self.send(Vec::new(), Durability::Now)?.wait().await
    }

    /// Takes a message out of the queue (delivered, failed, or removed on request).
    pub async fn remove(&self, id: &SpoolId, durability: Durability) -> io::Result<()> {
        self.locate(id)?;
        self.send(vec![Record::Done { id: id.clone() }], durability)?
            .wait()
            .await
    }

    /// `remove` (durably) for callers outside the runtime (`wasmtp queue`).
    pub fn remove_sync(&self, id: &SpoolId) -> io::Result<()> {
        self.locate(id)?;
        self.send(vec![Record::Done { id: id.clone() }], Durability::Now)?
            .wait_blocking()
    }
}

fn state_record(id: &SpoolId, state: &QueueState) -> io::Result<Vec<Record>> {
    Ok(vec![Record::State {
        id: id.clone(),
        json: serde_json::to_vec(state)?,
    }])
}

fn invalid(e: serde_json::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The answer to a request to the writer, when it has one.
struct WaitFor(Option<oneshot::Receiver<io::Result<()>>>);

impl WaitFor {
    async fn wait(self) -> io::Result<()> {
        match self.0 {
            Some(rx) => rx
                .await
                .map_err(|_| io::Error::other("the spool writer stopped"))?,
            None => Ok(()),
        }
    }

    fn wait_blocking(self) -> io::Result<()> {
        match self.0 {
            Some(rx) => rx
                .blocking_recv()
                .map_err(|_| io::Error::other("the spool writer stopped"))?,
            None => Ok(()),
        }
    }
}

/// Takes the spool's lock: `None` when someone holds it.
fn try_lock(root: &Path) -> io::Result<Option<SpoolLock>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(SpoolLock(file))),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests;
