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
mod writer;

use crate::proto::{MailParams, Mailbox, RcptParams};
pub use content::{Blocks, Content};
pub use incoming::Incoming;
use index::{Index, Located};
use record::Record;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;
use tokio::sync::oneshot;
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recipient {
    pub address: Mailbox,
    pub params: RcptParams,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "reply", rename_all = "lowercase")]
pub enum RecipientStatus {
    Queued,
    /// Last attempt failed temporarily; the text is the last error.
    Deferred(String),
    Delivered(String),
    Failed(String),
}

/// The mutable delivery state of one message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueState {
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt: i64,
    pub held: bool,
    /// Why the message is held (a plugin's quarantine reason, or the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_reason: Option<String>,
    /// A delay report (NOTIFY=DELAY) went out already.
    #[serde(default)]
    pub delay_warned: bool,
    pub recipients: Vec<RecipientStatus>,
}

impl QueueState {
    pub fn new(envelope: &Envelope) -> QueueState {
        QueueState {
            attempts: 0,
            next_attempt: envelope.received_at,
            held: false,
            hold_reason: None,
            delay_warned: false,
            recipients: vec![RecipientStatus::Queued; envelope.recipients.len()],
        }
    }

    /// Keeps it from delivery until released (the reason stays if a plugin gave one).
    pub fn hold(&mut self) {
        self.held = true;
        self.hold_reason
            .get_or_insert_with(|| "held by the operator".into());
    }

