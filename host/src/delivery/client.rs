//! The SMTP (RFC 5321) and LMTP (RFC 2033) client that relays to a next hop: EHLO (HELO
//! fallback), STARTTLS per route policy (verified when required), PIPELINING (RFC 2920) and
//! CHUNKING (RFC 3030) when offered, SIZE, BODY, SMTPUTF8 and DSN parameters passed on,
//! 8-bit content converted for a hop without 8BITMIME, per-recipient outcomes. Every
//! step has a deadline (`conn::Timeouts`), and a hop that turns out to be this server is a
//! routing loop, not a delivery.

pub use super::conn::Protocol;
use super::conn::{Client, Extensions, Timeouts, within};
use super::convert::Outbound;
use super::pool::{Pool, PoolKey, Session, Stream, TlsKey};
use super::{Answer, BoxFuture, DeliveryOutcome, Outgoing, Transport};
use crate::proto::params::{Body, Keyword};
use crate::proto::{Extension, Reply};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// How a hop uses TLS.
#[derive(Clone)]
pub enum TlsMode {
    Off,
    /// STARTTLS when offered, certificate not checked (RFC 7435).
    Opportunistic,
    /// STARTTLS or no delivery; the certificate verified with this config, made for the
    /// trust anchors `anchors` (a route's `ca`; `None`: Mozilla's roots). Connections are
    /// reused only under the same ones.
    Required {
        config: Arc<rustls::ClientConfig>,
        anchors: Option<std::path::PathBuf>,
    },
    /// As `Opportunistic`, and the certificate checked with `verifier` after the handshake,
    /// for a domain whose MTA-STS policy is in `testing` mode: what would fail is logged
    /// and counted, and the mail goes on.
    Testing {
        verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
        anchors: Option<std::path::PathBuf>,
    },
}

/// What the connections of the delivery engine share.
pub struct ClientSettings {
    /// Ours, for EHLO and the loop check.
    pub hostname: String,
    pub timeouts: Timeouts,
    /// The addresses our own listeners are bound to: a hop there is a loop.
    pub own_addrs: Vec<SocketAddr>,
    /// Idle connections to next hops, and `[delivery] reuse_limit`, `reuse_idle`; at most
    /// `reuse_keep` (the destination concurrency) wait per hop.
    pub pool: Arc<Pool>,
    pub reuse_limit: u32,
    pub reuse_idle: Duration,
    pub reuse_keep: usize,
    /// Counts the connections that carry a transaction, new or reused.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl ClientSettings {
    /// Is `peer` one of our listeners? A wildcard listener (0.0.0.0:25) owns its port on every
    /// local address; `local` is our side of the connection, which for a connection to one of
    /// our own addresses is that same address.
    fn is_own(&self, peer: SocketAddr, local: Option<SocketAddr>) -> bool {
        self.own_addrs.iter().any(|own| {
            own.port() == peer.port()
                && (own.ip() == peer.ip()
                    || (own.ip().is_unspecified()
                        && (peer.ip().is_loopback() || local.is_some_and(|l| l.ip() == peer.ip()))))
        })
    }
}

/// One next hop: where to connect, the name its certificate must show, how to use TLS.
pub struct Hop {
    /// A host name or an address.
    pub host: String,
    pub port: u16,
    /// The name a required certificate must show (the MX name for MX delivery).
    pub tls_name: String,
    pub tls: TlsMode,
    pub protocol: Protocol,
}

