//! A message while it is received: its content goes to the spool in parts as it streams in
//! (part records, written but not synced), so a session holds one block in memory, and one
//! on its way to the writer, whatever the message's size. Nothing is synced before the
//! end of data: the message record that names the parts is committed with the group after
//! the plugins' verdict, and only then does the message exist. Parts of a refused,
//! tempfailed or abandoned transaction (or one cut short by a crash) are dead space, held
//! in the index only while the session lives, and reclaimed with their segments.

use super::content::{BLOCK, Content, OnDisk, Piece};
use super::record::{Record, Span};
use super::writer::{Answer, PartWritten, Request};
use super::{Spool, SpoolId};
use bytes::Bytes;
use std::io;
use tokio::sync::oneshot;

pub struct Incoming {
    spool: Spool,
    id: SpoolId,
    /// Where the receiver puts the content; sent as a part once `BLOCK` long.
    block: Vec<u8>,
    /// The parts written so far, in order.
    parts: Vec<Piece>,
    /// What this session holds in the index (the parts' records), in `generation`.
    held: Vec<Span>,
    generation: Option<u64>,
    /// The part on its way to the writer.
    in_flight: Option<oneshot::Receiver<io::Result<PartWritten>>>,
    /// Why the content cannot be kept: the rest is read and dropped, the message refused.
    failed: Option<io::Error>,
    /// `spool.min_free`: below it no more parts are written.
    min_free: u64,
}

impl Spool {
    /// A new message to receive, under a new id; parts stop when free space falls below
    /// `min_free`.
    pub fn incoming(&self, min_free: u64) -> Incoming {
        Incoming {
            spool: self.clone(),
            id: SpoolId::generate(),
            block: Vec::new(),
            parts: Vec::new(),
            held: Vec::new(),
            generation: None,
            in_flight: None,
            failed: None,
            min_free,
        }
    }
}

impl Incoming {
    /// The id the message will be queued under.
    pub fn id(&self) -> &SpoolId {
        &self.id
    }

    /// Where the content goes as it is received.
    pub fn block(&mut self) -> &mut Vec<u8> {
        &mut self.block
    }

    /// Sends the block to the spool once it is full, after the previous one was written
    /// (one in flight: a writer slower than the client slows the client).
    pub async fn flush(&mut self) {
        if self.block.len() < BLOCK {
            return;
        }
        self.settle().await;
        if self.failed.is_none() {
            match self.spool.free_space() {
                Ok(free) if free < self.min_free => {
                    tracing::warn!(
                        free,
                        needed = self.min_free,
                        "spool filesystem nearly full; the message being received is refused"
                    );
                    self.failed = Some(io::ErrorKind::StorageFull.into());
                }
                _ => {}
            }
        }
        if self.failed.is_some() {
            self.block.clear();
            return;
        }
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK + (64 << 10)));
        let (tx, rx) = oneshot::channel();
        let sent = self.spool.request(Request {
            records: vec![Record::Part {
                id: self.id.clone(),
                content: Bytes::from(block),
            }],
            reply: Answer::Part(tx),
            generation: None,
        });
        match sent {
            Ok(()) => self.in_flight = Some(rx),
            Err(e) => self.failed = Some(e),
        }
    }

    /// Waits for the part in flight and keeps where it went.
    async fn settle(&mut self) {
        let Some(rx) = self.in_flight.take() else {
            return;
        };
        let written = match rx.await {
            Ok(written) => written,
            Err(_) => Err(io::Error::other("the spool writer stopped")),
        };
        match written {
            Ok(w) => self.keep(w),
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
    }

    fn keep(&mut self, w: PartWritten) {
        if self.generation.is_some_and(|g| g != w.generation) {
            // The index was rebuilt between two parts: the earlier ones are not trusted
            // (the writer refuses the message too), and this one is let go at once.
            self.failed
                .get_or_insert_with(|| io::Error::other("a failed spool write lost a part"));
            let mut index = self.spool.index.lock().unwrap();
            if index.generation == w.generation {
                index.release(w.span);
            }
            return;
        }
        self.generation = Some(w.generation);
        self.held.push(w.span);
        self.parts
            .push(Piece::Disk(OnDisk::whole(w.file, w.span, w.crc)));
    }

    /// The content received: the parts on disk, then the last block in memory. An error
    /// when a part could not be written (the message is to be refused).
    pub async fn finish(&mut self) -> io::Result<Content> {
        self.settle().await;
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let mut pieces = std::mem::take(&mut self.parts);
        pieces.push(Piece::Mem(Bytes::from(std::mem::take(&mut self.block))));
        Ok(Content::new(pieces))
    }

    /// The generation its parts were written in (none written: `None`).
    pub(super) fn generation(&self) -> Option<u64> {
        self.generation
    }
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Incoming({})", self.id)
    }
}

impl Drop for Incoming {
    /// Lets go of the parts: dead space, unless a message record committed meanwhile
    /// holds them.
    fn drop(&mut self) {
        let mut let_go = false;
        if let Some(mut rx) = self.in_flight.take() {
            // Written but not taken yet: let go of it too (a part answered after this
            // close is let go by the writer).
            rx.close();
            if let Ok(Ok(w)) = rx.try_recv() {
                let mut index = self.spool.index.lock().unwrap();
                if index.generation == w.generation {
                    index.release(w.span);
                    let_go = true;
                }
            }
        }
        if let Some(generation) = self.generation {
            let mut index = self.spool.index.lock().unwrap();
            if index.generation == generation {
                for span in self.held.drain(..) {
                    index.release(span);
                    let_go = true;
                }
            }
        }
        if let_go {
            // Wakes the writer, so that the space comes back now, not at the next message.
            let _ = self.spool.request(Request {
                records: Vec::new(),
                reply: Answer::Lazy,
                generation: None,
            });
        }
    }
}
