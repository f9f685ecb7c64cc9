//! A received message, from its end of data to its 250: the content policy (forged
//! results removed, the sender verified, the data hook, the plugins' header and recipient
//! changes), our trace head (Authentication-Results, `Received:`, the plugins' fields, the
//! DKIM signature of our users' mail), then the spool and the queue. The header section is
//! in memory (at most `HEADER_MAX`); the body stays where the spool put it.

use super::Session;
use crate::metrics::Metrics;
use crate::plugin::{Decision, PluginChange};
use crate::proto::{Reply, replies};
use crate::spool::{Content, Envelope, Incoming, QueueState, Recipient, SpoolId};
use bytes::Bytes;
use std::collections::HashSet;

/// What the content policy let through.
struct Accepted {
    /// The header section as it goes on (forged results and removed fields gone).
    header: Vec<u8>,
    /// Fields the plugins added.
    added: String,
    hold_reason: Option<String>,
    auth: Option<crate::mailauth::AuthResults>,
}

impl Session {
    /// Runs the policy, adds our fields, spools durably, hands the id to delivery, then
    /// says 250.
    pub(super) async fn complete_message(
        &mut self,
        incoming: Incoming,
        header: Vec<u8>,
        body: Content,
    ) -> Reply {
        let Some(mut tx) = self.tx.take() else {
            return replies::NEED_MAIL;
        };
        let accepted = match self.content_policy(&mut tx, header, &body).await {
            Ok(accepted) => accepted,
            Err(reply) => return reply,
        };
        let envelope = Envelope {
            id: incoming.id().clone(),
            received_at: chrono::Utc::now().timestamp(),
            sender: tx.sender,
            params: tx.params,
            recipients: tx.recipients,
            client_ip: self.peer.ip(),
            helo: self
                .helo
                .as_ref()
                .map(|h| h.name.clone())
                .unwrap_or_default(),
            auth_user: self.auth_user.clone(),
        };
        let head = self.trace_head(&envelope, &accepted, &body).await;
        let size = accepted.header.len() as u64 + body.len();
        let content = body.after(accepted.header).after(head.into_bytes());
        self.spool_and_queue(envelope, &content, accepted.hold_reason, &incoming, size)
            .await
    }

    /// Forged results removed, then (when anyone asks) verification and the data hook;
    /// the plugins' changes applied to the header section and the recipients. `Err`: the
    /// reply that ends the transaction here (a refusal, or a 250 for a message dropped).
    async fn content_policy(
        &mut self,
        tx: &mut super::Transaction,
        mut header: Vec<u8>,
        body: &Content,
    ) -> Result<Accepted, Reply> {
        // RFC 8601 5: results claiming to be ours were not written by us; gone before
        // anyone (verification, plugins, the next hop) reads the message.
        if let Some(cleaned) = crate::mailauth::remove_forged(&header, &self.ctx.config.hostname) {
            header = cleaned;
        }
        let mut accepted = Accepted {
            header,
            added: String::new(),
            hold_reason: None,
            auth: None,
        };
        let verifier = self.verifier();
        let wants_hook = self.wants(crate::plugin::Hook::Data);
        if verifier.is_none() && !wants_hook {
            return Ok(accepted);
        }
        let shared = Bytes::from(std::mem::take(&mut accepted.header));
        let results = match &verifier {
            Some(v) => {
                v.message(shared.clone(), body.clone(), tx.spf.clone())
                    .await
            }
            None => crate::mailauth::AuthResults::only_spf(tx.spf.clone()),
        };
        let outcome = if wants_hook {
            let message = crate::plugin::Message::new(shared.clone(), body.clone());
            Some(self.data_policy(tx, message, &results).await)
        } else {
            None
        };
        accepted.header = Vec::from(shared);
        accepted.auth = verifier.is_some().then_some(results);
        let Some(outcome) = outcome else {
            return Ok(accepted);
        };
        match outcome.decision {
            refusal @ (Decision::Refuse(_) | Decision::Disconnect(_)) => {
                Metrics::inc(&self.ctx.metrics.messages_refused_total);
                return Err(self.refusal(refusal).expect("a refusal"));
            }
            Decision::Discard => {
                tracing::info!(client = %self.peer.ip(), "message discarded by a plugin");
                return Err(replies::queued_as(SpoolId::generate()));
            }
            Decision::Quarantine(reason) => accepted.hold_reason = Some(reason),
            Decision::Continue | Decision::Accept => {}
        }
        let edits = super::hooks::header_edits(&outcome.changes);
        if let Some(edited) = super::hooks::remove_fields(&accepted.header, &edits.remove) {
            accepted.header = edited;
        }
        accepted.added = edits.add;
        apply_recipient_changes(
            &mut tx.recipients,
            &outcome.changes,
            self.ctx.config.limits.recipients,
        );
        if tx.recipients.is_empty() {
            tracing::info!(client = %self.peer.ip(), "plugins removed every recipient; message dropped");
            return Err(replies::queued_as(SpoolId::generate()));
        }
        Ok(accepted)
    }

