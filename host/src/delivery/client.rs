//! The SMTP (RFC 5321) and LMTP (RFC 2033) client that relays to a next hop: EHLO (HELO
//! fallback), STARTTLS per route policy, PIPELINING (RFC 2920) when offered, SIZE, BODY,
//! SMTPUTF8 and DSN parameters passed on, per-recipient outcomes.

use super::{BoxFuture, DeliveryOutcome, Outgoing, Transport};
use crate::config::TlsPolicy;
use crate::proto::Reply;
use crate::proto::params::{Body, Keyword};
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 5321 4.5.3.2 suggests 5 minutes for most replies and 10 for the end of data.
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
const DATA_END_TIMEOUT: Duration = Duration::from_secs(600);

/// Which dialect the next hop speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    /// RFC 2033: LHLO, and one reply per recipient after the data.
    Lmtp,
}

pub struct SmtpTransport {
    host: String,
    port: u16,
    tls: TlsPolicy,
    protocol: Protocol,
    hostname: String,
    tls_config: Arc<rustls::ClientConfig>,
}

impl SmtpTransport {
    /// `hostname` is ours, for EHLO; `host`/`port` the next hop.
    pub fn new(
        hostname: &str,
        host: &str,
        port: u16,
        tls: TlsPolicy,
        protocol: Protocol,
    ) -> SmtpTransport {
        SmtpTransport {
            host: host.to_string(),
            port,
            tls,
            protocol,
            hostname: hostname.to_string(),
            tls_config: crate::tls::delivery_client_config(),
        }
    }

    fn transient(&self, what: &str, e: impl std::fmt::Display) -> Reply {
        Reply::dynamic(
            451,
            4,
            4,
            format!("{what} {}:{}: {e}", self.host, self.port),
        )
    }

