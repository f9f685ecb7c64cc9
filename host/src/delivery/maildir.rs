//! Local delivery into Maildir (`maildir:PATH` routes): `PATH/<local-part>/{tmp,new,cur}`.
//! Each file is written in `tmp/`, fsynced, then renamed into `new/`, as the Maildir
//! convention asks, so a reader never sees half a message.

use super::{BoxFuture, DeliveryOutcome, Outgoing, Transport};
use crate::proto::Reply;
use crate::spool::Content;
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

/// Writes `head`, then the content with its line ends made LF, a block at a time, into
/// `tmp/`; renamed into `new/` only once all of it is written and synced (a damaged
/// content stops the copy: the file is removed, nothing is delivered).
fn write_one(dir: &Path, name: &str, head: &[u8], content: &Content) -> io::Result<()> {
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let tmp = dir.join("tmp").join(name);
    let written = (|| {
        let mut f = io::BufWriter::with_capacity(64 << 10, File::create(&tmp)?);
        f.write_all(head)?;
        let mut blocks = content.blocks();
        let mut unix = LineEnds::default();
        let mut out = Vec::new();
        while let Some(block) = blocks.next_blocking()? {
            unix.convert(&block, &mut out);
            f.write_all(&out)?;
        }
        unix.finish(&mut out);
        f.write_all(&out)?;
        f.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, dir.join("new").join(name))?;
    File::open(dir.join("new"))?.sync_all()
}

/// CRLF to LF, block by block (a CR at the end of one block may pair with the LF that
/// starts the next).
#[derive(Default)]
struct LineEnds {
    cr: bool,
}

impl LineEnds {
    fn convert(&mut self, block: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let mut rest = block;
        if std::mem::take(&mut self.cr) && rest.first() != Some(&b'\n') {
            out.push(b'\r');
        }
        while let Some(pos) = memchr::memmem::find(rest, b"\r\n") {
            out.extend_from_slice(&rest[..pos]);
            out.push(b'\n');
            rest = &rest[pos + 2..];
        }
        if let Some(body) = rest.strip_suffix(b"\r") {
            self.cr = true;
            rest = body;
        }
        out.extend_from_slice(rest);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        out.clear();
        if std::mem::take(&mut self.cr) {
            out.push(b'\r');
        }
    }
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
        let content = msg.content.clone();
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
                        None => DeliveryOutcome::of(Reply::dynamic(
                            550,
                            1,
                            1,
                            "invalid mailbox name for Maildir",
                        )),
                        Some(dir) => match write_one(
                            &dir,
                            &unique_name(&hostname),
                            return_path.as_bytes(),
                            &content,
                        ) {
                            Ok(()) => DeliveryOutcome::of(Reply::dynamic(
                                250,
                                0,
                                0,
                                format!("delivered to {}", dir.display()),
                            )),
                            Err(e) => DeliveryOutcome::of(Reply::dynamic(
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
                    DeliveryOutcome::of(Reply::dynamic(451, 3, 0, e.to_string()));
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

    #[test]
    fn line_ends_across_blocks() {
        let mut unix = LineEnds::default();
        let (mut all, mut out) = (Vec::new(), Vec::new());
        for block in [&b"a\r"[..], b"\nb\r", b"c\r\n\r", b"\r", b"\n", b"\r"] {
            unix.convert(block, &mut out);
            all.extend_from_slice(&out);
        }
        unix.finish(&mut out);
        all.extend_from_slice(&out);
        assert_eq!(all, b"a\nb\rc\n\r\n\r");
    }
}