    /// Our fields, before the content as it came: Authentication-Results above our
    /// `Received:` (as a filter after the MTA would add it), the plugins' fields, and for
    /// our users the DKIM signature over the message as it will leave.
    async fn trace_head(
        &mut self,
        envelope: &Envelope,
        accepted: &Accepted,
        body: &Content,
    ) -> String {
        let hostname = &self.ctx.config.hostname;
        let mut head = accepted
            .auth
            .as_ref()
            .map(|a| crate::mailauth::authentication_results(hostname, a))
            .unwrap_or_default();
        head.push_str(&self.received_header(envelope));
        head.push_str(&accepted.added);
        if let Some(signature) = self.signature(&head, &accepted.header, body).await {
            head.insert_str(0, &signature);
        }
        head
    }

    /// Our users' mail is signed as it will leave: after the plugins' changes. An
    /// authenticated user only as a From address of theirs (as for MAIL FROM), so that
    /// one user cannot have mail signed for another's domain. The body is hashed as it is
    /// read, on a blocking thread when it is on disk.
    async fn signature(&mut self, head: &str, header: &[u8], body: &Content) -> Option<String> {
        if !self.trusted() || self.ctx.signers.is_empty() {
            return None;
        }
        let ctx = self.ctx.clone();
        let user = self.auth_user.clone();
        let on_disk = body.on_disk();
        let (head, header, body) = (head.as_bytes().to_vec(), header.to_vec(), body.clone());
        let sign = move || {
            let owns = |from: &crate::proto::Mailbox| match &user {
                Some(user) => ctx.config.user_owns(user, from),
                None => true,
            };
            ctx.signers.sign(&head, &header, &body, owns)
        };
        if on_disk {
            tokio::task::spawn_blocking(sign).await.ok().flatten()
        } else {
            sign()
        }
    }

    /// Quarantine: held in the spool, never delivered until released; the hold is
    /// committed with the message, before the 250.
    async fn spool_and_queue(
        &mut self,
        envelope: Envelope,
        content: &Content,
        hold_reason: Option<String>,
        incoming: &Incoming,
        size: u64,
    ) -> Reply {
        let held = hold_reason.as_ref().map(|reason| {
            let mut state = QueueState::new(&envelope);
            state.held = true;
            state.hold_reason = Some(reason.clone());
            state
        });
        let stored = self
            .ctx
            .spool
            .store(&envelope, content, held.as_ref(), Some(incoming))
            .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "spool write failed; message refused");
            Metrics::inc(&self.ctx.metrics.messages_refused_total);
            // Nothing half-written was acknowledged: the writer cuts a failed write off.
            return super::data::spool_error(&e);
        }
        if let Some(reason) = &hold_reason {
            tracing::warn!(id = %envelope.id, reason, "message quarantined");
        } else {
            Metrics::inc(&self.ctx.metrics.messages_accepted_total);
            tracing::info!(
                id = %envelope.id,
                client = %self.peer.ip(),
                from = %envelope.sender.as_ref().map(|s| s.to_string()).unwrap_or_default(),
                recipients = envelope.recipients.len(),
                size,
                "message queued"
            );
        }
        // A held message's task waits for `wasmtp queue release` or `remove`.
        self.ctx.queue.submit(envelope.id.clone());
        replies::queued_as(&envelope.id)
    }

    /// RFC 5321 4.4 trace field; `with` keywords from RFC 3848 and RFC 6531 3.7.3.
    fn received_header(&self, envelope: &Envelope) -> String {
        let extended = self.helo.as_ref().is_some_and(|h| h.extended);
        let mut protocol = String::from(match (extended, envelope.params.smtputf8) {
            (false, _) => "SMTP",
            (true, false) => "ESMTP",
            (true, true) => "UTF8SMTP",
        });
        if extended {
            if self.tls.is_some() {
                protocol.push('S');
            }
            if self.auth_user.is_some() {
                protocol.push('A');
            }
        }
        let tls = self
            .tls
            .as_ref()
            .map(|t| format!("\r\n\t(using {t})"))
            .unwrap_or_default();
        let ip = match envelope.client_ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let helo: String = envelope
            .helo
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '?' })
            .collect();
        let for_clause = match envelope.recipients.as_slice() {
            [only] => format!("\r\n\tfor <{}>", only.address),
            _ => String::new(),
        };
        format!(
            "Received: from {helo} ([{ip}]){tls}\r\n\tby {} (wasmtp) with {protocol} id {}{for_clause};\r\n\t{}\r\n",
            self.ctx.config.hostname,
            envelope.id,
            chrono::Utc::now().to_rfc2822()
        )
    }
}