    /// One delivery; `Err` is a reply for every recipient (connection or MAIL failure).
    pub(super) async fn run(&self, msg: &Outgoing<'_>) -> Result<Vec<DeliveryOutcome>, Reply> {
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| self.transient("connect to", "timed out"))?
        .map_err(|e| self.transient("connect to", e))?;
        let _ = tcp.set_nodelay(true);
        let mut conn = Client::new(tcp);
        let greeting = conn
            .reply(REPLY_TIMEOUT)
            .await
            .map_err(|e| self.transient("greeting from", e))?;
        if greeting.code != 220 {
            return Err(greeting);
        }
        let ext = conn
            .hello(&self.hostname, self.protocol)
            .await
            .map_err(|e| self.transient("EHLO to", e))?;
        let ext = ext?;
        let starttls = ext.has("STARTTLS");
        if self.tls != TlsPolicy::None && starttls {
            conn.send(b"STARTTLS\r\n")
                .await
                .map_err(|e| self.transient("STARTTLS to", e))?;
            let reply = conn
                .reply(REPLY_TIMEOUT)
                .await
                .map_err(|e| self.transient("STARTTLS to", e))?;
            if reply.code == 220 {
                let tcp = conn.into_inner();
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .unwrap_or_else(|_| {
                        rustls::pki_types::ServerName::try_from("localhost").expect("valid name")
                    });
                let tls = tokio_rustls::TlsConnector::from(self.tls_config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.transient("TLS handshake with", e))?;
                let mut conn = Client::new(tls);
                let ext = conn
                    .hello(&self.hostname, self.protocol)
                    .await
                    .map_err(|e| self.transient("EHLO to", e))??;
                return self.transaction(&mut conn, &ext, msg).await;
            }
            if self.tls == TlsPolicy::Required {
                return Err(Reply::dynamic(
                    451,
                    7,
                    10,
                    format!("TLS required but STARTTLS refused: {reply}"),
                ));
            }
        } else if self.tls == TlsPolicy::Required {
            return Err(Reply::dynamic(
                451,
                7,
                10,
                format!(
                    "TLS required but {}:{} does not offer STARTTLS",
                    self.host, self.port
                ),
            ));
        }
        self.transaction(&mut conn, &ext, msg).await
    }

    async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        conn: &mut Client<S>,
        ext: &Extensions,
        msg: &Outgoing<'_>,
    ) -> Result<Vec<DeliveryOutcome>, Reply> {
        let env = msg.envelope;
        let io_err = |e: io::Error| self.transient("talking to", e);
        let utf8 = env.params.smtputf8;
        if utf8 && !ext.has("SMTPUTF8") {
            // RFC 6531 3.4: never send an SMTPUTF8 message to a server that lacks it.
            return Err(Reply::dynamic(
                553,
                6,
                7,
                format!("{}:{} does not support SMTPUTF8", self.host, self.port),
            ));
        }
        let dsn = ext.has("DSN");
        let mut mail = format!(
            "MAIL FROM:<{}>",
            env.sender
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        if ext.has("SIZE") {
            mail.push_str(&format!(" SIZE={}", msg.content.len()));
        }
        for param in env.params.to_wire() {
            let pass_on = match param.keyword {
                Keyword::Body => env.params.body == Some(Body::EightBitMime) && ext.has("8BITMIME"),
                Keyword::SmtpUtf8 => true,
                Keyword::Ret | Keyword::Envid => dsn,
                // SIZE is the size we send (above); AUTH= is the client's claim to us.
                _ => false,
            };
            if pass_on {
                mail.push_str(&format!(" {param}"));
            }
        }
        mail.push_str("\r\n");
        let rcpts: Vec<String> = msg
            .recipients
            .iter()
            .map(|&i| {
                let r = &env.recipients[i];
                let mut line = format!("RCPT TO:<{}>", r.address);
                if dsn {
                    for param in r.params.to_wire() {
                        line.push_str(&format!(" {param}"));
                    }
                }
                line.push_str("\r\n");
                line
            })
            .collect();

        let pipelining = ext.has("PIPELINING");
        let mut outcomes: Vec<Option<DeliveryOutcome>> = vec![None; rcpts.len()];
        let mail_reply;
        let mut accepted = Vec::new();
        let data_reply;
        if pipelining {
            let mut batch = mail.clone().into_bytes();
            for r in &rcpts {
                batch.extend_from_slice(r.as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            conn.send(&batch).await.map_err(io_err)?;
            mail_reply = conn.reply(REPLY_TIMEOUT).await.map_err(io_err)?;
            for (i, slot) in outcomes.iter_mut().enumerate() {
                let r = conn.reply(REPLY_TIMEOUT).await.map_err(io_err)?;
                if mail_reply.is_positive() && r.is_positive() {
                    accepted.push(i);
                } else {
                    *slot = Some(DeliveryOutcome::from_reply(if mail_reply.is_positive() {
                        r
                    } else {
                        mail_reply.clone()
                    }));
                }
            }
            data_reply = conn.reply(REPLY_TIMEOUT).await.map_err(io_err)?;
        } else {
            conn.send(mail.as_bytes()).await.map_err(io_err)?;
            mail_reply = conn.reply(REPLY_TIMEOUT).await.map_err(io_err)?;
            if !mail_reply.is_positive() {
                conn.quit().await;
                return Err(mail_reply);
            }
            for (i, line) in rcpts.iter().enumerate() {
                conn.send(line.as_bytes()).await.map_err(io_err)?;
                let r = conn.reply(REPLY_TIMEOUT).await.map_err(io_err)?;
                if r.is_positive() {
                    accepted.push(i);
                } else {
                    outcomes[i] = Some(DeliveryOutcome::from_reply(r));
                }
            }
            if accepted.is_empty() {
                conn.quit().await;
                return Ok(outcomes
                    .into_iter()
                    .map(|o| o.expect("every recipient refused"))
                    .collect());
            }
            conn.send(b"DATA\r\n").await.map_err(io_err)?;
            data_reply = conn.reply(REPLY_TIMEOUT).await.map_err(io_err)?;
        }
        if !mail_reply.is_positive() {
            if data_reply.code == 354 {
                // RFC 2920 3.1: nothing valid to send; end the data at once.
                conn.send(b".\r\n").await.map_err(io_err)?;
                let _ = conn.reply(DATA_END_TIMEOUT).await;
            }
            conn.quit().await;
            return Err(mail_reply);
        }
        if data_reply.code != 354 || accepted.is_empty() {
            if data_reply.code == 354 {
                conn.send(b".\r\n").await.map_err(io_err)?;
                let _ = conn.reply(DATA_END_TIMEOUT).await;
            }
            for &i in &accepted {
                outcomes[i] = Some(DeliveryOutcome::from_reply(data_reply.clone()));
            }
            conn.quit().await;
            return Ok(outcomes.into_iter().map(|o| o.expect("decided")).collect());
        }
        conn.send(&dot_stuff(msg.content)).await.map_err(io_err)?;
        if self.protocol == Protocol::Lmtp {
            // RFC 2033 4.2: one reply per accepted recipient, in order.
            for &i in &accepted {
                let r = conn.reply(DATA_END_TIMEOUT).await.map_err(io_err)?;
                outcomes[i] = Some(DeliveryOutcome::from_reply(r));
            }
        } else {
            let r = conn.reply(DATA_END_TIMEOUT).await.map_err(io_err)?;
            for &i in &accepted {
                outcomes[i] = Some(DeliveryOutcome::from_reply(r.clone()));
            }
        }
        conn.quit().await;
        Ok(outcomes.into_iter().map(|o| o.expect("decided")).collect())
    }
}

impl Transport for SmtpTransport {
    fn deliver<'a>(&'a self, msg: &'a Outgoing<'a>) -> BoxFuture<'a, Vec<DeliveryOutcome>> {
        Box::pin(async move {
            match self.run(msg).await {
                Ok(outcomes) => outcomes,
                Err(reply) => vec![DeliveryOutcome::from_reply(reply); msg.recipients.len()],
            }
        })
    }
}

