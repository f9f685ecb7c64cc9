//! Delivery: each spooled message gets a task that tries its pending recipients, grouped by
//! route, and sleeps between attempts per `[delivery] retry`. At most
//! `delivery.concurrency` attempts run at once. The spool is the only source of truth: the
//! tasks are rebuilt from it at start, so a crash loses no message.

mod bounce;
mod client;
mod conn;
mod convert;
mod maildir;
mod mx;
mod pool;
mod queue;
mod retry;
mod route;
mod shared;

use crate::proto::Reply;
use crate::spool::{Content, Envelope};
pub use maildir::mailbox_name;
pub use queue::start;
pub use shared::QueueHandle;
use std::future::Future;
use std::pin::Pin;

/// The result for one recipient of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Final delivery (a mailbox, an LMTP store).
    Delivered(Reply),
    /// Taken by a next hop that relays it further; `dsn`: the hop supports DSN (RFC 3461)
    /// and was given the recipient's NOTIFY, so reports are its job from here.
    Relayed {
        reply: Reply,
        dsn: bool,
    },
    Transient(Reply),
    Permanent(Reply),
}

impl DeliveryOutcome {
    /// Classifies a reply from a next hop by its first digit.
    pub fn from_reply(reply: Reply) -> DeliveryOutcome {
        match reply.code {
            200..=399 => DeliveryOutcome::Delivered(reply),
            400..=499 => DeliveryOutcome::Transient(reply),
            _ => DeliveryOutcome::Permanent(reply),
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

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A way to move a message one hop further. Returns one outcome per recipient, in order.
pub trait Transport: Send + Sync {
    fn deliver<'a>(&'a self, msg: &'a Outgoing<'a>) -> BoxFuture<'a, Vec<DeliveryOutcome>>;
}
