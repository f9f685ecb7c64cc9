//! The scan after the queue (`[[plugin]] mode = "after-queue"`): those plugins' data hook
//! over a spooled message, after its 250 and before its first delivery attempt, so that a
//! slow scanner holds no SMTP session. Its outcome is committed before anything is
//! delivered (the state without the pending scan, or the message rewritten with its
//! changes, in one record): a crash before that scans again, after it delivers, so a
//! message is delivered at most once whatever the timing.

use super::bounce;
use super::shared::Delivery;
use crate::plugin::{AuthResults, DataOutcome, Decision, SessionInfo, SpfResults, TlsInfo};
use crate::proto::Reply;
use crate::proto::header::{self, HEADER_MAX};
use crate::spool::{
    Content, Durability, Envelope, PendingScan, QueueState, RecipientStatus, StoredReply,
};
use bytes::Bytes;

/// What became of the message.
pub(super) enum Scanned {
    /// Delivery goes on, with the envelope and content as the changes left them.
    Deliver,
    /// Quarantined: it waits for `wasmtp queue release`.
    Held,
    /// Gone from the queue: discarded, refused (and reported), or without recipients.
    Gone,
    /// Scan again at the next attempt: the pending recipients are deferred with the reply.
    Deferred,
    /// The server is stopping; the scan is still pending in the spool.
    Stopped,
}

/// Scans the message and commits the outcome. `envelope` and `content` become the
/// message as the changes left it.
pub(super) async fn scan(
    d: &Delivery,
    envelope: &mut Envelope,
    content: &mut Content,
    state: &mut QueueState,
) -> Scanned {
    let Some(pending) = state.scan.clone() else {
        return Scanned::Deliver;
    };
    let Some(loaded) = d.loaded().await else {
        return Scanned::Stopped;
    };
    // A slot before the header is read: messages waiting for a busy scanner hold none.
    let _slot = match &loaded.plugins {
        Some(plugins) => plugins.scan_slot().await,
        None => None,
    };
    let (header, header_len) = match split(content, pending.header).await {
        Ok(split) => split,
        Err(e) => {
            tracing::error!(id = %envelope.id, error = %e, "cannot read the message to scan");
            let reply = Reply::dynamic(451, 3, 0, "cannot read the message to scan");
            defer(d, state, &reply);
            return Scanned::Deferred;
        }
    };
    let body = content.skip(header_len);
    let auth: AuthResults = serde_json::from_value(pending.auth.clone()).unwrap_or_else(|e| {
        tracing::warn!(id = %envelope.id, error = %e, "stored authentication results unreadable; the scan sees none");
        AuthResults::only_spf(SpfResults::none())
    });
    let outcome = match loaded.plugins.as_ref().filter(|p| p.wants_data(true)) {
        Some(plugins) => {
            let info = session_info(envelope, &pending);
            let sender = crate::changes::sender_record(&envelope.sender, &envelope.params);
            let recipients: Vec<String> = envelope
                .recipients
                .iter()
                .map(|r| r.address.to_string())
                .collect();
            let message = crate::plugin::Message::new(header.clone(), body.clone());
            let target = {
                let config = d.config.borrow();
                crate::plugin::EditTarget {
                    spool: d.spool.clone(),
                    min_free: config.spool.min_free.0,
                    max_body: config.limits.message_size.0.saturating_sub(header_len),
                    max_recipients: config.limits.recipients,
                }
            };
            let call = crate::plugin::DataCall {
                session: &info,
                sender: &sender,
                recipients: &recipients,
                message,
                auth: &auth,
                target: &target,
            };
            plugins.scan(&call).await
        }
        None => DataOutcome::default(),
    };
    let id = envelope.id.clone();
    let held = match outcome.decision {
        Decision::Refuse(r) if r.code >= 500 => {
            tracing::info!(%id, reply = %r, "message refused by an after-queue plugin");
            refuse(d, envelope, content, state, &r).await;
            return Scanned::Gone;
        }
        Decision::Refuse(r) | Decision::Disconnect(r) => {
            tracing::info!(%id, reply = %r, "after-queue scan deferred");
            defer(d, state, &r);
            return Scanned::Deferred;
        }
        Decision::Discard => {
            tracing::info!(%id, "message discarded by an after-queue plugin");
            remove(d, envelope).await;
            return Scanned::Gone;
        }
        Decision::Quarantine(reason) => Some(reason),
        Decision::Continue | Decision::Accept => None,
    };
    // The changes, as before the 250: fields removed, fields added (on top, as a filter
    // after the MTA adds them), recipients added and removed, then the edit calls.
    // Our own fields stay as they are on top, as before the queue.
    let (ours, theirs) = header.split_at((pending.head as usize).min(header.len()));
    let fields = crate::changes::header_edits(&outcome.changes);
    let mut new_header =
        crate::changes::remove_fields(theirs, &fields.remove).unwrap_or_else(|| theirs.to_vec());
    let mut new_envelope = envelope.clone();
    let limit = d.config.borrow().limits.recipients;
    let e = &mut new_envelope;
    crate::changes::apply_recipient_changes(&mut e.recipients, &outcome.changes, limit);
    crate::changes::apply_edits(
        &outcome.edits,
        &mut new_header,
        &mut e.sender,
        &mut e.params,
        &mut e.recipients,
        limit,
    );
    if new_envelope.recipients.is_empty() {
        tracing::info!(%id, "after-queue plugins removed every recipient; message dropped");
        remove(d, envelope).await;
        return Scanned::Gone;
    }
    let new_body = match outcome.body {
        Some(b) => match b.finish().await {
            Ok(written) => Some(written),
            Err(e) => {
                tracing::error!(%id, error = %e, "cannot keep the body a plugin wrote; the scan runs again");
                defer(
                    d,
                    state,
                    &Reply::dynamic(451, 3, 0, "cannot keep the new body"),
                );
                return Scanned::Deferred;
            }
        },
        None => None,
    };
    let rewritten = new_header != theirs
        || !fields.add.is_empty()
        || new_body.is_some()
        || !same_envelope(&new_envelope, envelope);
    let mut next = state.clone();
    next.scan = None;
    next.held = held.is_some();
    next.hold_reason = held.clone();
    let committed = if rewritten || pending.sign || pending.seal {
        new_header.splice(0..0, ours.iter().copied());
        let header = Bytes::from(new_header);
        let (body, parts) = match new_body {
            Some((content, parts)) => (content, Some(parts)),
            None => (body, None),
        };
        let mut head = fields.add;
        // Ours to sign, for our users as at the 250 (a From address of theirs).
        if pending.sign {
            let config = d.config.borrow().clone();
            let user = envelope.auth_user.clone();
            let signature = loaded
                .signers
                .sign_for(&config, user, head.as_bytes(), &header, &body)
                .await;
            if let Some(signature) = signature {
                head.insert_str(0, &signature);
            }
        }
        // Mail we verified, sealed as it leaves: after the scan's changes (RFC 8617 5.1).
        if pending.seal {
            let hostname = d.config.borrow().hostname.clone();
            let ours = [head.as_bytes(), &header].concat();
            let set = loaded
                .signers
                .seal(&hostname, &auth, &ours, &[], &body)
                .await;
            if let Some(set) = set {
                head.insert_str(0, &set);
            }
        }
        let new_content = body.after(header.to_vec()).after(head.into_bytes());
        next.recipients = vec![RecipientStatus::Queued; new_envelope.recipients.len()];
        let stored = d
            .spool
            .store(&new_envelope, &new_content, Some(&next), parts.as_ref())
            .await;
        stored.map(|()| {
            *envelope = new_envelope;
            *content = new_content;
        })
    } else {
        d.spool.save_state(&id, &next, Durability::Now).await
    };
    if let Err(e) = committed {
        tracing::error!(%id, error = %e, "cannot commit the after-queue scan; it runs again");
        defer(
            d,
            state,
            &Reply::dynamic(451, 3, 0, "cannot commit the scan"),
        );
        return Scanned::Deferred;
    }
    *state = next;
    match held {
        Some(reason) => {
            tracing::warn!(%id, reason, "message quarantined by an after-queue plugin");
            Scanned::Held
        }
        None => Scanned::Deliver,
    }
}

