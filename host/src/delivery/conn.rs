//! The wire side of the delivery client: one connection to a next hop, every read and write
//! under its own deadline (RFC 5321 4.5.3.2), replies parsed by `Reply::parse`.

use crate::config::Delivery;
use crate::proto::Reply;
use std::io;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The client's deadlines, from `[delivery]`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub tls: Duration,
    pub command: Duration,
    pub data: Duration,
    pub data_end: Duration,
}

impl Timeouts {
    pub fn from_config(d: &Delivery) -> Timeouts {
        Timeouts {
            connect: d.connect_timeout.0,
            greeting: d.greeting_timeout.0,
            tls: d.tls_timeout.0,
            command: d.command_timeout.0,
            data: d.data_timeout.0,
            data_end: d.data_end_timeout.0,
        }
    }
}

/// Message data is written in blocks of this size, each under `Timeouts::data`.
const DATA_BLOCK: usize = 64 * 1024;

/// Which dialect the next hop speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    /// RFC 2033: LHLO, and one reply per recipient after the data.
    Lmtp,
}

/// EHLO keywords of the next hop.
pub struct Extensions(Vec<String>);

impl Extensions {
    pub fn has(&self, keyword: &str) -> bool {
        self.0.iter().any(|l| {
            l.split_ascii_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }
}

fn timed_out(what: &str, after: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} timed out after {after:?}"),
    )
}

/// Runs `work` under `limit`; a timeout becomes an `io::Error` naming `what`.
pub async fn within<T>(
    what: &str,
    limit: Duration,
    work: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| timed_out(what, limit))?
}

/// The connection to the next hop: replies are read into `buf` and parsed by
/// `Reply::parse`.
pub struct Client<S> {
    stream: S,
    buf: Vec<u8>,
    pub timeouts: Timeouts,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub fn new(stream: S, timeouts: Timeouts) -> Self {
        Client {
            stream,
            buf: Vec::new(),
            timeouts,
        }
    }

    /// The stream for the TLS handshake; anything the server sent ahead is dropped with
    /// the buffer (RFC 3207 4.2 on the client side).
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// Writes a command (or a pipelined group) within the command timeout.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let limit = self.timeouts.command;
        within("write", limit, async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await
    }

    /// Writes message data in blocks, each within the data timeout, so that a peer that
    /// stops reading cannot hold the connection longer than that per block.
    pub async fn send_data(&mut self, bytes: &[u8]) -> io::Result<()> {
        let limit = self.timeouts.data;
        for block in bytes.chunks(DATA_BLOCK) {
            within("data write", limit, self.stream.write_all(block)).await?;
        }
        within("data write", limit, self.stream.flush()).await
    }

    /// Writes message content after DATA: dot-stuffed and ended (RFC 5321 4.5.2), a block
    /// at a time as `send_data` does.
    pub async fn send_stuffed(&mut self, content: &[u8]) -> io::Result<()> {
        let limit = self.timeouts.data;
        let mut stuffer = DotStuffer::new(content);
        let mut block = Vec::with_capacity(DATA_BLOCK.min(content.len() + 8) + 1);
        while stuffer.next_block(&mut block, DATA_BLOCK) {
            within("data write", limit, self.stream.write_all(&block)).await?;
        }
        within("data write", limit, self.stream.flush()).await
    }

    /// EHLO, or LHLO for LMTP; falls back to HELO when EHLO is refused (RFC 5321 3.2).
    pub async fn hello(
        &mut self,
        name: &str,
        protocol: Protocol,
    ) -> io::Result<Result<Extensions, Reply>> {
        let verb = match protocol {
            Protocol::Smtp => "EHLO",
            Protocol::Lmtp => "LHLO",
        };
        self.send(format!("{verb} {name}\r\n").as_bytes()).await?;
        let reply = self.reply().await?;
        if reply.code == 250 {
            return Ok(Ok(Extensions(
                reply.text.lines().skip(1).map(String::from).collect(),
            )));
        }
        if protocol == Protocol::Lmtp || !(500..=504).contains(&reply.code) {
            return Ok(Err(reply));
        }
        self.send(format!("HELO {name}\r\n").as_bytes()).await?;
        let reply = self.reply().await?;
        Ok(if reply.code == 250 {
            Ok(Extensions(Vec::new()))
        } else {
            Err(reply)
        })
    }

