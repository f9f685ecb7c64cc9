//! Delivery: each spooled message gets a task that tries its pending recipients, grouped by
//! route, and sleeps between attempts per `[delivery] retry`. At most
//! `delivery.concurrency` attempts run at once. The spool is the only source of truth: the
//! tasks are rebuilt from it at start, so a crash loses no message.

mod bounce;
mod client;
mod conn;
mod convert;
mod flush;
mod maildir;
mod mx;
mod odmr;
mod pool;
mod queue;
mod retry;
mod route;
mod scan;
mod shared;
mod slots;

use crate::proto::Reply;
use crate::spool::{Content, Envelope, StoredReply};
pub use conn::Timeouts;
pub use maildir::mailbox_name;
pub use odmr::Grant;
pub use queue::start;
pub use shared::Loaded;
pub use shared::QueueHandle;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A reply and who gave it: a next hop (named, for a report's Remote-MTA and
/// Diagnostic-Code, RFC 3464 2.3.5-2.3.6), or we ourselves (a connection that failed, a
/// loop, a message this hop cannot take, a local mailbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub reply: Reply,
    pub remote: Option<Arc<str>>,
}

impl From<Reply> for Answer {
    /// Ours.
    fn from(reply: Reply) -> Answer {
        Answer {
            reply,
            remote: None,
        }
    }
}

impl Answer {
    pub fn stored(&self) -> StoredReply {
        StoredReply::new(&self.reply, self.remote.as_deref())
    }

    /// The reason class of a deferral with this answer (`metrics::Deferral`): the next
    /// hop's own 4xx, else ours by its enhanced status code (RFC 3463 3.5: X.4.3 a
    /// directory server failure, X.4.7 delivery time expired, X.4.x another network or
    /// routing failure; X.7.x security).
    pub fn deferral_reason(&self) -> &'static str {
        if self.remote.is_some() {
            return "reply";
        }
        match self.reply.enhanced.map(|e| (e.1, e.2)) {
            Some((4, 3)) => "dns",
            Some((4, 7)) => "expired",
            Some((4, _)) => "connection",
            Some((7, _)) => "tls",
            _ => "local",
        }
    }
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.remote {
            Some(mta) => write!(f, "{} (from {mta})", self.reply),
            None => self.reply.fmt(f),
        }
    }
}

/// The result for one recipient of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Final delivery (a mailbox, an LMTP store).
    Delivered(Answer),
    /// Taken by a next hop that relays it further; `dsn`: the hop supports DSN (RFC 3461)
    /// and was given the recipient's NOTIFY, so reports are its job from here.
    Relayed {
        answer: Answer,
        dsn: bool,
    },
    Transient(Answer),
    Permanent(Answer),
}

impl DeliveryOutcome {
    /// Classifies a reply by its first digit.
    pub fn of(answer: impl Into<Answer>) -> DeliveryOutcome {
        let answer = answer.into();
        match answer.reply.code {
            200..=399 => DeliveryOutcome::Delivered(answer),
            400..=499 => DeliveryOutcome::Transient(answer),
            _ => DeliveryOutcome::Permanent(answer),
        }
    }
}

/// What a transport is asked to deliver: one message, some of its recipients.
pub struct Outgoing<'a> {
    pub envelope: &'a Envelope,
    pub content: &'a Content,
    /// Indices into `envelope.recipients`.
    pub recipients: &'a [usize],
}

impl Outgoing<'_> {
    /// The same answer for every recipient (a connection that failed, a route that
    /// cannot be used).
    pub fn every(&self, answer: impl Into<Answer>) -> Vec<DeliveryOutcome> {
        vec![DeliveryOutcome::of(answer); self.recipients.len()]
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A way to move a message one hop further. Returns one outcome per recipient, in order.
pub trait Transport: Send + Sync {
    fn deliver<'a>(&'a self, msg: &'a Outgoing<'a>) -> BoxFuture<'a, Vec<DeliveryOutcome>>;
}
