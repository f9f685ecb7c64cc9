//! How `wasmtp queue` asks a running server to change its queue: the server is the only
//! writer of delivery state while it runs (it holds `spool/lock`), so the command leaves a
//! request in `spool/control/` and waits for the server's answer beside it. Without a
//! server, the command takes the lock and changes the spool itself.

use crate::spool::{Spool, SpoolId};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// One change to the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Retry deferred mail now, all or for one domain.
    Flush {
        domain: Option<String>,
    },
    Hold {
        id: SpoolId,
    },
    /// Only a held message can be released.
    Release {
        id: SpoolId,
    },
    Remove {
        id: SpoolId,
    },
}

/// The server's answer: what was done, or why not.
pub type Answer = Result<String, String>;

/// How long the command waits for a running server's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

fn request_path(spool: &Spool, nonce: &str) -> PathBuf {
    spool.control_dir().join(format!("req-{nonce}.json"))
}

fn answer_path(spool: &Spool, nonce: &str) -> PathBuf {
    spool.control_dir().join(format!("ans-{nonce}.json"))
}

/// Writes `bytes` to `path` atomically (temp name, rename), so a reader never sees half.
fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Client side: leaves `request` for the server and waits for its answer.
pub fn ask(spool: &Spool, request: &Request) -> io::Result<Answer> {
    let nonce = SpoolId::generate().to_string();
    let body = serde_json::to_vec(request)?;
    write_atomic(&request_path(spool, &nonce), &body)?;
    let answer = answer_path(spool, &nonce);
    let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
    while std::time::Instant::now() < deadline {
        match std::fs::read(&answer) {
            Ok(bytes) => {
                let _ = std::fs::remove_file(&answer);
                return serde_json::from_slice(&bytes).map_err(io::Error::other);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    // Not taken: withdraw it, so that it is not applied later by surprise.
    let _ = std::fs::remove_file(request_path(spool, &nonce));
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "the running server did not answer",
    ))
}

/// A request taken from the control directory, with where its answer goes.
pub struct Pending {
    pub request: Request,
    answer: PathBuf,
}

impl Pending {
    pub fn answer(self, answer: &Answer) {
        if let Ok(bytes) = serde_json::to_vec(answer)
            && let Err(e) = write_atomic(&self.answer, &bytes)
        {
            tracing::warn!(path = %self.answer.display(), error = %e, "cannot answer a queue request");
        }
    }
}

/// Server side: takes every request waiting in the control directory (each file removed
/// once read; unreadable ones dropped).
pub fn take_requests(spool: &Spool) -> Vec<Pending> {
    let Ok(entries) = std::fs::read_dir(spool.control_dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(nonce) = name
            .strip_prefix("req-")
            .and_then(|n| n.strip_suffix(".json"))
            .and_then(SpoolId::parse)
        else {
            continue;
        };
        let path = entry.path();
        let bytes = std::fs::read(&path);
        let _ = std::fs::remove_file(&path);
        match bytes.map(|b| serde_json::from_slice::<Request>(&b)) {
            Ok(Ok(request)) => out.push(Pending {
                request,
                answer: answer_path(spool, nonce.as_str()),
            }),
            _ => tracing::warn!(file = name, "unreadable queue request dropped"),
        }
    }
    out
}