    /// Nothing received and not yet read.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads one reply to a command.
    pub async fn reply(&mut self) -> io::Result<Reply> {
        self.reply_within(self.timeouts.command).await
    }

    /// Reads one (possibly multi-line) reply (RFC 5321 4.2.1) within `limit`.
    pub async fn reply_within(&mut self, limit: Duration) -> io::Result<Reply> {
        within("reply", limit, self.read_reply()).await
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            match Reply::parse(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn quit(&mut self) {
        if self.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.reply_within(Duration::from_secs(10)).await;
        }
    }
}

/// RFC 5321 4.5.2: a leading dot gets another; the content ends with CRLF `.` CRLF. The
/// stuffed form is made a block at a time (lines found with memchr), never as a whole copy.
struct DotStuffer<'a> {
    content: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> DotStuffer<'a> {
    fn new(content: &'a [u8]) -> Self {
        DotStuffer {
            content,
            at: 0,
            done: false,
        }
    }

    /// Replaces `out` with the next block of about `size` octets; false when none is left.
    fn next_block(&mut self, out: &mut Vec<u8>, size: usize) -> bool {
        out.clear();
        if self.done {
            return false;
        }
        let content = self.content;
        while self.at < content.len() && out.len() < size {
            // Each step starts a line (or goes on with one longer than a block).
            let line_start = self.at == 0 || content[self.at - 1] == b'\n';
            if line_start && content[self.at] == b'.' {
                out.push(b'.');
            }
            let room = self.at + (size - out.len()).max(1);
            let end = match memchr::memchr(b'\n', &content[self.at..room.min(content.len())]) {
                Some(n) => self.at + n + 1,
                None => room.min(content.len()),
            };
            out.extend_from_slice(&content[self.at..end]);
            self.at = end;
        }
        if self.at == content.len() && out.len() < size {
            if !content.is_empty() && !content.ends_with(b"\r\n") {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b".\r\n");
            self.done = true;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn timeouts(each: Duration) -> Timeouts {
        Timeouts {
            connect: each,
            greeting: each,
            tls: each,
            command: each,
            data: each,
            data_end: each,
        }
    }

    /// The stuffed form, in blocks of `size`.
    fn stuffed(content: &[u8], size: usize) -> Vec<u8> {
        let mut stuffer = DotStuffer::new(content);
        let (mut block, mut all) = (Vec::new(), Vec::new());
        while stuffer.next_block(&mut block, size) {
            assert!(block.len() <= size + 5, "a block of {}", block.len());
            all.extend_from_slice(&block);
        }
        all
    }

    #[test]
    fn stuffing() {
        for size in [1, 2, 3, 7, 64 * 1024] {
            assert_eq!(
                stuffed(b".a\r\nb\r\n..c\r\n", size),
                b"..a\r\nb\r\n...c\r\n.\r\n"
            );
            assert_eq!(stuffed(b"no newline", size), b"no newline\r\n.\r\n");
            assert_eq!(stuffed(b"", size), b".\r\n");
            assert_eq!(stuffed(b"x\r\n.", size), b"x\r\n..\r\n.\r\n");
        }
    }

    #[tokio::test]
    async fn multiline_reply_with_enhanced_codes() {
        let (a, mut b) = tokio::io::duplex(1024);
        b.write_all(b"250-2.0.0 mx.test greets\r\n250-2.0.0 PIPELINING\r\n250 2.0.0 SIZE 100\r\n")
            .await
            .unwrap();
        let mut c = Client::new(a, timeouts(Duration::from_secs(5)));
        let r = c.reply().await.unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.enhanced, Some(crate::proto::EnhancedCode(2, 0, 0)));
        assert_eq!(r.text, "mx.test greets\nPIPELINING\nSIZE 100");
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_times_out() {
        // 1 KiB of buffer and nobody reading: the data write must give up, not hang.
        let (a, _b) = tokio::io::duplex(1024);
        let mut c = Client::new(a, timeouts(Duration::from_millis(100)));
        let e = c.send_data(&vec![b'x'; 1 << 20]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let e = c.reply().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
