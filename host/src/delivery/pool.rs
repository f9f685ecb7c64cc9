//! Connections to next hops kept open between messages (Postfix's connection cache): a
//! session that ended its transaction cleanly waits here, idle, for the next message to the
//! same hop (same host, port, protocol and TLS policy), which starts with RSET (RFC 5321
//! 4.1.1.5). A session serves at most `delivery.reuse_limit` messages and waits at most
//! `delivery.reuse_idle`; then it is closed with QUIT.

use super::conn::{Client, Extensions, Protocol};
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection to a next hop, before or after STARTTLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A connection a client opened to us and turned around with ATRN (RFC 2645).
    Reversed(Box<dyn Reversible>),
}

/// What an ATRN connection can be: any stream our listeners serve.
pub trait Reversible: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Reversible for T {}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Reversed(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Reversed(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
            Stream::Reversed(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Reversed(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What a reused connection must share with the hop it is taken for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub tls_name: String,
    pub tls: TlsKey,
}

/// How a pooled connection uses TLS: a verified or checked one under which trust anchors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TlsKey {
    Off,
    Opportunistic,
    Required(Option<std::path::PathBuf>),
    Testing(Option<std::path::PathBuf>),
}

/// A session with a next hop, greeted and past EHLO (and STARTTLS).
pub struct Session {
    pub conn: Client<Stream>,
    pub ext: Extensions,
    /// Transactions it carried.
    pub used: u32,
    idle_since: Instant,
}

impl Session {
    pub fn new(conn: Client<Stream>, ext: Extensions) -> Session {
        Session {
            conn,
            ext,
            used: 0,
            idle_since: Instant::now(),
        }
    }

    /// RSET before a reused session's next transaction: false when the hop hung up while
    /// it waited (or answers anything but 250).
    /// A hop that went silent (a NAT that forgot the connection) is given up on after
    /// `RSET_TIMEOUT`, not the whole command timeout.
    pub async fn reset(&mut self) -> bool {
        if self.conn.send(b"RSET\r\n").await.is_err() {
            return false;
        }
        let limit = RSET_TIMEOUT.min(self.conn.timeouts.command);
        matches!(self.conn.reply_within(limit).await, Ok(r) if r.code == 250)
    }
}

/// How long a reused session's RSET may take (Postfix's smtp_rset_timeout).
const RSET_TIMEOUT: Duration = Duration::from_secs(20);

/// Closes a session politely, off the caller's path.
fn close(mut session: Session) {
    tokio::spawn(async move { session.conn.quit().await });
}

#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Session>>>,
}

impl Pool {
    /// The most recently used idle session to `key` that has not waited longer than
    /// `max_idle`; older ones are closed.
    pub fn take(&self, key: &PoolKey, max_idle: Duration) -> Option<Session> {
        let mut idle = self.idle.lock().unwrap();
        let sessions = idle.get_mut(key)?;
        while let Some(s) = sessions.pop() {
            if s.idle_since.elapsed() <= max_idle {
                return Some(s);
            }
            close(s);
        }
        idle.remove(key);
        None
    }

    /// Keeps a session whose transaction ended cleanly for the next message, unless it
    /// carried `limit` already, `keep` of them wait for this hop, or the hop sent something
    /// nobody asked for (it would answer the next command).
    pub fn put(&self, key: PoolKey, mut session: Session, limit: u32, keep: usize) {
        session.used += 1;
        if session.used >= limit || !session.conn.is_idle() {
            return close(session);
        }
        let mut idle = self.idle.lock().unwrap();
        let sessions = idle.entry(key).or_default();
        if sessions.len() >= keep {
            return close(session);
        }
        session.idle_since = Instant::now();
        sessions.push(session);
    }

    /// Closes the sessions that waited longer than `max_idle`.
    pub fn expire(&self, max_idle: Duration) {
        let mut idle = self.idle.lock().unwrap();
        for sessions in idle.values_mut() {
            let (old, fresh): (Vec<Session>, Vec<Session>) = sessions
                .drain(..)
                .partition(|s| s.idle_since.elapsed() > max_idle);
            *sessions = fresh;
            old.into_iter().for_each(close);
        }
        idle.retain(|_, s| !s.is_empty());
    }
}