    /// Lets a held message go, due now; a message that is not held stays as it is.
    pub fn release(&mut self, now: i64) -> Result<(), String> {
        if !self.held {
            return Err("the message is not held".into());
        }
        self.held = false;
        self.hold_reason = None;
        self.next_attempt = now;
        Ok(())
    }

    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.recipients.iter().enumerate().filter_map(|(i, s)| {
            matches!(s, RecipientStatus::Queued | RecipientStatus::Deferred(_)).then_some(i)
        })
    }
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
        let mut writer = Writer::new(
            log_dir,
            index.clone(),
            open.clone(),
            segment_size,
            maintains,
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
            content,
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

    /// The message content: read at once (and checked against its CRC) when small, most
    /// likely in the page cache, just written; a large one is read as it is used.
    pub fn load_content(&self, id: &SpoolId) -> io::Result<Content> {
        self.locate(id)?.content()
    }

    /// Size of the stored message, for listings.
    pub fn message_size(&self, id: &SpoolId) -> io::Result<u64> {
        Ok(self.locate(id)?.entry.content.len as u64)
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
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            id: SpoolId::generate(),
            received_at: 1,
            sender: None,
            params: MailParams::default(),
            recipients: vec![Recipient {
                address: crate::proto::address::parse_mailbox("a@b.c").unwrap(),
                params: RcptParams::default(),
            }],
            client_ip: "127.0.0.1".parse().unwrap(),
            helo: "client".into(),
            auth_user: None,
        }
    }

    const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

    fn message(n: usize) -> Vec<u8> {
        format!("Subject: {n}\r\n\r\n{}\r\n", "x".repeat(n)).into_bytes()
    }

    /// The message in two parts, as a session stores it.
    fn parts(n: usize) -> Content {
        let m = message(n);
        Content::from(m[5..].to_vec()).after(m[..5].to_vec())
    }

    #[tokio::test]
    async fn store_load_state_remove_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        let again = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE);
        assert_eq!(
            again.err().map(|e| e.kind()),
            Some(io::ErrorKind::WouldBlock),
            "a second writer got the lock"
        );
        let (a, b) = (envelope(), envelope());
        spool.store(&a, &parts(10), None, None).await.unwrap();
        spool.store(&b, &parts(20), None, None).await.unwrap();
        assert_eq!(spool.list(), vec![a.id.clone(), b.id.clone()]);
        let (loaded, mut state) = spool.load_envelope(&a.id).unwrap();
        assert_eq!(loaded.helo, "client");
        assert_eq!(state.pending().count(), 1);
        assert_eq!(
            spool.load_content(&b.id).unwrap().to_vec().unwrap(),
            message(20)
        );
        state.recipients[0] = RecipientStatus::Deferred("451 later".into());
        state.attempts = 1;
        spool
            .save_state(&a.id, &state, Durability::Now)
            .await
            .unwrap();
        assert_eq!(spool.load_envelope(&a.id).unwrap().1.attempts, 1);
        spool.remove(&b.id, Durability::Now).await.unwrap();
        assert_eq!(spool.list(), vec![a.id.clone()]);
        drop((spool, lock));
        // What a restart finds: a, with its last state; b is gone.
        let reader = Spool::attach(dir.path()).unwrap();
        assert_eq!(reader.list(), vec![a.id.clone()]);
        let (_, state) = reader.load_envelope(&a.id).unwrap();
        assert_eq!(state.attempts, 1);
        assert_eq!(
            reader.load_content(&a.id).unwrap().to_vec().unwrap(),
            message(10)
        );
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off_and_writing_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        let envs: Vec<Envelope> = (0..3).map(|_| envelope()).collect();
        for (i, e) in envs.iter().enumerate() {
            spool.store(e, &parts(100 + i), None, None).await.unwrap();
        }
        drop((spool, lock));
        // A crash in the middle of the third record's content, then garbage.
        let seg = index::segment_path(&dir.path().join("log"), 1);
        let len = fs::metadata(&seg).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 20).unwrap();
        drop(f);
        let (spool, lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        assert_eq!(spool.list(), vec![envs[0].id.clone(), envs[1].id.clone()]);
        let d = envelope();
        spool.store(&d, &parts(7), None, None).await.unwrap();
        drop((spool, lock));
        let reader = Spool::attach(dir.path()).unwrap();
        assert_eq!(
            reader.list(),
            vec![envs[0].id.clone(), envs[1].id.clone(), d.id.clone()]
        );
        assert_eq!(
            reader.load_content(&d.id).unwrap().to_vec().unwrap(),
            message(7)
        );
    }

    fn segments(dir: &Path) -> Vec<u64> {
        index::segment_numbers(&dir.join("log")).unwrap()
    }

    /// `text` received through an `Incoming`, in the writes a client would make.
    async fn receive(spool: &Spool, text: &[u8]) -> (Incoming, Content) {
        let mut incoming = spool.incoming(0);
        for chunk in text.chunks(60_000) {
            incoming.block().extend_from_slice(chunk);
            incoming.flush().await;
        }
        let content = incoming.finish().await.unwrap();
        (incoming, content)
    }

    #[tokio::test]
    async fn a_big_message_streams_in_parts_and_only_a_committed_one_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, lock) = Spool::open(dir.path(), 1 << 20).unwrap();
        let text: Vec<u8> = (0..3_000_000u32).map(|i| b'a' + (i % 23) as u8).collect();
        // One committed, with our header before it and a range cut out of it.
        let (incoming, content) = receive(&spool, &text).await;
        assert!(content.on_disk());
        let stored = content
            .without(&[10..20, 1_000_000..1_500_000])
            .after(b"Received: x\r\n".to_vec());
        let mut e = envelope();
        e.id = incoming.id().clone();
        spool
            .store(&e, &stored, None, Some(&incoming))
            .await
            .unwrap();
        drop(incoming);
        let mut want = b"Received: x\r\n".to_vec();
        want.extend_from_slice(&text[..10]);
        want.extend_from_slice(&text[20..1_000_000]);
        want.extend_from_slice(&text[1_500_000..]);
        // One abandoned: its parts are dead space.
        let (abandoned, _) = receive(&spool, &text).await;
        drop(abandoned);
        assert_eq!(spool.load_content(&e.id).unwrap().to_vec().unwrap(), want);
        spool.sync().await.unwrap();
        drop((spool, lock));
        // A restart finds the one message, read from its parts.
        let (spool, lock) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.list(), vec![e.id.clone()]);
        let content = spool.load_content(&e.id).unwrap();
        assert_eq!(content.len(), want.len() as u64);
        assert_eq!(content.to_vec().unwrap(), want);
        assert_eq!(
            content.read_at(14 + 999_985, 10).unwrap(),
            &want[999_999..1_000_009]
        );
        // Once done, every segment it used goes (the abandoned one's too).
        spool.remove(&e.id, Durability::Now).await.unwrap();
        for _ in 0..3 {
            let other = envelope();
            spool.store(&other, &parts(10), None, None).await.unwrap();
            spool.remove(&other.id, Durability::Now).await.unwrap();
        }
        let mut left = segments(dir.path());
        for _ in 0..100 {
            if left.len() <= 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            left = segments(dir.path());
        }
        assert!(left.len() <= 1, "segments left: {left:?}");
        drop((spool, lock));
    }

    #[tokio::test]
    async fn a_spanned_message_is_copied_forward_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _lock) = Spool::open(dir.path(), 1 << 20).unwrap();
        let text: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 7) as u8).collect();
        let (incoming, content) = receive(&spool, &text).await;
        let stayer = {
            let mut e = envelope();
            e.id = incoming.id().clone();
            e
        };
        let mut held = QueueState::new(&stayer);
        held.hold();
        spool
            .store(&stayer, &content, Some(&held), Some(&incoming))
            .await
            .unwrap();
        drop(incoming);
        let first = segments(dir.path())[0];
        // Others come and go: the stayer's segment ends up mostly dead and is copied.
        for _ in 0..600 {
            let e = envelope();
            spool.store(&e, &parts(4000), None, None).await.unwrap();
            spool.remove(&e.id, Durability::Soon).await.unwrap();
        }
        let mut moved = false;
        for _ in 0..100 {
            let copied = {
                let index = spool.index.lock().unwrap();
                let e = &index.entries[&stayer.id];
                e.meta.seg > first && e.parts().all(|p| p.seg > first)
            };
            if copied {
                moved = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(moved, "the stayer was not copied forward");
        assert_eq!(
            spool.load_content(&stayer.id).unwrap().to_vec().unwrap(),
            text
        );
        spool.sync().await.unwrap();
        drop((spool, _lock));
        let reader = Spool::attach(dir.path()).unwrap();
        assert_eq!(reader.list(), vec![stayer.id.clone()]);
        assert!(reader.load_envelope(&stayer.id).unwrap().1.held);
        assert_eq!(
            reader.load_content(&stayer.id).unwrap().to_vec().unwrap(),
            text
        );
    }

    #[tokio::test]
    async fn done_segments_are_removed_and_long_stayers_copied_forward() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _lock) = Spool::open(dir.path(), 64 << 10).unwrap();
        // A small message stays (held) while 200 others of 4 KiB come and go; its segment
        // is mostly dead and gets copied forward. A large one stays too: its segment is
        // mostly live and stays, and must not keep the others from going.
        let stayer = envelope();
        let mut held = QueueState::new(&stayer);
        held.hold();
        spool
            .store(&stayer, &parts(1000), Some(&held), None)
            .await
            .unwrap();
        for _ in 0..20 {
            let e = envelope();
            spool.store(&e, &parts(4000), None, None).await.unwrap();
            spool.remove(&e.id, Durability::Soon).await.unwrap();
        }
        let big = envelope();
        spool.store(&big, &parts(60_000), None, None).await.unwrap();
        for _ in 0..200 {
            let e = envelope();
            spool.store(&e, &parts(4000), None, None).await.unwrap();
            spool.remove(&e.id, Durability::Soon).await.unwrap();
        }
        // 800 KiB went through 64 KiB segments; only the last ones remain (the writer
        // reclaims after answering, so give it a moment).
        let mut left = segments(dir.path());
        for _ in 0..100 {
            if left.len() <= 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            left = segments(dir.path());
        }
        assert!(left.len() <= 3, "segments left: {left:?}");
        assert!(
            !left.contains(&1),
            "the small stayer's first segment was kept"
        );
        let (_, state) = spool.load_envelope(&stayer.id).unwrap();
        assert!(state.held);
        assert_eq!(
            spool.load_content(&stayer.id).unwrap().to_vec().unwrap(),
            message(1000)
        );
        // A restart (after a clean stop) finds the two, and none of the 220 that left.
        spool.sync().await.unwrap();
        drop((spool, _lock));
        let reader = Spool::attach(dir.path()).unwrap();
        assert_eq!(reader.list(), vec![stayer.id.clone(), big.id.clone()]);
        assert!(reader.load_envelope(&stayer.id).unwrap().1.held);
        assert_eq!(
            reader.load_content(&big.id).unwrap().to_vec().unwrap(),
            message(60_000)
        );
    }

    /// A stopped spool of 40 messages of 4 KiB in 64 KiB segments.
    async fn forty_in_segments() -> (tempfile::TempDir, Vec<Envelope>) {
        let dir = tempfile::tempdir().unwrap();
        let (spool, lock) = Spool::open(dir.path(), 64 << 10).unwrap();
        let envs: Vec<Envelope> = (0..40).map(|_| envelope()).collect();
        for e in &envs {
            spool.store(e, &parts(4000), None, None).await.unwrap();
        }
        spool.sync().await.unwrap();
        drop((spool, lock));
        (dir, envs)
    }

    #[tokio::test]
    async fn damage_in_an_older_segment_is_left_for_the_operator() {
        let (dir, envs) = forty_in_segments().await;
        let seqs = segments(dir.path());
        assert!(seqs.len() >= 2, "{seqs:?}");
        // A bad byte in the first record of the first segment (its id); another spelling of
        // a number (which must not be read as a second copy of that segment).
        let first = index::segment_path(&dir.path().join("log"), seqs[0]);
        let mut bytes = fs::read(&first).unwrap();
        bytes[record::HEAD + 2] ^= 0xFF;
        fs::write(&first, &bytes).unwrap();
        fs::write(dir.path().join("log/00000000000000001.seg"), b"junk").unwrap();
        let (spool, _lock) = Spool::open(dir.path(), 64 << 10).unwrap();
        assert_eq!(fs::metadata(&first).unwrap().len(), bytes.len() as u64);
        // The damaged record's message is not read (and not lost: the file is there for
        // the operator); the records after it in that segment, and the others, are.
        let listed = spool.list();
        assert_eq!(listed.len(), 39);
        assert!(!listed.contains(&envs[0].id) && listed.contains(&envs[1].id));
        // Space is reclaimed around it, never by removing it.
        for e in &envs[20..] {
            spool.remove(&e.id, Durability::Now).await.unwrap();
        }
        spool.sync().await.unwrap();
        assert!(first.exists());
    }

    /// A stopped spool of 20 small messages in one segment, and where each record starts.
    async fn twenty_in_one_segment() -> (tempfile::TempDir, Vec<Envelope>, PathBuf, Vec<usize>) {
        let dir = tempfile::tempdir().unwrap();
        let (spool, lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        let envs: Vec<Envelope> = (0..20).map(|_| envelope()).collect();
        for e in &envs {
            spool.store(e, &parts(300), None, None).await.unwrap();
        }
        drop((spool, lock));
        let seg = index::segment_path(&dir.path().join("log"), 1);
        let bytes = fs::read(&seg).unwrap();
        let starts: Vec<usize> = memchr::memmem::find_iter(&bytes, record::MAGIC).collect();
        assert_eq!(starts.len(), 20);
        (dir, envs, seg, starts)
    }

    #[tokio::test]
    async fn damage_in_the_newest_segment_keeps_what_follows() {
        // A flipped kind byte (the head CRC no longer checks out), or one bit of a length.
        for at in [4, 12] {
            let (dir, envs, seg, starts) = twenty_in_one_segment().await;
            let mut bytes = fs::read(&seg).unwrap();
            bytes[starts[5] + at] ^= 0x40;
            fs::write(&seg, &bytes).unwrap();
            let (spool, _lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
            let listed = spool.list();
            assert_eq!(listed.len(), 19, "damage at {at}");
            assert!(!listed.contains(&envs[5].id));
            assert!(listed.contains(&envs[19].id));
            // Nothing was cut: the segment is as it was, for the operator.
            assert_eq!(fs::read(&seg).unwrap(), bytes);
            assert_eq!(
                spool.load_content(&envs[19].id).unwrap().to_vec().unwrap(),
                message(300)
            );
        }
    }

    #[tokio::test]
    async fn a_record_of_a_newer_kind_refuses_to_open_and_cuts_nothing() {
        let (dir, envs, seg, starts) = twenty_in_one_segment().await;
        // The sixth record, well formed, of a kind this version does not know.
        let mut bytes = fs::read(&seg).unwrap();
        let at = starts[5];
        bytes[at + 4] = 9;
        let id_meta = record::HEAD + bytes[at + 5] as usize + {
            let w = &bytes[at + 8..at + 12];
            u32::from_le_bytes(w.try_into().unwrap()) as usize
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[at..at + 16]);
        crc.update(&bytes[at + record::HEAD..at + id_meta]);
        bytes[at + 16..at + 20].copy_from_slice(&crc.finalize().to_le_bytes());
        fs::write(&seg, &bytes).unwrap();
        let e = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE)
            .err()
            .expect("refused");
        let text = e.to_string();
        assert!(
            text.contains("0000000000000001.seg") && text.contains(&format!("offset {at}")),
            "{text}"
        );
        assert!(text.contains("kind 9"), "{text}");
        assert!(Spool::attach(dir.path()).is_err());
        assert_eq!(fs::read(&seg).unwrap(), bytes, "the segment was changed");
        // Back to a kind it knows (as if the newer version had run): all 20 are there.
        bytes[at + 4] = 1;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[at..at + 16]);
        crc.update(&bytes[at + record::HEAD..at + id_meta]);
        bytes[at + 16..at + 20].copy_from_slice(&crc.finalize().to_le_bytes());
        fs::write(&seg, &bytes).unwrap();
        let (spool, _lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        assert_eq!(spool.list().len(), envs.len());
    }

    #[tokio::test]
    async fn damaged_content_is_an_error_not_a_message() {
        let (dir, envs) = forty_in_segments().await;
        // One bit of the first message's body, in the oldest segment (whose contents are
        // not read at start).
        let first = index::segment_path(&dir.path().join("log"), segments(dir.path())[0]);
        let mut bytes = fs::read(&first).unwrap();
        let body = bytes
            .windows(64)
            .position(|w| w.iter().all(|&b| b == b'x'))
            .unwrap();
        bytes[body + 10] ^= 1;
        fs::write(&first, &bytes).unwrap();
        let (spool, _lock) = Spool::open(dir.path(), 64 << 10).unwrap();
        let e = spool.load_content(&envs[0].id).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            spool.load_content(&envs[1].id).unwrap().to_vec().unwrap(),
            message(4000)
        );
    }

    #[tokio::test]
    async fn a_spool_of_the_earlier_format_is_imported() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue");
        fs::create_dir_all(&queue).unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let (a, b) = (envelope(), envelope());
        for e in [&a, &b] {
            let mut file = serde_json::to_vec(e).unwrap();
            file.push(b'\n');
            file.extend_from_slice(&message(5));
            fs::write(queue.join(format!("{}.msg", e.id)), file).unwrap();
        }
        let mut state = QueueState::new(&b);
        state.attempts = 4;
        fs::write(
            queue.join(format!("{}.state", b.id)),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        let (spool, _lock) = Spool::open(dir.path(), DEFAULT_SEGMENT_SIZE).unwrap();
        assert_eq!(spool.list().len(), 2);
        assert_eq!(spool.load_envelope(&b.id).unwrap().1.attempts, 4);
        assert_eq!(spool.load_envelope(&a.id).unwrap().1.attempts, 0);
        assert_eq!(
            spool.load_content(&a.id).unwrap().to_vec().unwrap(),
            message(5)
        );
        assert!(!queue.exists() && !dir.path().join("tmp").exists());
        assert!(!dir.path().join("queue.imported").exists());
    }

    #[test]
    fn ids_are_unique_and_safe() {
        let a = SpoolId::generate();
        let b = SpoolId::generate();
        assert_ne!(a, b);
        assert!(SpoolId::parse("../etc").is_none());
        assert_eq!(SpoolId::parse(a.as_str()), Some(a));
    }
}
