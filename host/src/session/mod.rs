//! One SMTP session: reads command lines, answers them, receives content. Generic over the
//! stream so that STARTTLS can hand the same session to a TLS stream, and tests can drive it
//! over an in-memory pipe.
//!
//! Replies to a pipelined group (RFC 2920) are collected in `out` and written in order when
//! the read buffer holds no further complete command, i.e. once per group.

mod auth;
pub use auth::hash_password;
mod context;
pub use context::Context;
mod data;
mod ehlo;
mod hooks;
mod mail;
mod message;
mod summary;
#[cfg(test)]
mod tests;

use crate::config::Mode;
use crate::proto::command::Command;
use crate::proto::line::{Line, LineReader};
use crate::proto::{MailParams, Mailbox, Reply, replies};
use crate::spool::Recipient;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

/// How a session run ended.
pub enum Outcome {
    Closed,
    /// The client asked for STARTTLS and got 220: the caller does the handshake and runs the
    /// session again on the TLS stream. Bytes buffered so far are dropped with the run.
    StartTls,
    /// The client sent ATRN and got 250 (RFC 2645): the caller hands the stream to the
    /// grant, which delivers the domains' mail over it.
    Atrn(crate::delivery::Grant),
}

/// What the dispatcher asks the I/O loop to do next.
enum Next {
    Continue,
    Data,
    Bdat { size: u64, last: bool },
    StartTls,
    Atrn(crate::delivery::Grant),
    Close,
}

#[derive(Debug, Clone)]
struct Helo {
    name: String,
    extended: bool,
    /// SPF of the HELO identity, checked at the first MAIL after this HELO.
    spf: Option<crate::mailauth::SpfCheck>,
}

/// An open mail transaction (RFC 5321 3.3): only exists between MAIL and the end of data.
#[derive(Debug)]
struct Transaction {
    sender: Option<Mailbox>,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// Set once the first BDAT arrived; DATA is then out of sequence (RFC 3030 4.1).
    bdat: Option<Box<data::Chunked>>,
    /// Counts it among the open transactions, whose commits the spool groups.
    _open: crate::spool::OpenTransaction,
    /// SPF of the HELO and MAIL FROM identities, checked at MAIL.
    spf: crate::mailauth::SpfResults,
    /// How long those checks took: the message's verification at the end of data has
    /// `authentication.timeout` less that (the budget is the whole message's).
    auth_spent: std::time::Duration,
    /// When MAIL was taken: the transaction's log line says how long it took.
    started: std::time::Instant,
}

/// The span of a message's content (DATA, or one BDAT chunk): its lines carry the queue
/// id, recorded once the content has one.
fn transaction_span() -> tracing::Span {
    tracing::info_span!("transaction", queue_id = tracing::field::Empty)
}

pub struct Session {
    ctx: Arc<Context>,
    mode: Mode,
    peer: SocketAddr,
    /// Protocol and cipher, once TLS is up.
    tls: Option<String>,
    helo: Option<Helo>,
    auth_user: Option<String>,
    tx: Option<Transaction>,
    sasl: Option<auth::SaslStep>,
    /// Error replies so far (4xx and 5xx): `limits.soft_error_limit`, `error_limit`.
    errors: u32,
    /// Failed AUTH attempts on this connection (`limits.auth_failures`).
    auth_failures: u32,
    /// This session's plugin instances (none without `[[plugin]]`).
    plugins: Option<crate::plugin::PluginSession>,
    /// What the plugins were last told of the session (`hooks::policy`).
    info: Option<crate::plugin::SessionInfo>,
    /// Set by a plugin's disconnect verdict: close after the pending reply.
    closing: bool,
}