/// Adds and removes envelope recipients as plugins asked (milter-like), in their order, in
/// linear time; added ones count against `limits.recipients` (beyond it they are dropped).
fn apply_recipient_changes(
    recipients: &mut Vec<Recipient>,
    changes: &[PluginChange],
    limit: usize,
) {
    let key = |a: &str| a.to_ascii_lowercase();
    let mut present: HashSet<String> = recipients
        .iter()
        .map(|r| key(&r.address.to_string()))
        .collect();
    let mut removed: HashSet<String> = HashSet::new();
    for c in changes {
        match c {
            PluginChange::AddRecipient(r) => {
                let k = key(r);
                if present.len() < limit && removed.remove(&k) {
                    // Removed, then added again: the original stays, with its parameters.
                    present.insert(k);
                } else if present.len() < limit
                    && !present.contains(&k)
                    && let Ok(address) = crate::proto::address::parse_mailbox(r)
                {
                    present.insert(k);
                    recipients.push(Recipient {
                        address,
                        params: Default::default(),
                    });
                }
            }
            PluginChange::RemoveRecipient(r) => {
                let k = key(r);
                if present.remove(&k) {
                    removed.insert(k);
                }
            }
            _ => {}
        }
    }
    if !removed.is_empty() {
        recipients.retain(|x| !removed.contains(&key(&x.address.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::PluginChange as C;

    fn rcpt(a: &str) -> Recipient {
        Recipient {
            address: crate::proto::address::parse_mailbox(a).unwrap(),
            params: Default::default(),
        }
    }

    fn addresses(r: &[Recipient]) -> Vec<String> {
        r.iter().map(|r| r.address.to_string()).collect()
    }

    #[test]
    fn recipient_changes_in_order_bounded_and_linear() {
        let mut r = vec![rcpt("a@x.test"), rcpt("b@x.test")];
        let changes = [
            C::RemoveRecipient("A@x.test".into()),
            C::AddRecipient("c@x.test".into()),
            C::AddRecipient("c@x.test".into()),
            C::AddRecipient("a@x.test".into()),
            C::RemoveRecipient("b@x.test".into()),
            C::AddRecipient("d@x.test".into()),
        ];
        apply_recipient_changes(&mut r, &changes, 2);
        // a comes back too late (b and c fill the limit of 2 then); d fits once b is gone.
        assert_eq!(addresses(&r), ["c@x.test", "d@x.test"]);
        // 100,000 changes take a moment, not minutes.
        let mut r = vec![rcpt("a@x.test")];
        let many: Vec<_> = (0..100_000)
            .map(|i| C::AddRecipient(format!("u{i}@x.test")))
            .chain((0..100_000).map(|i| C::RemoveRecipient(format!("u{i}@x.test"))))
            .collect();
        let started = std::time::Instant::now();
        apply_recipient_changes(&mut r, &many, 100);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(addresses(&r), ["a@x.test"]);
    }
}
