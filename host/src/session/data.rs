//! DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030): the content goes to the spool in blocks as
//! it arrives (`spool::Incoming`), so a session holds a block or two whatever the size;
//! at its end the header section is read back for the checks and the policy
//! (`message.rs`), and the 250 goes out only once the message is durably spooled.

use super::{Conn, Session, read_more};
use crate::proto::data::{BdatChunk, BdatReceiver, DataReceiver, Received};
use crate::proto::header::{self, HEADER_MAX};
use crate::proto::{Reply, replies};
use crate::spool::Incoming;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// A message sent in BDAT chunks, between its first chunk and its last.
#[derive(Debug)]
pub(super) struct Chunked {
    receiver: BdatReceiver,
    incoming: Incoming,
}

impl Chunked {
    pub(super) fn queue_id(&self) -> &crate::spool::SpoolId {
        self.incoming.id()
    }
}

impl Session {
    /// What DATA and BDAT both need (RFC 5321 4.1.1.4, RFC 3030 4): a greeting, a
    /// transaction with recipients, and room in the spool, checked before the content
    /// costs anything.
    fn ready_for_content(&self) -> Result<(), Reply> {
        if self.helo.is_none() {
            return Err(replies::HELO_FIRST);
        }
        let Some(tx) = &self.tx else {
            return Err(replies::NEED_MAIL);
        };
        if tx.recipients.is_empty() {
            return Err(replies::NEED_RCPT);
        }
        if !self.spool_has_room() {
            return Err(replies::SPOOL_FULL);
        }
        Ok(())
    }

    pub(super) fn check_data(&self) -> Result<(), Reply> {
        if self.tx.as_ref().is_some_and(|tx| tx.bdat.is_some()) {
            return Err(replies::DATA_IN_BDAT);
        }
        self.ready_for_content()
    }

    /// Where the content goes; its queue id is on the transaction's log lines from here.
    fn incoming(&self) -> Incoming {
        let incoming = self.ctx.spool.incoming(self.ctx.config.spool.min_free.0);
        tracing::Span::current().record("queue_id", tracing::field::display(incoming.id()));
        incoming
    }