/// The connection's buffers: one reused read buffer, consumed from `start`.
struct Conn<'a, S> {
    stream: &'a mut S,
    buf: Vec<u8>,
    start: usize,
    out: Vec<u8>,
    lines: LineReader,
    /// For each write: a client that stops reading loses its slot.
    write_timeout: Duration,
    /// The last read filled all the room it had: more is on its way.
    streaming: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Takes the next complete command line from the buffer.
    fn take_line(&mut self) -> Line {
        let (line, used) = self.lines.take(&self.buf[self.start..]);
        self.start += used;
        line
    }

    /// Reads more bytes; Ok(0) at end of stream. The buffer is sized to what is pending: a
    /// session waiting for its next command holds a small one (most of the memory of
    /// thousands of idle sessions would otherwise be read buffers); a read that fills its
    /// space means more is coming (message data), and the next reads get large ones.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start == self.buf.len() {
            self.start = 0;
            if self.streaming {
                self.buf.clear();
            } else {
                // Nothing pending and no stream of data: give the memory back.
                self.buf = Vec::new();
            }
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let room = if self.streaming { 64 * 1024 } else { 1024 };
        // Into spare capacity: a read cancelled (shutdown) leaves nothing behind.
        self.buf.reserve(room);
        let result = self.stream.read_buf(&mut self.buf).await;
        // A read that filled the small buffer, or any sizeable one (TLS gives at most a
        // record, 16 KiB, at a time): data is streaming.
        self.streaming = *result.as_ref().unwrap_or(&0) >= 1024;
        result
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let write = async {
                self.stream.write_all(&self.out).await?;
                self.stream.flush().await
            };
            tokio::time::timeout(self.write_timeout, write)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read"))??;
            self.out.clear();
        }
        Ok(())
    }
}

impl Session {
    pub fn new(ctx: Arc<Context>, mode: Mode, peer: SocketAddr) -> Session {
        let plugins = ctx
            .plugins
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|p| p.session());
        Session {
            plugins,
            info: None,
            closing: false,
            ctx,
            mode,
            peer,
            tls: None,
            helo: None,
            auth_user: None,
            tx: None,
            sasl: None,
            errors: 0,
            auth_failures: 0,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::plain(
            220,
            format!("{} ESMTP wasmtp ready", self.ctx.config.hostname),
        )
    }

    /// RFC 3207 4.2: after the handshake the server discards all knowledge obtained from
    /// the client (HELO name, transaction, authentication).
    pub fn tls_started(&mut self, description: String) {
        self.tls = Some(description);
        self.helo = None;
        self.tx = None;
        self.auth_user = None;
        self.sasl = None;
    }

