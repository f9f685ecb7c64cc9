//! Import of a spool in the format of wasmtp before the log (`queue/<id>.msg`: a JSON
//! envelope line, then the message; `queue/<id>.state`: the delivery state, if any).
//!
//! Each message is written as a record with its state and made durable, and only then are
//! the old files removed; a crash in between imports them again at the next start, and
//! the later record of the same id wins, so nothing is lost or doubled.

use super::content::Content;
use super::record::Record;
use super::writer::Writer;
use std::fs;
use std::io;
use std::path::Path;

/// Octets of messages written per sync.
const BATCH: usize = 64 << 20;

/// Imports `queue/` (if any) into the log; returns how many messages it held.
pub(super) fn import(root: &Path, writer: &mut Writer) -> io::Result<usize> {
    let queue = root.join("queue");
    let done = root.join("queue.imported");
    let entries = match fs::read_dir(&queue) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            remove_imported(root)?;
            return Ok(0);
        }
        Err(e) => return Err(e),
    };
    let mut count = 0;
    let mut batch = Vec::new();
    let mut octets = 0;
    for entry in entries {
        let path = entry?.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".msg"))
            .and_then(super::SpoolId::parse)
        else {
            continue;
        };
        let bytes = fs::read(&path)?;
        let split = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: no envelope line", path.display()),
            )
        })?;
        let state = match fs::read(path.with_extension("state")) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        octets += bytes.len();
        let bytes = bytes::Bytes::from(bytes);
        let record = Record::message(
            id,
            &bytes[..split],
            state.as_deref(),
            Content::from(bytes.slice(split + 1..)).stored(),
        );
        batch.push(record);
        count += 1;
        if octets >= BATCH {
            writer.write(batch.iter(), true)?;
            batch.clear();
            octets = 0;
        }
    }
    writer.write(batch.iter(), true)?;
    if count > 0 {
        tracing::info!(count, "spool: imported messages of the earlier format");
    }
    // Out of the way for good (the rename made durable) before it is removed: a `queue/`
    // that came back after a crash would be imported again over newer states.
    fs::rename(&queue, &done)?;
    fs::File::open(root)?.sync_all()?;
    remove_imported(root)?;
    Ok(count)
}

/// Removes what an import left: the old queue once renamed, and the old `tmp/`.
fn remove_imported(root: &Path) -> io::Result<()> {
    for dir in [root.join("queue.imported"), root.join("tmp")] {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}