impl Hop {
    fn pool_key(&self) -> PoolKey {
        PoolKey {
            protocol: self.protocol,
            host: self.host.clone(),
            port: self.port,
            tls_name: self.tls_name.clone(),
            tls: match &self.tls {
                TlsMode::Off => TlsKey::Off,
                TlsMode::Opportunistic => TlsKey::Opportunistic,
                TlsMode::Required { anchors, .. } => TlsKey::Required(anchors.clone()),
                TlsMode::Testing { anchors, .. } => TlsKey::Testing(anchors.clone()),
            },
        }
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

pub struct SmtpTransport {
    hop: Hop,
    settings: Arc<ClientSettings>,
}

/// A REQUIRETLS message that cannot go this way (RFC 8689 5: X.7.30, REQUIRETLS support
/// required).
pub fn requiretls_refused(why: &str) -> Reply {
    Reply::dynamic(550, 7, 30, format!("REQUIRETLS: {why}"))
}

/// Is this our refusal of a way for a REQUIRETLS message (another MX host may do)?
pub fn is_requiretls_refusal(answer: &Answer) -> bool {
    answer.remote.is_none() && answer.reply.enhanced == Some(crate::proto::EnhancedCode(5, 7, 30))
}

/// Checks the chain a server showed against `verifier`, for the name `name`.
fn verify_chain(
    verifier: &dyn rustls::client::danger::ServerCertVerifier,
    tls: &rustls::ClientConnection,
    name: &str,
) -> Result<(), String> {
    let Some((end_entity, intermediates)) = tls.peer_certificates().and_then(|c| c.split_first())
    else {
        return Err("no certificate".into());
    };
    let name = rustls::pki_types::ServerName::try_from(name).map_err(|e| e.to_string())?;
    let now = rustls::pki_types::UnixTime::now();
    verifier
        .verify_server_cert(end_entity, intermediates, &name, &[], now)
        .map(drop)
        .map_err(|e| format!("certificate: {e}"))
}

/// Is this the reply of a hop that turned out to be ourselves?
pub fn is_loop(reply: &Reply) -> bool {
    reply.code == 554 && reply.enhanced == Some(crate::proto::EnhancedCode(5, 4, 6))
}

/// RFC 3463 X.4.6: routing loop detected.
fn loop_reply(hop: &Hop) -> Reply {
    Reply::dynamic(554, 4, 6, format!("mail for {hop} loops back to myself"))
}

impl SmtpTransport {
    pub fn new(hop: Hop, settings: Arc<ClientSettings>) -> SmtpTransport {
        SmtpTransport { hop, settings }
    }

    fn transient(&self, what: &str, e: impl fmt::Display) -> Reply {
        Reply::dynamic(451, 4, 4, format!("{what} {}: {e}", self.hop))
    }

    /// Going on without TLS: fine unless it is required (then deferred, RFC 3463 X.7.10);
    /// under an MTA-STS policy in `testing` mode, reported as what enforcing would refuse.
    fn in_the_clear(&self, required: bool, why: impl FnOnce() -> String) -> Result<(), Reply> {
        if required {
            return Err(Reply::dynamic(
                451,
                7,
                10,
                format!("TLS required but {}", why()),
            ));
        }
        self.testing_result(|| Err(why()));
        Ok(())
    }

    /// With an MTA-STS policy in `testing` mode: what enforcing it would have made of this
    /// connection's TLS, logged and counted (RFC 8461 5).
    fn testing_result(&self, result: impl FnOnce() -> Result<(), String>) {
        if !matches!(self.hop.tls, TlsMode::Testing { .. }) {
            return;
        }
        let metrics = &self.settings.metrics;
        match result() {
            Ok(()) => metrics.mta_sts("testing", "valid"),
            Err(why) => {
                metrics.mta_sts("testing", "tls_failed");
                tracing::warn!(hop = %self.hop, mx = %self.hop.tls_name, %why, "MTA-STS testing: enforcing the policy would defer this delivery");
            }
        }
    }

    /// A reply the hop gave, named by the hop's host name (the MX name for MX delivery).
    fn theirs(&self, reply: Reply) -> Answer {
        Answer {
            reply,
            remote: Some(self.hop.tls_name.as_str().into()),
        }
    }

    /// One delivery, on an idle connection to the hop when there is one (RSET first),
    /// else a new one; a connection whose transaction ended cleanly is kept for the next
    /// message. `Err` is a reply for every recipient (connection or MAIL failure).
    pub(super) async fn run(&self, msg: &Outgoing<'_>) -> Result<Vec<DeliveryOutcome>, Answer> {
        let key = self.hop.pool_key();
        let settings = &self.settings;
        let (mut session, reused) = loop {
            let Some(mut idle) = settings.pool.take(&key, settings.reuse_idle) else {
                break (self.connect().await?, false);
            };
            // One that hung up while it waited is dropped: the next, or a new connection.
            if idle.reset().await {
                break (idle, true);
            }
        };
        settings.metrics.delivery_connection(reused);
        match self.deliver_on(&mut session, msg).await {
            Ok(result) => {
                settings
                    .pool
                    .put(key, session, settings.reuse_limit, settings.reuse_keep);
                result
            }
            Err(e) => Err(self.transient("talking to", e).into()),
        }
    }

    /// One transaction on `session`; an I/O error leaves it unusable.
    pub(super) async fn deliver_on(
        &self,
        session: &mut Session,
        msg: &Outgoing<'_>,
    ) -> io::Result<Result<Vec<DeliveryOutcome>, Answer>> {
        let result = self
            .transaction(&mut session.conn, &session.ext, msg)
            .await?;
        let dsn = session.ext.has(Extension::Dsn);
        // SMTP hands the message on; LMTP delivers it (RFC 2033).
        let relayed = self.hop.protocol == Protocol::Smtp;
        Ok(result.map(|outcomes| {
            outcomes
                .into_iter()
                .map(|o| match o {
                    DeliveryOutcome::Delivered(answer) if relayed => {
                        DeliveryOutcome::Relayed { answer, dsn }
                    }
                    o => o,
                })
                .collect()
        }))
    }

    /// A new session with the hop: connected, greeted, EHLO, STARTTLS per policy.
    async fn connect(&self) -> Result<Session, Answer> {
        let t = self.settings.timeouts;
        let hop = &self.hop;
        let addrs: Vec<SocketAddr> = within(
            "address lookup",
            t.connect,
            tokio::net::lookup_host((hop.host.as_str(), hop.port)),
        )
        .await
        .map_err(|e| self.transient("cannot resolve", e))?
        .collect();
        if addrs.iter().any(|&a| self.settings.is_own(a, None)) {
            return Err(loop_reply(hop).into());
        }
        let tcp = within("connect", t.connect, TcpStream::connect(&addrs[..]))
            .await
            .map_err(|e| self.transient("connect to", e))?;
        if let Ok(peer) = tcp.peer_addr()
            && self.settings.is_own(peer, tcp.local_addr().ok())
        {
            return Err(loop_reply(hop).into());
        }
        let _ = tcp.set_nodelay(true);
        let mut conn = Client::new(Stream::Plain(tcp), t);
        let greeting = conn
            .reply_within(t.greeting)
            .await
            .map_err(|e| self.transient("greeting from", e))?;
        if greeting.code != 220 {
            return Err(self.theirs(greeting));
        }
        // Postfix's check: a hop that greets with our own name is ourselves (a loop through
        // an address we do not know as ours: NAT, a proxy). Not for LMTP, where the local
        // store on this same host greets with the same name.
        if hop.protocol == Protocol::Smtp
            && greeting
                .text
                .split_whitespace()
                .next()
                .is_some_and(|name| name.eq_ignore_ascii_case(&self.settings.hostname))
        {
            return Err(loop_reply(hop).into());
        }
        let ext = conn
            .hello(&self.settings.hostname, hop.protocol)
            .await
            .map_err(|e| self.transient("EHLO to", e))?
            .map_err(|r| self.theirs(r))?;
        let config = match &hop.tls {
            TlsMode::Off => None,
            TlsMode::Opportunistic | TlsMode::Testing { .. } => {
                Some(crate::tls::delivery_client_config())
            }
            TlsMode::Required { config, .. } => Some(config.clone()),
        };
        let required = matches!(hop.tls, TlsMode::Required { .. });
        let Some(config) = config.filter(|_| ext.has(Extension::StartTls)) else {
            self.in_the_clear(required, || format!("{hop} does not offer STARTTLS"))?;
            return Ok(Session::new(conn, ext));
        };
        conn.send(b"STARTTLS\r\n")
            .await
            .map_err(|e| self.transient("STARTTLS to", e))?;
        let reply = conn
            .reply()
            .await
            .map_err(|e| self.transient("STARTTLS to", e))?;
        if reply.code != 220 {
            self.in_the_clear(required, || format!("STARTTLS refused: {reply}"))?;
            return Ok(Session::new(conn, ext));
        }
        let name = rustls::pki_types::ServerName::try_from(hop.tls_name.clone());
        let name = match (name, required) {
            (Ok(name), _) => name,
            (Err(_), false) => {
                rustls::pki_types::ServerName::try_from("localhost").expect("valid name")
            }
            (Err(e), true) => {
                return Err(self.transient("TLS name of", e).into());
            }
        };
        let Stream::Plain(tcp) = conn.into_inner() else {
            unreachable!("STARTTLS on a new connection")
        };
        let tls = within(
            "TLS handshake",
            t.tls,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|e| {
            // A certificate that does not verify: RFC 3463 X.7.5 (cryptographic failure).
            let reply = self.transient("TLS handshake with", e);
            if required {
                Reply::dynamic(451, 7, 5, reply.text)
            } else {
                reply
            }
        })?;
        if let TlsMode::Testing { verifier, .. } = &hop.tls {
            let checked = verify_chain(verifier.as_ref(), tls.get_ref().1, &hop.tls_name);
            self.testing_result(|| checked);
        }
        let mut conn = Client::new(Stream::Tls(Box::new(tls)), t);
        let ext = conn
            .hello(&self.settings.hostname, hop.protocol)
            .await
            .map_err(|e| self.transient("EHLO to", e))?
            .map_err(|r| self.theirs(r))?;
        Ok(Session::new(conn, ext))
    }

    /// One transaction. Every way it ends without an I/O error leaves the session clean
    /// for another (`Ok`); an I/O error leaves it unusable.
    async fn transaction(
        &self,
        conn: &mut Client<Stream>,
        ext: &Extensions,
        msg: &Outgoing<'_>,
    ) -> io::Result<Result<Vec<DeliveryOutcome>, Answer>> {
        let env = msg.envelope;
        let utf8 = env.params.smtputf8;
        if utf8 && !ext.has(Extension::SmtpUtf8) {
            // RFC 6531 3.4: never send an SMTPUTF8 message to a server that lacks it.
            return Ok(Err(Reply::dynamic(
                553,
                6,
                7,
                format!("{} does not support SMTPUTF8", self.hop),
            )
            .into()));
        }
        // RFC 8689 4.2.1: a REQUIRETLS message goes only over TLS whose certificate was
        // validated, to a hop that offers REQUIRETLS.
        if env.params.requiretls {
            let validated = matches!(self.hop.tls, TlsMode::Required { .. });
            if !validated || !ext.has(Extension::RequireTls) {
                return Ok(Err(requiretls_refused(&format!(
                    "{} {}",
                    self.hop,
                    if validated {
                        "does not offer REQUIRETLS"
                    } else {
                        "is not reached over validated TLS"
                    }
                ))
                .into()));
            }
        }
        // RFC 6152 3: 8-bit content to a hop without 8BITMIME is converted to 7 bit, or
        // refused for good where it cannot be (RFC 3463 X.6.3).
        let content = match Outbound::for_hop(msg.content, ext.has(Extension::EightBitMime)).await?
        {
            Ok(content) => content,
            Err(why) => {
                return Ok(Err(Reply::dynamic(
                    554,
                    6,
                    3,
                    format!(
                        "{} does not support 8BITMIME and the message cannot be converted: {why}",
                        self.hop
                    ),
                )
                .into()));
            }
        };
        let dsn = ext.has(Extension::Dsn);
        let mut mail = format!(
            "MAIL FROM:<{}>",
            env.sender
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        if ext.has(Extension::Size) {
            mail.push_str(&format!(" SIZE={}", content.len()));
        }
        for param in env.params.to_wire() {
            let pass_on = match param.keyword {
                Keyword::Body => {
                    env.params.body == Some(Body::EightBitMime) && ext.has(Extension::EightBitMime)
                }
                Keyword::SmtpUtf8 | Keyword::RequireTls => true,
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

        let pipelining = ext.has(Extension::Pipelining);
        // RFC 3030: the content goes in one BDAT ... LAST chunk, as it is (no dot-stuffing),
        // to an SMTP hop that offers CHUNKING.
        let chunking = ext.has(Extension::Chunking) && self.hop.protocol == Protocol::Smtp;
        let mut outcomes: Vec<Option<DeliveryOutcome>> = vec![None; rcpts.len()];
        let mail_reply;
        let mut accepted = Vec::new();
        // The reply to DATA (`None` with BDAT, which has none before the content).
        let mut data_reply = None;
        if pipelining {
            let mut batch = mail.clone().into_bytes();
            for r in &rcpts {
                batch.extend_from_slice(r.as_bytes());
            }
            if !chunking {
                batch.extend_from_slice(b"DATA\r\n");
            }
            conn.send(&batch).await?;
            mail_reply = conn.reply().await?;
            for (i, slot) in outcomes.iter_mut().enumerate() {
                let r = conn.reply().await?;
                if mail_reply.is_positive() && r.is_positive() {
                    accepted.push(i);
                } else {
                    *slot = Some(DeliveryOutcome::of(self.theirs(
                        if mail_reply.is_positive() {
                            r
                        } else {
                            mail_reply.clone()
                        },
                    )));
                }
            }
            if !chunking {
                data_reply = Some(conn.reply().await?);
            }
        } else {
            conn.send(mail.as_bytes()).await?;
            mail_reply = conn.reply().await?;
            if !mail_reply.is_positive() {
                return Ok(Err(self.theirs(mail_reply)));
            }
            for (i, line) in rcpts.iter().enumerate() {
                conn.send(line.as_bytes()).await?;
                let r = conn.reply().await?;
                if r.is_positive() {
                    accepted.push(i);
                } else {
                    outcomes[i] = Some(DeliveryOutcome::of(self.theirs(r)));
                }
            }
            if !accepted.is_empty() && !chunking {
                conn.send(b"DATA\r\n").await?;
                data_reply = Some(conn.reply().await?);
            }
        }
        if let Some(r) = data_reply
            .as_ref()
            .filter(|r| r.code != 354 && r.code < 400)
        {
            // Only 354 lets the content go; a "success" here would mark recipients
            // delivered with nothing sent. Not a session to keep either.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("answered DATA with {r}"),
            ));
        }
        let data_open = data_reply.as_ref().is_some_and(|r| r.code == 354);
        if !mail_reply.is_positive() || accepted.is_empty() || data_reply.is_some() && !data_open {
            if data_open {
                // RFC 2920 3.1: nothing valid to send; end the data at once. Its reply is
                // read (or the session dropped), so the next command's reply is its own.
                conn.send(b".\r\n").await?;
                conn.reply_within(conn.timeouts.data_end).await?;
            }
            if !mail_reply.is_positive() {
                return Ok(Err(self.theirs(mail_reply)));
            }
            for &i in &accepted {
                let refused = data_reply.clone().expect("DATA was refused");
                outcomes[i] = Some(DeliveryOutcome::of(self.theirs(refused)));
            }
            return Ok(Ok(outcomes
                .into_iter()
                .map(|o| o.expect("decided"))
                .collect()));
        }
        if chunking {
            let bdat = format!("BDAT {} LAST\r\n", content.len());
            conn.send_content(bdat.as_bytes(), &content).await?;
        } else {
            conn.send_stuffed(&content).await?;
        }
        if self.hop.protocol == Protocol::Lmtp {
            // RFC 2033 4.2: one reply per accepted recipient, in order.
            for &i in &accepted {
                let r = conn.reply_within(conn.timeouts.data_end).await?;
                outcomes[i] = Some(DeliveryOutcome::of(self.theirs(r)));
            }
        } else {
            let r = conn.reply_within(conn.timeouts.data_end).await?;
            for &i in &accepted {
                outcomes[i] = Some(DeliveryOutcome::of(self.theirs(r.clone())));
            }
        }
        Ok(Ok(outcomes
            .into_iter()
            .map(|o| o.expect("decided"))
            .collect()))
    }
}

impl Transport for SmtpTransport {
    fn deliver<'a>(&'a self, msg: &'a Outgoing<'a>) -> BoxFuture<'a, Vec<DeliveryOutcome>> {
        Box::pin(async move {
            match self.run(msg).await {
                Ok(outcomes) => outcomes,
                Err(answer) => msg.every(answer),
            }
        })
    }
}
