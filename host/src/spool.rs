//! The durable spool.
//!
//! Layout under `[spool] path`:
//! - `queue/<id>.msg`: one line of JSON envelope, then the message exactly as it will be
//!   relayed (our `Received:` header first). Written once, never changed.
//! - `queue/<id>.state`: the mutable delivery state (per-recipient status, attempts, next
//!   attempt, hold), replaced atomically. Absent means "every recipient still queued".
//! - `tmp/`: files being written; removed at start.
//!
//! A message is committed when `queue/<id>.msg` exists: it is written in `tmp/`, fsynced,
//! renamed into `queue/`, and the directory fsynced, all before the server says 250. One file
//! and two fsyncs per message; no lock is held across disk work, so concurrent sessions'
//! fsyncs are grouped by the filesystem journal. Blocking calls run in `spawn_blocking`.

use crate::proto::{MailParams, Mailbox, RcptParams};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

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
        SpoolId(format!(
            "{micros:013X}{:05X}{:05X}",
            std::process::id() & 0xFFFFF,
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

#[derive(Debug, Clone)]
pub struct Spool {
    root: Arc<PathBuf>,
}

impl Spool {
    /// Creates the directories, takes the spool's lock (one server per spool), and removes
    /// what a crash can leave half done: files in `tmp/`, and state files whose message
    /// was never committed (the state of a quarantined message is written first).
    pub fn open(path: &Path) -> io::Result<(Spool, SpoolLock)> {
        let spool = Spool {
            root: Arc::new(path.to_path_buf()),
        };
        fs::create_dir_all(spool.queue_dir())?;
        fs::create_dir_all(spool.tmp_dir())?;
        fs::create_dir_all(spool.control_dir())?;
        let lock = spool.try_lock()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "another wasmtp server is using this spool",
            )
        })?;
        for entry in fs::read_dir(spool.tmp_dir())? {
            let _ = fs::remove_file(entry?.path());
        }
        for entry in fs::read_dir(spool.queue_dir())? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "state")
                && !path.with_extension("msg").exists()
            {
                let _ = fs::remove_file(path);
            }
        }
        Ok((spool, lock))
    }

    /// Takes the spool's lock, held by a running server: `None` when someone holds it.
    pub fn try_lock(&self) -> io::Result<Option<SpoolLock>> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(SpoolLock(file))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Requests from `wasmtp queue` to a running server (flush, release).
    pub fn control_dir(&self) -> PathBuf {
        self.root.join("control")
    }

    /// Opens an existing spool without touching `tmp/`, for commands that may run beside
    /// the server (its half-written files there are not leftovers).
    pub fn attach(path: &Path) -> io::Result<Spool> {
        let spool = Spool {
            root: Arc::new(path.to_path_buf()),
        };
        if !spool.queue_dir().is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no spool at {} (spool.path)", path.display()),
            ));
        }
        fs::create_dir_all(spool.control_dir())?;
        Ok(spool)
    }

    /// Free space for unprivileged writers on the spool's filesystem, in octets.
    pub fn free_space(&self) -> io::Result<u64> {
        let stat = rustix::fs::statvfs(self.root.as_path())?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    fn queue_dir(&self) -> PathBuf {
        self.root.join("queue")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn message_path(&self, id: &SpoolId) -> PathBuf {
        self.queue_dir().join(format!("{id}.msg"))
    }

    fn state_path(&self, id: &SpoolId) -> PathBuf {
        self.queue_dir().join(format!("{id}.state"))
    }

    /// Commits a message durably. When this returns Ok the message survives a crash. A
    /// first `state` (a quarantine hold) is committed before the message, so the message
    /// can never exist without it.
    pub async fn store(
        &self,
        envelope: &Envelope,
        message: Vec<u8>,
        state: Option<&QueueState>,
    ) -> io::Result<()> {
        let spool = self.clone();
        let mut header = serde_json::to_vec(envelope)?;
        header.push(b'\n');
        let id = envelope.id.clone();
        let state = state.map(serde_json::to_vec).transpose()?;
        blocking(move || {
            let tmp = spool.tmp_dir().join(format!("{id}.msg"));
            let result = (|| {
                if let Some(state) = state {
                    spool.write_state_file(&id, &state)?;
                    // Durable before the message can be: the message never exists without it.
                    sync_dir(&spool.queue_dir())?;
                }
                let mut f = File::create(&tmp)?;
                f.write_all(&header)?;
                f.write_all(&message)?;
                f.sync_all()?;
                fs::rename(&tmp, spool.message_path(&id))?;
                sync_dir(&spool.queue_dir())
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result
        })
        .await
    }

    /// Every committed message id, oldest first.
    pub fn list(&self) -> io::Result<Vec<SpoolId>> {
        let mut ids: Vec<SpoolId> = fs::read_dir(self.queue_dir())?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                SpoolId::parse(name.strip_suffix(".msg")?)
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Reads the envelope and state (without the content).
    pub fn load_envelope(&self, id: &SpoolId) -> io::Result<(Envelope, QueueState)> {
        let mut reader = BufReader::new(File::open(self.message_path(id))?);
        let envelope = read_envelope(&mut reader)?;
        let state = self.load_state(id, &envelope)?;
        Ok((envelope, state))
    }

    /// Reads the message content (after the envelope line).
    pub async fn load_content(&self, id: &SpoolId) -> io::Result<Vec<u8>> {
        let path = self.message_path(id);
        blocking(move || {
            let mut reader = BufReader::new(File::open(path)?);
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line)?;
            let mut content = Vec::new();
            reader.read_to_end(&mut content)?;
            Ok(content)
        })
        .await
    }

    /// The delivery state; no state file means every recipient still queued.
    fn load_state(&self, id: &SpoolId, envelope: &Envelope) -> io::Result<QueueState> {
        match fs::read(self.state_path(id)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(io::Error::other),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(QueueState::new(envelope)),
            Err(e) => Err(e),
        }
    }

    /// Replaces the delivery state atomically.
    pub async fn save_state(&self, id: &SpoolId, state: &QueueState) -> io::Result<()> {
        let spool = self.clone();
        let state = state.clone();
        let id = id.clone();
        blocking(move || spool.save_state_sync(&id, &state)).await
    }

    /// `save_state` for callers outside the runtime (`wasmtp queue` holding the lock).
    pub fn save_state_sync(&self, id: &SpoolId, state: &QueueState) -> io::Result<()> {
        self.write_state_file(id, &serde_json::to_vec(state)?)?;
        sync_dir(&self.queue_dir())
    }

    /// Replaces `queue/<id>.state` (temp file, fsync, rename); the caller fsyncs the directory.
    fn write_state_file(&self, id: &SpoolId, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.tmp_dir().join(format!("{id}.state"));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, self.state_path(id))
    }

    /// Size of the stored message (envelope line included), for listings.
    pub fn message_size(&self, id: &SpoolId) -> io::Result<u64> {
        Ok(fs::metadata(self.message_path(id))?.len())
    }

    /// Removes a message now (`wasmtp queue remove` without a server).
    pub fn remove_sync(&self, id: &SpoolId) -> io::Result<()> {
        fs::remove_file(self.message_path(id))?;
        match fs::remove_file(self.state_path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        sync_dir(&self.queue_dir())
    }

    /// Removes a message once every recipient is done, or on request. The message goes
    /// first: a crash between the two leaves a state file without its message, which `open`
    /// removes; never a message without its state (a held one would be let go).
    pub async fn remove(&self, id: &SpoolId) -> io::Result<()> {
        let spool = self.clone();
        let id = id.clone();
        blocking(move || spool.remove_sync(&id)).await
    }
}

fn read_envelope(reader: &mut impl BufRead) -> io::Result<Envelope> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    serde_json::from_slice(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
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

    #[tokio::test]
    async fn store_load_state_remove() {
        let dir = std::env::temp_dir().join(format!("wasmtp-spool-{}", SpoolId::generate()));
        let (spool, _lock) = Spool::open(&dir).unwrap();
        assert!(
            spool.try_lock().unwrap().is_none(),
            "a second server got the lock"
        );
        let env = envelope();
        spool
            .store(&env, b"Subject: x\r\n\r\nhi\r\n".to_vec(), None)
            .await
            .unwrap();
        assert_eq!(spool.list().unwrap(), vec![env.id.clone()]);
        let (loaded, mut state) = spool.load_envelope(&env.id).unwrap();
        assert_eq!(loaded.helo, "client");
        assert_eq!(state.pending().count(), 1);
        assert_eq!(
            spool.load_content(&env.id).await.unwrap(),
            b"Subject: x\r\n\r\nhi\r\n"
        );
        state.recipients[0] = RecipientStatus::Deferred("451 later".into());
        state.attempts = 1;
        spool.save_state(&env.id, &state).await.unwrap();
        let (_, state) = spool.load_envelope(&env.id).unwrap();
        assert_eq!(state.attempts, 1);
        spool.remove(&env.id).await.unwrap();
        assert!(spool.list().unwrap().is_empty());
        fs::remove_dir_all(dir).unwrap();
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
