//! DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030), then the hand-off to the spool: the 250
//! goes out only after `Spool::store` has fsynced the message.

use super::{Conn, Session, read_more};
use crate::metrics::Metrics;
use crate::plugin::{Decision, PluginChange};
use crate::proto::data::{BdatChunk, BdatReceiver, DataReceiver, Received};
use crate::proto::{Reply, replies};
use crate::spool::{Envelope, QueueState, Recipient, SpoolId};
use std::collections::HashSet;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

impl Session {
    pub(super) fn check_data(&self) -> Result<(), Reply> {
        if self.helo.is_none() {
            return Err(replies::HELO_FIRST);
        }
        let Some(tx) = &self.tx else {
            return Err(replies::NEED_MAIL);
        };
        if tx.bdat.is_some() {
            return Err(replies::DATA_IN_BDAT);
        }
        if tx.recipients.is_empty() {
            return Err(replies::NEED_RCPT);
        }
        Ok(())
    }

    /// Reads content after 354. `None` when the client went away (or timed out) mid-data.
    pub(super) async fn receive_data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<'_, S>,
    ) -> io::Result<Option<Reply>> {
        let max = usize::try_from(self.ctx.config.limits.message_size.0).unwrap_or(usize::MAX);
        let timeout = self.ctx.config.limits.data_timeout.0;
        let mut receiver = DataReceiver::new(max);
        loop {
            let (used, done) = receiver.ingest(conn.pending());
            conn.start += used;
            if done {
                break;
            }
            if !read_more(conn, timeout).await? {
                self.tx = None;
                return Ok(None);
            }
        }
        Ok(Some(Box::pin(self.end_of_content(receiver.finish())).await))
    }

    /// Reads one BDAT chunk. The chunk's octets are always consumed, even when the command
    /// is refused, so that they are never taken for commands (RFC 3030 2).
    pub(super) async fn receive_bdat<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut Conn<'_, S>,
        size: u64,
        last: bool,
    ) -> io::Result<Option<Reply>> {
        let max = self.ctx.config.limits.message_size.0;
        let timeout = self.ctx.config.limits.data_timeout.0;
        let refusal = if self.helo.is_none() {
            Some(replies::HELO_FIRST)
        } else {
            match &self.tx {
                None => Some(replies::NEED_MAIL),
                Some(tx) if tx.recipients.is_empty() => Some(replies::NEED_RCPT),
                Some(_) => None,
            }
        };
        let mut receiver = match (&refusal, &mut self.tx) {
            (None, Some(tx)) => Some(tx.bdat.get_or_insert_with(|| BdatReceiver::new(max))),
            _ => None,
        };
        let mut chunk = BdatChunk::new(size);
        while !chunk.is_complete() {
            if conn.pending().is_empty() && !read_more(conn, timeout).await? {
                self.tx = None;
                return Ok(None);
            }
            let octets = chunk.take(&conn.buf[conn.start..]);
            if let Some(r) = receiver.as_mut() {
                r.ingest(octets);
            }
            conn.start += octets.len();
        }
        if let Some(reply) = refusal {
            return Ok(Some(reply));
        }
        let Some(tx) = self.tx.as_mut() else {
            return Ok(Some(replies::NEED_MAIL));
        };
        if tx.bdat.as_ref().is_some_and(BdatReceiver::too_large) {
            return Ok(Some(self.refuse_message(replies::SIZE_EXCEEDED)));
        }
        if !last {
            return Ok(Some(Reply::dynamic(
                250,
                0,
                0,
                format!("{size} octets received"),
            )));
        }
        let Some(receiver) = tx.bdat.take() else {
            return Ok(Some(replies::NEED_MAIL));
        };
        Ok(Some(Box::pin(self.end_of_content(receiver.finish())).await))
    }

    /// The whole message is in (DATA's end or the last BDAT chunk): refused if it broke a
    /// rule on the way, else handed on.
    async fn end_of_content(&mut self, received: Received) -> Reply {
        if received.bare_newline {
            self.refuse_message(replies::BARE_NEWLINE_DATA)
        } else if received.too_large {
            // RFC 1870 6.3 / RFC 5321 4.5.3.1.10: 552 once the data exceeded the limit.
            self.refuse_message(replies::SIZE_EXCEEDED)
        } else if trace_fields(&received.message) > self.ctx.config.limits.hop_limit {
            self.refuse_message(replies::TOO_MANY_HOPS)
        } else {
            self.complete_message(received.message).await
        }
    }

    /// Ends the transaction with a refusal (RFC 5321 4.1.1.4: the transaction is over).
    fn refuse_message(&mut self, reply: Reply) -> Reply {
        self.tx = None;
        Metrics::inc(&self.ctx.metrics.messages_refused_total);
        reply
    }

    /// Verifies the sender (DKIM, ARC, DMARC), runs the data hook, adds
    /// Authentication-Results, `Received:` and the plugins' fields, signs our users' mail,
    /// spools durably, hands the id to delivery, then says 250.
    async fn complete_message(&mut self, content: Vec<u8>) -> Reply {
        let Some(mut tx) = self.tx.take() else {
            return replies::NEED_MAIL;
        };
        let verifier = self.verifier();
        let mut content = content;
        // RFC 8601 5: results claiming to be ours were not written by us; gone before
        // anyone (verification, plugins, the next hop) reads the message.
        let ctx = self.ctx.clone();
        let hostname = &ctx.config.hostname;
        if let Some(cleaned) = crate::mailauth::remove_forged(&content, hostname) {
            content = cleaned;
        }
        let mut added_headers = String::new();
        let mut hold_reason = None;
        let mut auth = None;
        if verifier.is_some() || self.wants_data_hook() {
            let shared = std::sync::Arc::new(content);
            let results = match &verifier {
                Some(v) => v.message(shared.clone(), tx.spf.clone()).await,
                None => crate::mailauth::AuthResults::only_spf(tx.spf.clone()),
            };
            let outcome = if self.wants_data_hook() {
                Some(self.data_policy(&tx, shared.clone(), &results).await)
            } else {
                None
            };
            content = std::sync::Arc::try_unwrap(shared).unwrap_or_else(|a| (*a).clone());
            auth = verifier.is_some().then_some(results);
            if let Some(outcome) = outcome {
                match outcome.decision {
                    refusal @ (Decision::Refuse(_) | Decision::Disconnect(_)) => {
                        Metrics::inc(&self.ctx.metrics.messages_refused_total);
                        return self.refusal(refusal).expect("a refusal");
                    }
                    Decision::Discard => {
                        tracing::info!(client = %self.peer.ip(), "message discarded by a plugin");
                        return replies::queued_as(SpoolId::generate());
                    }
                    Decision::Quarantine(reason) => hold_reason = Some(reason),
                    Decision::Continue | Decision::Accept => {}
                }
                let edits = super::hooks::header_edits(&outcome.changes);
                if let Some(edited) = super::hooks::remove_fields(&content, &edits.remove) {
                    content = edited;
                }
                added_headers = edits.add;
                apply_recipient_changes(
                    &mut tx.recipients,
                    &outcome.changes,
                    self.ctx.config.limits.recipients,
                );
                if tx.recipients.is_empty() {
                    tracing::info!(client = %self.peer.ip(), "plugins removed every recipient; message dropped");
                    return replies::queued_as(SpoolId::generate());
                }
            }
        }
        let helo = self
            .helo
            .as_ref()
            .map(|h| h.name.clone())
            .unwrap_or_default();
        let envelope = Envelope {
            id: SpoolId::generate(),
            received_at: chrono::Utc::now().timestamp(),
            sender: tx.sender,
            params: tx.params,
            recipients: tx.recipients,
            client_ip: self.peer.ip(),
            helo,
            auth_user: self.auth_user.clone(),
        };
        // Our fields go before the content as it came: the spool writes the parts one after
        // the other (a 25 MiB message is not copied). Authentication-Results above our
        // Received, as a filter after the MTA would add it.
        let mut head = auth
            .as_ref()
            .map(|a| crate::mailauth::authentication_results(hostname, a))
            .unwrap_or_default();
        head.push_str(&self.received_header(&envelope));
        head.push_str(&added_headers);
        // Our users' mail is signed as it will leave: after the plugins' changes. An
        // authenticated user only as a From address of theirs (as for MAIL FROM), so
        // that one user cannot have mail signed for another's domain.
        if self.trusted() && !self.ctx.signers.is_empty() {
            let parts = [head.as_bytes(), content.as_slice()];
            let config = &self.ctx.config;
            let owns = |from: &crate::proto::Mailbox| match &self.auth_user {
                Some(user) => config.user_owns(user, from),
                None => true,
            };
            if let Some(signature) = self.ctx.signers.sign(&parts, owns) {
                head.insert_str(0, &signature);
            }
        }
        let size = content.len();
        let message = crate::spool::Content::from(content).after(head.into_bytes());
        let message = &message;
        // Quarantine: held in the spool, never delivered until released; the hold is
        // committed with the message, before the 250.
        let held = hold_reason.as_ref().map(|reason| {
            let mut state = QueueState::new(&envelope);
            state.held = true;
            state.hold_reason = Some(reason.clone());
            state
        });
        if !self.spool_has_room() {
            Metrics::inc(&self.ctx.metrics.messages_refused_total);
            return replies::SPOOL_FULL;
        }
        let stored = self
            .ctx
            .spool
            .store(&envelope, message, held.as_ref(), None)
            .await;
        match stored {
            Ok(()) if hold_reason.is_some() => {
                tracing::warn!(id = %envelope.id, reason = hold_reason.as_deref().unwrap_or(""), "message quarantined");
                let reply = replies::queued_as(&envelope.id);
                // Its task waits, held, for `wasmtp queue release` or `remove`.
                self.ctx.queue.submit(envelope.id);
                reply
            }
            Ok(()) => {
                Metrics::inc(&self.ctx.metrics.messages_accepted_total);
                tracing::info!(
                    id = %envelope.id,
                    client = %self.peer.ip(),
                    from = %envelope.sender.as_ref().map(|s| s.to_string()).unwrap_or_default(),
                    recipients = envelope.recipients.len(),
                    size,
                    "message queued"
                );
                let reply = replies::queued_as(&envelope.id);
                self.ctx.queue.submit(envelope.id);
                reply
            }
            Err(e) => {
                tracing::error!(error = %e, "spool write failed; message refused");
                Metrics::inc(&self.ctx.metrics.messages_refused_total);
                // Nothing half-written was acknowledged: the writer cuts a failed write off.
                if e.kind() == std::io::ErrorKind::StorageFull {
                    replies::SPOOL_FULL
                } else {
                    replies::SPOOL_FAILED
                }
            }
        }
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

/// The number of `Received:` fields in the header section (RFC 5321 4.4).
fn trace_fields(message: &[u8]) -> usize {
    crate::proto::header::fields(message)
        .filter(|f| f.is("received"))
        .count()
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

    #[test]
    fn counts_trace_fields_in_the_header_only() {
        let msg =
            b"Received: a\r\n\tcontinued\r\nRECEIVED: b\r\nSubject: x\r\n\r\nReceived: body\r\n";
        assert_eq!(trace_fields(msg), 2);
        assert_eq!(trace_fields(b""), 0);
    }
}
