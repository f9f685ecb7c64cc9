//! The one line a transaction ends with, in both log formats (what Postfix's `status=`
//! lines tell of the way in): the client's names, TLS, the user, the envelope, the size,
//! the queue id, the authentication results, the reply and how long it took; and its count.

use super::Session;
use crate::mailauth::{AuthResults, SpfResults};
use crate::proto::{Mailbox, Reply};
use crate::spool::{Recipient, SpoolId};
use std::time::Instant;

/// What the line tells of the transaction.
pub(super) struct Ended<'a> {
    /// `accepted`, `held` (quarantined), `refused`, `dropped` (a plugin discarded it).
    pub outcome: &'static str,
    pub reply: &'a Reply,
    pub sender: &'a Option<Mailbox>,
    pub recipients: &'a [Recipient],
    pub queue_id: Option<&'a SpoolId>,
    pub size: u64,
    pub spf: &'a SpfResults,
    /// The message's results, when it was verified.
    pub auth: Option<&'a AuthResults>,
    pub started: Instant,
}

impl Session {
    pub(super) fn summary(&self, t: Ended<'_>) {
        self.ctx.metrics.transaction(t.outcome, t.reply.code);
        let from = t
            .sender
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let to: Vec<String> = t.recipients.iter().map(|r| r.address.to_string()).collect();
        let dkim: Vec<&str> = t
            .auth
            .map(|a| a.dkim.iter().map(|d| d.status.as_str()).collect())
            .unwrap_or_default();
        let status = |s: Option<crate::mailauth::AuthStatus>| s.map_or("", |s| s.as_str());
        tracing::info!(
            outcome = t.outcome,
            reply = %t.reply,
            helo = self.helo.as_ref().map_or("", |h| h.name.as_str()),
            tls = self.tls.as_deref().unwrap_or(""),
            user = self.auth_user.as_deref().unwrap_or(""),
            from = %from,
            to = %to.join(","),
            size = t.size,
            queue_id = %t.queue_id.map(|id| id.as_str()).unwrap_or(""),
            spf = t.spf.mail_from.status.as_str(),
            dkim = %dkim.join(","),
            arc = status(t.auth.map(|a| a.arc.status)),
            dmarc = status(t.auth.map(|a| a.dmarc.status)),
            duration_ms = u64::try_from(t.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "transaction"
        );
    }
}
