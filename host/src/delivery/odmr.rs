//! On-Demand Mail Relay (RFC 2645): mail for a `to = "odmr"` route waits in the queue until
//! its domain's owner connects to an `odmr` listener, authenticates and sends `ATRN`. Then
//! the roles turn on that connection: we greet nothing, the customer greets us (220), and
//! we deliver what is queued for the domains as an SMTP client (the delivery client, with
//! its PIPELINING, DSN and 8BITMIME handling), then QUIT. Each message's own task delivers
//! it, as it does any delivery: the link is what its route finds for the domain while the
//! customer is connected. Messages left undelivered stay queued.

use super::client::{ClientSettings, Hop, Protocol, SmtpTransport, TlsMode};
use super::conn::{Client, Timeouts};
use super::flush::Flush;
use super::pool::{Session, Stream};
use super::slots::Slots;
use super::{BoxFuture, DeliveryOutcome, Outgoing, Transport};
use crate::proto::Reply;
use crate::spool::SpoolId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, broadcast};

/// How long one ATRN session may deliver before what is left waits for the next.
const ATRN_LIMIT: Duration = Duration::from_secs(600);

/// A connection turned around by ATRN, shared by the messages it carries one at a time.
#[derive(Default)]
struct LinkState {
    session: tokio::sync::Mutex<Option<Session>>,
    /// Set when the ATRN session ends: messages still waiting for the link leave it.
    closing: AtomicBool,
}

type Link = Arc<LinkState>;

/// What each message task says of itself: its pending recipients' domains (lower case),
/// and when its last attempt started; held messages are not listed.
struct Noted {
    domains: Vec<String>,
    attempted_at: Option<Instant>,
}

/// The queue's ODMR state: which messages wait for which domains, and the links of the
/// customers connected now.
pub struct Odmr {
    messages: Mutex<HashMap<SpoolId, Noted>>,
    links: Mutex<HashMap<String, (Link, String)>>,
    /// Wakes an ATRN session when a message task notes a change.
    changed: Notify,
    flush: broadcast::Sender<Flush>,
}

impl Odmr {
    pub(super) fn new(flush: broadcast::Sender<Flush>) -> Odmr {
        Odmr {
            messages: Mutex::default(),
            links: Mutex::default(),
            changed: Notify::new(),
            flush,
        }
    }

    /// A message task's record here, removed when the task ends.
    pub(super) fn watch<'a>(&'a self, id: &'a SpoolId) -> Watch<'a> {
        Watch { odmr: self, id }
    }

    /// The link of a customer collecting `domain` now, and the user it authenticated as.
    fn link(&self, domain: &str) -> Option<(Link, String)> {
        self.links.lock().expect("links lock").get(domain).cloned()
    }

    /// Messages with pending recipients in `domains` whose last attempt started before
    /// `since` (or never).
    fn waiting(&self, domains: &[String], since: Option<Instant>) -> usize {
        let messages = self.messages.lock().expect("messages lock");
        messages
            .values()
            .filter(|n| n.domains.iter().any(|d| domains.contains(d)))
            .filter(|n| since.is_none_or(|s| n.attempted_at.is_none_or(|t| t < s)))
            .count()
    }

    /// Reserves `domains` (lower case) for one ATRN session: refused while another holds
    /// one of them (450), or when nothing waits for them (453, RFC 2645 4.2).
    pub fn reserve(self: &Arc<Self>, domains: Vec<String>, user: &str) -> Result<Grant, Reply> {
        let mut links = self.links.lock().expect("links lock");
        if let Some(busy) = domains.iter().find(|d| links.contains_key(*d)) {
            let why = format!("ATRN request refused: {busy} is being collected by another session");
            return Err(Reply::dynamic(450, 4, 3, why));
        }
        if self.waiting(&domains, None) == 0 {
            return Err(Reply::dynamic(453, 4, 2, "You have no mail"));
        }
        let link = Link::default();
        for d in &domains {
            links.insert(d.clone(), (link.clone(), user.to_string()));
        }
        Ok(Grant {
            odmr: self.clone(),
            domains,
            link,
        })
    }
}

/// A message task's entry in `Odmr`.
pub(super) struct Watch<'a> {
    odmr: &'a Odmr,
    id: &'a SpoolId,
}

impl Watch<'_> {
    /// The message's pending domains now, and when its last attempt started.
    pub fn note(&self, domains: &[String], held: bool, attempted_at: Option<Instant>) {
        let mut messages = self.odmr.messages.lock().expect("messages lock");
        if held || domains.is_empty() {
            // Not listed, and was not: no ATRN session has anything to learn.
            if messages.remove(self.id).is_none() {
                return;
            }
        } else {
            let noted = Noted {
                domains: domains.to_vec(),
                attempted_at,
            };
            messages.insert(self.id.clone(), noted);
        }
        drop(messages);
        self.odmr.changed.notify_waiters();
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.note(&[], false, None);
    }
}