    /// Reads content after 354. `None` when the client went away (or timed out) mid-data:
    /// what was written of it is dead space.
    pub(super) async fn receive_data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<'_, S>,
    ) -> io::Result<Option<Reply>> {
        let max = usize::try_from(self.ctx.config.limits.message_size.0).unwrap_or(usize::MAX);
        let timeout = self.ctx.config.limits.data_timeout.0;
        let mut receiver = DataReceiver::new(max);
        let mut incoming = self.incoming();
        loop {
            let (used, done) = receiver.ingest(conn.pending(), incoming.block());
            conn.start += used;
            if done {
                break;
            }
            incoming.flush().await;
            if !read_more(conn, timeout).await? {
                self.tx = None;
                return Ok(None);
            }
        }
        Ok(Some(
            Box::pin(self.end_of_content(receiver.finish(), incoming)).await,
        ))
    }

    /// Reads one BDAT chunk. The chunk's octets are always consumed, even when the command
    /// is refused, so that they are never taken for commands (RFC 3030 2).
    pub(super) async fn receive_bdat<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<'_, S>,
        size: u64,
        last: bool,
    ) -> io::Result<Option<Reply>> {
        let max = self.ctx.config.limits.message_size.0;
        let timeout = self.ctx.config.limits.data_timeout.0;
        // The first chunk checks what DATA checks; later ones only that the transaction
        // goes on (the spool's room is then watched part by part).
        let first = self.tx.as_ref().is_none_or(|tx| tx.bdat.is_none());
        let refusal = if first {
            self.ready_for_content().err()
        } else {
            None
        };
        if refusal.is_none() && first {
            let chunked = Chunked {
                receiver: BdatReceiver::new(max),
                incoming: self.incoming(),
            };
            if let Some(tx) = self.tx.as_mut() {
                tx.bdat = Some(Box::new(chunked));
            }
        }
        let mut chunked = match (&refusal, self.tx.as_mut()) {
            (None, Some(tx)) => tx.bdat.as_deref_mut(),
            _ => None,
        };
        let mut chunk = BdatChunk::new(size);
        while !chunk.is_complete() {
            if conn.pending().is_empty() && !read_more(conn, timeout).await? {
                self.tx = None;
                return Ok(None);
            }
            let octets = chunk.take(&conn.buf[conn.start..]);
            if let Some(c) = chunked.as_deref_mut() {
                c.receiver.ingest(octets, c.incoming.block());
            }
            conn.start += octets.len();
            if let Some(c) = chunked.as_deref_mut() {
                c.incoming.flush().await;
            }
        }
        if let Some(reply) = refusal {
            return Ok(Some(reply));
        }
        let Some(tx) = self.tx.as_mut() else {
            return Ok(Some(replies::NEED_MAIL));
        };
        if tx.bdat.as_ref().is_some_and(|c| c.receiver.too_large()) {
            return Ok(Some(self.refuse_message(replies::SIZE_EXCEEDED)));
        }
        if !last {
            return Ok(Some(Reply::dynamic(
                250,
                0,
                0,
                format!("{size} octets received"),
            )));
        }
        let Some(chunked) = tx.bdat.take() else {
            return Ok(Some(replies::NEED_MAIL));
        };
        let Chunked {
            receiver,
            mut incoming,
        } = *chunked;
        let received = receiver.finish(incoming.block());
        Ok(Some(
            Box::pin(self.end_of_content(received, incoming)).await,
        ))
    }

    /// The whole message is in (DATA's end or the last BDAT chunk): refused if it broke a
    /// rule on the way, else handed on with its header section read back.
    async fn end_of_content(&mut self, received: Received, mut incoming: Incoming) -> Reply {
        if received.bare_newline {
            return self.refuse_message(replies::BARE_NEWLINE_DATA);
        }
        if received.too_large {
            // RFC 1870 6.3 / RFC 5321 4.5.3.1.10: 552 once the data exceeded the limit.
            return self.refuse_message(replies::SIZE_EXCEEDED);
        }
        let content = match incoming.finish().await {
            Ok(content) => content,
            Err(e) => {
                tracing::error!(error = %e, "spool write failed while receiving; message refused");
                return self.refuse_message(spool_error(&e));
            }
        };
        // The header section, with the empty line that ends it: read back from the first
        // parts (at most HEADER_MAX of them; a larger one is refused), on a blocking thread
        // when any is on disk.
        let read = if content.on_disk() {
            let content = content.clone();
            tokio::task::spawn_blocking(move || content.read_at(0, HEADER_MAX + 2))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
        } else {
            content.read_at(0, HEADER_MAX + 2)
        };
        let start = match read {
            Ok(start) => start,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the message back; refused");
                return self.refuse_message(replies::SPOOL_FAILED);
            }
        };
        let header_len = match header::body_start(&start) {
            Some(n) if n <= HEADER_MAX + 2 => n,
            None if content.len() <= HEADER_MAX as u64 => start.len(),
            _ => return self.refuse_message(replies::HEADER_TOO_LARGE),
        };
        let mut header = start;
        header.truncate(header_len);
        if trace_fields(&header) > self.ctx.config.limits.hop_limit {
            return self.refuse_message(replies::TOO_MANY_HOPS);
        }
        let body = content.skip(header_len as u64);
        self.complete_message(incoming, header, body).await
    }

    /// Ends the transaction with a refusal (RFC 5321 4.1.1.4: the transaction is over).
    pub(super) fn refuse_message(&mut self, reply: Reply) -> Reply {
        if let Some(tx) = self.tx.take() {
            self.summary(super::summary::Ended {
                outcome: "refused",
                reply: &reply,
                sender: &tx.sender,
                recipients: &tx.recipients,
                queue_id: None,
                size: 0,
                spf: &tx.spf,
                auth: None,
                started: tx.started,
            });
        }
        reply
    }
}

/// The reply for a spool that could not take a message.
pub(super) fn spool_error(e: &io::Error) -> Reply {
    if e.kind() == io::ErrorKind::StorageFull {
        replies::SPOOL_FULL
    } else {
        replies::SPOOL_FAILED
    }
}

/// The number of `Received:` fields in the header section (RFC 5321 4.4).
fn trace_fields(header: &[u8]) -> usize {
    header::fields(header).filter(|f| f.is("received")).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_trace_fields_in_the_header_only() {
        let msg =
            b"Received: a\r\n\tcontinued\r\nRECEIVED: b\r\nSubject: x\r\n\r\nReceived: body\r\n";
        assert_eq!(trace_fields(msg), 2);
        assert_eq!(trace_fields(b""), 0);
    }
}