    /// Runs the dialogue on `stream` until QUIT, EOF, an error, shutdown or STARTTLS.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        greeting: Option<Reply>,
    ) -> io::Result<Outcome> {
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
            start: 0,
            streaming: false,
            out: Vec::new(),
            lines: LineReader::default(),
            write_timeout: self.ctx.config.limits.command_timeout.0,
        };
        if let Some(g) = greeting {
            // The connect hook decides whether the client is greeted at all.
            let decision = Box::pin(self.policy(crate::plugin::Call::Connect)).await;
            if let Some(refusal) = self.refusal(decision) {
                refusal.write_to(&mut conn.out);
                conn.flush().await?;
                return Ok(Outcome::Closed);
            }
            g.write_to(&mut conn.out);
        }
        let mut shutdown = self.ctx.shutdown.clone();
        // Set once shutdown is requested, or once the server that could request it is gone.
        let mut stopping = *shutdown.borrow();
        let limits = self.ctx.config.limits.clone();
        let command_timeout = limits.command_timeout.0;
        loop {
            let errors_before = self.errors;
            conn.lines.expect_sasl(self.sasl.is_some());
            let next = match conn.take_line() {
                // Each command's work is boxed: the session's own future (what an idle
                // session costs) stays small however large a command's steps are.
                Line::Text(line) => Box::pin(self.dispatch(&line, &mut conn.out)).await,
                Line::Bad(reply) => {
                    self.reply(&mut conn.out, reply);
                    Next::Continue
                }
                Line::Incomplete => {
                    conn.flush().await?;
                    // SPEC: on shutdown idle sessions get 421 4.3.2; a transaction in
                    // flight may finish first.
                    if stopping && self.tx.is_none() {
                        replies::SHUTTING_DOWN.write_to(&mut conn.out);
                        conn.flush().await?;
                        return Ok(Outcome::Closed);
                    }
                    let read = tokio::select! {
                        r = tokio::time::timeout(command_timeout, conn.fill()) => r,
                        _ = shutdown.wait_for(|stop| *stop), if !stopping => {
                            stopping = true;
                            continue;
                        }
                    };
                    match read {
                        Ok(Ok(0)) => return Ok(Outcome::Closed),
                        Ok(Ok(_)) => continue,
                        Ok(Err(e)) => return Err(e),
                        Err(_) => {
                            replies::TIMEOUT.write_to(&mut conn.out);
                            conn.flush().await?;
                            return Ok(Outcome::Closed);
                        }
                    }
                }
            };
            match next {
                Next::Continue => {}
                Next::Close => {
                    conn.flush().await?;
                    return Ok(Outcome::Closed);
                }
                Next::StartTls => {
                    conn.flush().await?;
                    return Ok(Outcome::StartTls);
                }
                Next::Atrn(grant) => {
                    conn.flush().await?;
                    return Ok(Outcome::Atrn(grant));
                }
                Next::Data => {
                    conn.flush().await?;
                    let data = self.receive_data(&mut conn).instrument(transaction_span());
                    let Some(reply) = Box::pin(data).await? else {
                        return Ok(Outcome::Closed);
                    };
                    self.reply(&mut conn.out, reply);
                }
                Next::Bdat { size, last } => {
                    let span = transaction_span();
                    if let Some(id) = self.tx.as_ref().and_then(|tx| tx.bdat.as_ref()) {
                        span.record("queue_id", tracing::field::display(id.queue_id()));
                    }
                    let bdat = self.receive_bdat(&mut conn, size, last).instrument(span);
                    let Some(reply) = Box::pin(bdat).await? else {
                        return Ok(Outcome::Closed);
                    };
                    self.reply(&mut conn.out, reply);
                }
            }
            if self.closing {
                conn.flush().await?;
                return Ok(Outcome::Closed);
            }
            if self.errors >= limits.error_limit {
                replies::TOO_MANY_ERRORS.write_to(&mut conn.out);
                conn.flush().await?;
                return Ok(Outcome::Closed);
            }
            // Postfix's error_sleep_time: past the soft limit each error reply is delayed,
            // longer each time, so that a client probing addresses or passwords slows down.
            if self.errors > errors_before && self.errors > limits.soft_error_limit {
                let excess = self.errors - limits.soft_error_limit;
                let delay = (limits.error_delay.0 * excess).min(command_timeout);
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// Writes a reply, counting error replies (4xx and 5xx) towards the error limits.
    fn reply(&mut self, out: &mut Vec<u8>, reply: Reply) {
        if reply.code >= 400 {
            self.errors += 1;
        }
        reply.write_to(out);
    }

    async fn dispatch(&mut self, line: &str, out: &mut Vec<u8>) -> Next {
        if let Some(step) = self.sasl.take() {
            let reply = self.sasl_response(step, line).await;
            self.reply(out, reply);
            return Next::Continue;
        }
        let command = match crate::proto::command::parse_command(line) {
            Ok(c) => c,
            Err(e) => {
                self.reply(out, e.reply());
                return Next::Continue;
            }
        };
        let reply = match command {
            Command::Helo(name) => self.handle_helo(name, false).await,
            Command::Ehlo(name) => self.handle_helo(name, true).await,
            Command::Mail(from, params) => self.handle_mail(from, params).await,
            Command::Rcpt(to, params) => self.handle_rcpt(to, params).await,
            Command::Data => match self.check_data() {
                Ok(()) => {
                    replies::START_DATA.write_to(out);
                    return Next::Data;
                }
                Err(reply) => reply,
            },
            Command::Bdat { size, last } => return Next::Bdat { size, last },
            Command::Rset => {
                self.tx = None;
                replies::RESET_OK
            }
            Command::Noop => replies::NOOP_OK,
            Command::Quit => {
                replies::BYE.write_to(out);
                return Next::Close;
            }
            Command::Help => replies::HELP,
            // RFC 5321 3.5.3: 252 neither confirms nor denies that the user exists;
            // plugins may refuse instead (the vrfy-expn-guard plugin answers 502).
            Command::Vrfy(arg) => {
                let decision = self.policy(crate::plugin::Call::Vrfy(&arg)).await;
                self.refusal(decision).unwrap_or(replies::CANNOT_VRFY)
            }
            Command::Expn(arg) => {
                let decision = self.policy(crate::plugin::Call::Expn(&arg)).await;
                self.refusal(decision).unwrap_or(replies::CANNOT_VRFY)
            }
            Command::StartTls => match self.check_starttls() {
                Ok(()) => {
                    replies::START_TLS.write_to(out);
                    return Next::StartTls;
                }
                Err(reply) => reply,
            },
            Command::Auth { mechanism, initial } => self.handle_auth(mechanism, initial).await,
            Command::Etrn(domain) => self.handle_etrn(domain),
            Command::Atrn(domains) => match self.check_atrn(domains) {
                Ok(grant) => {
                    replies::ATRN_OK.write_to(out);
                    return Next::Atrn(grant);
                }
                Err(reply) => reply,
            },
            Command::Obsolete => replies::NOT_IMPLEMENTED,
        };
        self.reply(out, reply);
        Next::Continue
    }

    fn check_starttls(&self) -> Result<(), Reply> {
        if self.tls.is_some() {
            return Err(replies::ALREADY_TLS);
        }
        if self.ctx.tls.is_none() || self.mode == Mode::Submissions {
            return Err(replies::NOT_IMPLEMENTED);
        }
        if self.tx.is_some() {
            return Err(replies::BAD_SEQUENCE);
        }
        Ok(())
    }

    /// RFC 1985: ETRN asks the server to start delivery of queued mail for a domain.
    fn handle_etrn(&mut self, domain: String) -> Reply {
        let domain = domain.trim_start_matches(['@', '#']).to_string();
        if !crate::proto::address::is_domain(&domain) {
            return crate::proto::command::ParseError::Syntax("ETRN domain").reply();
        }
        if self.tx.is_some() {
            return replies::BAD_SEQUENCE;
        }
        // RFC 1985 5: a server may restrict ETRN; strangers cannot make us work the queue
        // (repeats are coalesced by the queue as well).
        if !self.relay_allowed() {
            return Reply::dynamic(
                459,
                7,
                1,
                format!("Node {domain} not allowed: ETRN is for relay clients"),
            );
        }
        self.ctx.queue.flush(Some(domain));
        replies::ETRN_OK
    }
}

impl Session {
    /// RFC 2645 4.2: ATRN on an `odmr` listener, from an authenticated user, for domains
    /// the user may collect (all of the user's without a list).
    fn check_atrn(&mut self, domains: Vec<String>) -> Result<crate::delivery::Grant, Reply> {
        if self.mode != Mode::Odmr {
            return Err(replies::NOT_IMPLEMENTED);
        }
        let Some(user) = self.auth_user.clone() else {
            return Err(replies::AUTH_REQUIRED);
        };
        if self.tx.is_some() {
            return Err(replies::BAD_SEQUENCE);
        }
        let config = &self.ctx.config;
        let domains = if domains.is_empty() {
            let own = config.user.iter().find(|u| u.name == user);
            own.map(|u| u.atrn_domains.clone()).unwrap_or_default()
        } else {
            domains
        };
        let domains: Vec<String> = domains.iter().map(|d| d.to_ascii_lowercase()).collect();
        if domains.is_empty() {
            return Err(Reply::dynamic(
                450,
                7,
                1,
                "ATRN request refused: no domains to collect",
            ));
        }
        if let Some(d) = domains.iter().find(|d| !config.atrn_allowed(&user, d)) {
            let why = format!("ATRN request refused: {user} may not collect {d}");
            return Err(Reply::dynamic(450, 7, 1, why));
        }
        self.ctx.queue.atrn(domains, &user)
    }
}

/// Reads with a deadline: Ok(None) on end of stream or timeout (the caller closes).
async fn read_more<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<'_, S>,
    timeout: Duration,
) -> io::Result<bool> {
    match tokio::time::timeout(timeout, conn.fill()).await {
        Ok(Ok(0)) => Ok(false),
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            replies::TIMEOUT.write_to(&mut conn.out);
            conn.flush().await?;
            Ok(false)
        }
    }
}