/// Are the sender, its parameters and the recipients with theirs as they were?
fn same_envelope(a: &Envelope, b: &Envelope) -> bool {
    let json = |e: &Envelope| serde_json::to_value((&e.sender, &e.params, &e.recipients)).ok();
    json(a) == json(b)
}

/// The header section (ours and the message's, with the empty line) and its length:
/// `stored` octets when the spool kept it, else up to the empty line.
async fn split(content: &Content, stored: u64) -> std::io::Result<(Bytes, u64)> {
    let c = content.clone();
    let want = match stored {
        0 => HEADER_MAX + 2,
        n => usize::try_from(n).map_err(std::io::Error::other)?,
    };
    let start = tokio::task::spawn_blocking(move || c.read_at(0, want))
        .await
        .map_err(std::io::Error::other)??;
    let len = match stored {
        0 => header::body_start(&start).unwrap_or(start.len()),
        _ if start.len() as u64 == stored => start.len(),
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the message is shorter than its header section",
            ));
        }
    };
    let mut start = start;
    start.truncate(len);
    Ok((Bytes::from(start), len as u64))
}

/// The session the message came in, as the plugins saw it then.
fn session_info(envelope: &Envelope, pending: &PendingScan) -> SessionInfo {
    SessionInfo {
        client_ip: envelope.client_ip.to_string(),
        client_port: pending.client_port,
        listener: pending.listener.clone(),
        tls: pending
            .tls
            .clone()
            .map(|description| TlsInfo { description }),
        auth_user: envelope.auth_user.clone(),
        helo: Some(envelope.helo.clone()).filter(|h| !h.is_empty()),
    }
}

/// Every pending recipient deferred with `reply` (each counted as a deferral); the scan
/// stays pending, and runs again at the next attempt.
fn defer(d: &Delivery, state: &mut QueueState, reply: &Reply) {
    for i in state.pending().collect::<Vec<_>>() {
        state.recipients[i] = RecipientStatus::Deferred(StoredReply::new(reply, None));
        d.metrics.deferral("scan");
    }
}

/// Refused after the queue: every pending recipient failed with `reply`, a report to the
/// sender per NOTIFY (RFC 3461 4.1, RFC 3464), and the message leaves the queue.
async fn refuse(
    d: &Delivery,
    envelope: &Envelope,
    content: &Content,
    state: &QueueState,
    reply: &Reply,
) {
    let failed: Vec<(usize, RecipientStatus)> = state
        .pending()
        .map(|i| (i, RecipientStatus::Failed(StoredReply::new(reply, None))))
        .collect();
    bounce::report(d, envelope, content, &failed, bounce::Kind::Failed).await;
    remove(d, envelope).await;
}

async fn remove(d: &Delivery, envelope: &Envelope) {
    if let Err(e) = d.spool.remove(&envelope.id, Durability::Now).await {
        tracing::error!(id = %envelope.id, error = %e, "cannot remove the scanned message");
    }
}
