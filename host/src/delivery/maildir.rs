//! Local delivery into Maildir (`maildir:PATH` routes): `PATH/<local-part>/{tmp,new,cur}`.
//! Each file is written in `tmp/`, fsynced, then renamed into `new/`, as the Maildir
//! convention asks, so a reader never sees half a message.

use super::{BoxFuture, DeliveryOutcome, Outgoing, Transport};
use crate::proto::Reply;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct MaildirTransport {
    root: PathBuf,
    hostname: String,
}

impl MaildirTransport {
    pub fn new(root: &Path, hostname: &str) -> MaildirTransport {
        MaildirTransport {
            root: root.to_path_buf(),
            hostname: hostname.replace(['/', ':'], "_"),
        }
    }
}

/// The mailbox folder for a local part: lower-cased; refused when it could name another
/// path (`/`, a leading dot, NUL).
pub fn mailbox_name(local: &str) -> Option<String> {
    let name = local.to_lowercase();
    let bad = name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']);
    (!bad).then_some(name)
}

fn unique_name(hostname: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}.M{}P{}Q{}.{hostname}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn write_one(dir: &Path, name: &str, content: &[u8]) -> io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let tmp = dir.join("tmp").join(name);
    let mut f = File::create(&tmp)?;
    f.write_all(content)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join("new").join(name))?;
    File::open(dir.join("new"))?.sync_all()
}

impl Transport for MaildirTransport {
    fn deliver<'a>(&'a self, msg: &'a Outgoing<'a>) -> BoxFuture<'a, Vec<DeliveryOutcome>> {
        let env = msg.envelope;
        // RFC 5321 4.4: the final delivery adds Return-Path. Maildir files use LF.
        let return_path = format!(
            "Return-Path: <{}>\n",
            env.sender
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        let mut content = return_path.into_bytes();
        let mut rest = msg.content;
        while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
            content.extend_from_slice(&rest[..pos]);
            content.push(b'\n');
            rest = &rest[pos + 2..];
        }
        content.extend_from_slice(rest);
        let jobs: Vec<Option<PathBuf>> = msg
            .recipients
            .iter()
            .map(|&i| {
                mailbox_name(&env.recipients[i].address.local_unquoted()).map(|n| self.root.join(n))
            })
            .collect();
        let hostname = self.hostname.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                jobs.into_iter()
                    .map(|dir| match dir {
                        None => DeliveryOutcome::Permanent(Reply::dynamic(
                            550,
                            1,
                            1,
                            "invalid mailbox name for Maildir",
                        )),
                        Some(dir) => match write_one(&dir, &unique_name(&hostname), &content) {
                            Ok(()) => DeliveryOutcome::Delivered(Reply::dynamic(
                                250,
                                0,
                                0,
                                format!("delivered to {}", dir.display()),
                            )),
                            Err(e) => DeliveryOutcome::Transient(Reply::dynamic(
                                451,
                                3,
                                0,
                                format!("Maildir {}: {e}", dir.display()),
                            )),
                        },
                    })
                    .collect()
            })
            .await
            .unwrap_or_else(|e| {
                vec![
                    DeliveryOutcome::Transient(Reply::dynamic(451, 3, 0, e.to_string()));
                    msg.recipients.len()
                ]
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(mailbox_name("Alice").as_deref(), Some("alice"));
        assert_eq!(mailbox_name("../etc"), None);
        assert_eq!(mailbox_name(".hidden"), None);
        assert_eq!(mailbox_name("a/b"), None);
    }
}