/// RFC 5321 4.5.2: a leading dot gets another; the content ends with CRLF `.` CRLF.
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 5);
    let mut line_start = true;
    for &b in content {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// EHLO keywords of the next hop.
struct Extensions(Vec<String>);

impl Extensions {
    fn has(&self, keyword: &str) -> bool {
        self.0.iter().any(|l| {
            l.split_ascii_whitespace()
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }
}

/// The connection to the next hop: replies are read into `buf` and parsed by
/// `Reply::parse`.
struct Client<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// The stream for the TLS handshake; anything the server sent ahead is dropped with
    /// the buffer (RFC 3207 4.2 on the client side).
    fn into_inner(self) -> S {
        self.stream
    }

    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// EHLO, or LHLO for LMTP; falls back to HELO when EHLO is refused (RFC 5321 3.2).
    async fn hello(
        &mut self,
        name: &str,
        protocol: Protocol,
    ) -> io::Result<Result<Extensions, Reply>> {
        let verb = match protocol {
            Protocol::Smtp => "EHLO",
            Protocol::Lmtp => "LHLO",
        };
        self.send(format!("{verb} {name}\r\n").as_bytes()).await?;
        let reply = self.reply(REPLY_TIMEOUT).await?;
        if reply.code == 250 {
            return Ok(Ok(Extensions(
                reply.text.lines().skip(1).map(String::from).collect(),
            )));
        }
        if protocol == Protocol::Lmtp || !(500..=504).contains(&reply.code) {
            return Ok(Err(reply));
        }
        self.send(format!("HELO {name}\r\n").as_bytes()).await?;
        let reply = self.reply(REPLY_TIMEOUT).await?;
        Ok(if reply.code == 250 {
            Ok(Extensions(Vec::new()))
        } else {
            Err(reply)
        })
    }

    /// Reads one (possibly multi-line) reply (RFC 5321 4.2.1).
    async fn reply(&mut self, timeout: Duration) -> io::Result<Reply> {
        tokio::time::timeout(timeout, self.read_reply())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no reply in time"))?
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

    async fn quit(&mut self) {
        if self.send(b"QUIT\r\n").await.is_ok() {
            let _ = self.reply(Duration::from_secs(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb\r\n..c\r\n"),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[tokio::test]
    async fn multiline_reply_with_enhanced_codes() {
        let (a, mut b) = tokio::io::duplex(1024);
        b.write_all(b"250-2.0.0 mx.test greets\r\n250-2.0.0 PIPELINING\r\n250 2.0.0 SIZE 100\r\n")
            .await
            .unwrap();
        let mut c = Client::new(a);
        let r = c.reply(REPLY_TIMEOUT).await.unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.enhanced, Some(crate::proto::EnhancedCode(2, 0, 0)));
        assert_eq!(r.text, "mx.test greets\nPIPELINING\nSIZE 100");
    }
}