/// Domains reserved for one customer's session; released when it is dropped.
pub struct Grant {
    odmr: Arc<Odmr>,
    domains: Vec<String>,
    link: Link,
}

impl Drop for Grant {
    fn drop(&mut self) {
        let mut links = self.odmr.links.lock().expect("links lock");
        for d in &self.domains {
            links.remove(d);
        }
    }
}

impl Grant {
    /// After `250 OK now reversing the connection` on `stream`: the customer's greeting,
    /// EHLO, every waiting message for the domains, QUIT.
    pub async fn serve<S>(self, stream: S, hostname: &str, timeouts: Timeouts)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut conn = Client::new(Stream::Reversed(Box::new(stream)), timeouts);
        let greeted = match conn.reply_within(timeouts.greeting).await {
            Ok(greeting) if greeting.code == 220 => conn.hello(hostname, Protocol::Smtp).await,
            Ok(greeting) => {
                tracing::warn!(reply = %greeting, "ODMR customer did not greet with 220");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ODMR customer did not greet");
                return;
            }
        };
        let ext = match greeted {
            Ok(Ok(ext)) => ext,
            Ok(Err(reply)) => {
                tracing::warn!(%reply, "ODMR customer refused EHLO");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ODMR customer hung up at EHLO");
                return;
            }
        };
        *self.link.session.lock().await = Some(Session::new(conn, ext));
        let start = Instant::now();
        for domain in &self.domains {
            let _ = self.odmr.flush.send(Flush {
                domain: Some(domain.clone()),
                at: start,
            });
        }
        // Until every waiting message has had an attempt since, or the link is gone.
        let done = async {
            loop {
                let changed = self.odmr.changed.notified();
                let gone = self.link.session.lock().await.is_none();
                if gone || self.odmr.waiting(&self.domains, Some(start)) == 0 {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
            }
        };
        if tokio::time::timeout(ATRN_LIMIT, done).await.is_err() {
            tracing::warn!(domains = ?self.domains, "ATRN session ran out of time; the rest stays queued");
        }
        // Those still waiting for the link give way, so QUIT comes after the one
        // transaction in progress at most.
        self.link.closing.store(true, Ordering::SeqCst);
        if let Some(mut session) = self.link.session.lock().await.take() {
            session.conn.quit().await;
        }
    }
}

/// Delivery over a customer's link, for the recipients of one `odmr` route's domain. It
/// takes a global delivery slot only once the link is its own.
pub(super) struct OdmrTransport {
    link: Link,
    client: SmtpTransport,
    slots: Arc<Slots>,
}

impl OdmrTransport {
    /// The transport for `domain`: its customer's link, or `None` while nobody collects it.
    pub fn for_domain(
        odmr: &Odmr,
        domain: &str,
        settings: Arc<ClientSettings>,
        slots: Arc<Slots>,
    ) -> Option<OdmrTransport> {
        let (link, user) = odmr.link(domain)?;
        let hop = Hop {
            host: format!("ATRN {user}"),
            port: 0,
            tls_name: user,
            tls: TlsMode::Off,
            protocol: Protocol::Smtp,
        };
        Some(OdmrTransport {
            link,
            client: SmtpTransport::new(hop, settings),
            slots,
        })
    }

    async fn run(&self, msg: &Outgoing<'_>) -> Vec<DeliveryOutcome> {
        let mut link = self.link.session.lock().await;
        let _slot = self.slots.global().await;
        let closing = self.link.closing.load(Ordering::SeqCst);
        let outcome = match link.as_mut().filter(|_| !closing) {
            Some(session) => match self.client.deliver_on(session, msg).await {
                Ok(outcome) => outcome,
                // A link that failed is not used again; the ATRN session sees it gone.
                Err(e) => {
                    *link = None;
                    let why = format!("the ATRN connection failed: {e}");
                    Err(Reply::dynamic(451, 4, 4, why).into())
                }
            },
            None => Err(waiting().into()),
        };
        outcome.unwrap_or_else(|answer| msg.every(answer))
    }
}

impl Transport for OdmrTransport {
    fn deliver<'a>(&'a self, msg: &'a Outgoing<'a>) -> BoxFuture<'a, Vec<DeliveryOutcome>> {
        Box::pin(self.run(msg))
    }
}

/// Why mail for an ODMR domain is still queued.
pub(super) fn waiting() -> Reply {
    Reply::dynamic(
        451,
        4,
        4,
        "kept until the domain's owner collects it (ATRN, RFC 2645)",
    )
}
