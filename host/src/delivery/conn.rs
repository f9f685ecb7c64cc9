//! The wire side of the delivery client: one connection to a next hop, every read and write
//! under its own deadline (RFC 5321 4.5.3.2), replies parsed by `Reply::parse`.

use super::convert::Outbound;
use crate::config::Delivery;
use crate::proto::{Extension, Reply};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Smtp,
    /// RFC 2033: LHLO, and one reply per recipient after the data.
    Lmtp,
}

/// EHLO keywords of the next hop.
pub struct Extensions(Vec<String>);

impl Extensions {
    pub fn has(&self, extension: Extension) -> bool {
        self.0.iter().any(|l| {
            l.split_ascii_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(extension.keyword()))
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

    /// Writes `bytes` in blocks, each within the data timeout, so that a peer that stops
    /// reading cannot hold the connection longer than that per block.
    async fn write_blocks(&mut self, bytes: &[u8]) -> io::Result<()> {
        let limit = self.timeouts.data;
        for block in bytes.chunks(DATA_BLOCK) {
            within("data write", limit, self.stream.write_all(block)).await?;
        }
        Ok(())
    }

    /// Writes message data as it is (BDAT), as it is read from the spool, after `command`.
    /// Small pieces (our header fields, a short body) are gathered up to `DATA_BLOCK`, so
    /// a small message goes in one write.
    pub async fn send_content(&mut self, command: &[u8], content: &Outbound<'_>) -> io::Result<()> {
        let mut out = command.to_vec();
        let mut blocks = content.blocks();
        while let Some(block) = blocks.next().await? {
            if block.len() >= DATA_BLOCK {
                // A whole block from the spool goes as it is, not copied first.
                self.write_blocks(&out).await?;
                out.clear();
                self.write_blocks(&block).await?;
            } else {
                out.extend_from_slice(&block);
                self.write_full(&mut out).await?;
            }
        }
        self.write_blocks(&out).await?;
        within("data write", self.timeouts.data, self.stream.flush()).await
    }

    /// Writes message content after DATA: dot-stuffed and ended (RFC 5321 4.5.2), as it
    /// is read from the spool, gathered as `send_content` does. A content that cannot be
    /// read to its end (damage) is never ended: the error drops the connection, and the
    /// hop discards what it got.
    pub async fn send_stuffed(&mut self, content: &Outbound<'_>) -> io::Result<()> {
        let mut blocks = content.blocks();
        let mut stuffer = DotStuffer::default();
        let mut out = Vec::new();
        while let Some(block) = blocks.next().await? {
            stuffer.stuff(&block, &mut out);
            self.write_full(&mut out).await?;
        }
        stuffer.finish(&mut out);
        self.write_blocks(&out).await?;
        within("data write", self.timeouts.data, self.stream.flush()).await
    }

    /// Writes what is gathered once it fills a block.
    async fn write_full(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        if out.len() >= DATA_BLOCK {
            self.write_blocks(out).await?;
            out.clear();
        }
        Ok(())
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

/// RFC 5321 4.5.2: a leading dot gets another; the content ends with CRLF `.` CRLF. Done
/// block by block as the content is read (lines found with memchr), never on a whole copy.
#[derive(Default)]
struct DotStuffer {
    /// The last octet seen did not end a line.
    mid_line: bool,
    /// The last two octets seen, once any were.
    last: Option<[u8; 2]>,
}

impl DotStuffer {
    /// Appends the stuffed form of the next `block` of the content to `out`.
    fn stuff(&mut self, block: &[u8], out: &mut Vec<u8>) {
        let mut at = 0;
        while at < block.len() {
            if !self.mid_line && block[at] == b'.' {
                out.push(b'.');
            }
            match memchr::memchr(b'\n', &block[at..]) {
                Some(n) => {
                    out.extend_from_slice(&block[at..at + n + 1]);
                    at += n + 1;
                    self.mid_line = false;
                }
                None => {
                    out.extend_from_slice(&block[at..]);
                    at = block.len();
                    self.mid_line = true;
                }
            }
        }
        match block {
            [] => {}
            [only] => self.last = Some([self.last.map_or(0, |l| l[1]), *only]),
            [.., a, b] => self.last = Some([*a, *b]),
        }
    }

    /// Appends the end: a CRLF if the content lacks its last one, then `.` CRLF.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.last.is_some_and(|l| l != *b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Content;

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

    /// The stuffed form, the content given in blocks of `size`.
    fn stuffed(content: &[u8], size: usize) -> Vec<u8> {
        let mut stuffer = DotStuffer::default();
        let mut out = Vec::new();
        for block in content.chunks(size) {
            stuffer.stuff(block, &mut out);
        }
        stuffer.finish(&mut out);
        out
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
        let content = Content::from(vec![b'x'; 1 << 20]);
        let e = c
            .send_content(b"", &Outbound::Spooled(&content))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let e = c.reply().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }
}
