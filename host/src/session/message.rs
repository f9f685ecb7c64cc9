//! A received message, from its end of data to its 250: the content policy (forged
//! results removed, the sender verified, the data hook, the plugins' header and recipient
//! changes), our trace head (Authentication-Results, `Received:`, the plugins' fields, the
//! DKIM signature of our users' mail), then the spool and the queue. The header section is
//! in memory (at most `HEADER_MAX`); the body stays where the spool put it.

use super::Session;
use super::summary::Ended;
use crate::plugin::Decision;
use crate::proto::{Reply, replies};
use crate::spool::{Content, Envelope, Incoming, PendingScan, QueueState, SpoolId};
use bytes::Bytes;

/// What the content policy let through.
struct Accepted {
    /// The header section as it goes on (forged results and removed fields gone).
    header: Vec<u8>,
    /// Fields the plugins added.
    added: String,
    hold_reason: Option<String>,
    auth: Option<crate::mailauth::AuthResults>,
    /// With plugins after the queue: the results their scan will be given.
    scan: Option<crate::mailauth::AuthResults>,
    /// A body a plugin wrote in place of the one received, and where its parts are.
    body: Option<(Content, Incoming)>,
    /// The text of the 250, as a plugin set it.
    reply: Option<Vec<String>>,
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
        let mut accepted = match self.content_policy(&mut tx, header, &body).await {
            Ok(accepted) => accepted,
            Err(reply) => {
                // A refusal, or a 250 for a message a plugin discarded.
                let outcome = if reply.code < 300 {
                    "dropped"
                } else {
                    "refused"
                };
                self.summary(Ended {
                    outcome,
                    reply: &reply,
                    sender: &tx.sender,
                    recipients: &tx.recipients,
                    queue_id: Some(incoming.id()),
                    size: body.len(),
                    spf: &tx.spf,
                    auth: None,
                    started: tx.started,
                });
                return reply;
            }
        };
        // With a body a plugin wrote, the parts received are let go; the new ones are
        // held until the message is stored.
        let id = incoming.id().clone();
        let (body, incoming) = accepted.body.take().unwrap_or((body, incoming));
        // RFC 8689 4.1: with REQUIRETLS on MAIL, TLS-Required is ignored.
        let tls_optional =
            !tx.params.requiretls && crate::proto::header::tls_required_no(&accepted.header);
        let envelope = Envelope {
            id,
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
            tls_optional,
        };
        // Our signature covers the message as it leaves: after the scan's changes, when
        // plugins after the queue will scan it.
        let scan = accepted.scan.take().map(|auth| self.pending_scan(&auth));
        let head = self
            .trace_head(&envelope, &accepted, &body, scan.is_none())
            .await;
        let scan = scan.map(|scan| PendingScan {
            head: head.len() as u64,
            header: (head.len() + accepted.header.len()) as u64,
            ..scan
        });
        let size = accepted.header.len() as u64 + body.len();
        let content = body.after(accepted.header).after(head.into_bytes());
        let state = (accepted.hold_reason.is_some() || scan.is_some()).then(|| {
            let mut state = QueueState::new(&envelope);
            state.held = accepted.hold_reason.is_some();
            state.hold_reason = accepted.hold_reason.clone();
            state.scan = scan;
            state
        });
        let text = accepted.reply.take();
        let reply = self
            .spool_and_queue(&envelope, &content, state, &incoming, size, text)
            .await;
        let outcome = match (reply.code, &accepted.hold_reason) {
            (..300, Some(_)) => "held",
            (..300, None) => "accepted",
            _ => "refused",
        };
        self.summary(Ended {
            outcome,
            reply: &reply,
            sender: &envelope.sender,
            recipients: &envelope.recipients,
            queue_id: Some(&envelope.id),
            size,
            spf: &tx.spf,
            auth: accepted.auth.as_ref(),
            started: tx.started,
        });
        reply
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
            scan: None,
            body: None,
            reply: None,
        };
        let verifier = self.verifier();
        let wants_hook = self.wants(crate::plugin::Hook::Data);
        let scans = self.plugins.as_ref().is_some_and(|p| p.wants_data(true));
        if verifier.is_none() && !wants_hook && !scans {
            return Ok(accepted);
        }
        let shared = Bytes::from(std::mem::take(&mut accepted.header));
        let results = match &verifier {
            Some(v) => {
                let budget = v.timeout().saturating_sub(tx.auth_spent);
                v.message(shared.clone(), body.clone(), tx.spf.clone(), budget)
                    .await
            }
            None => crate::mailauth::AuthResults::only_spf(tx.spf.clone()),
        };
        if verifier.is_some() {
            self.count_results(&results);
        }
        let outcome = if wants_hook {
            let message = crate::plugin::Message::new(shared.clone(), body.clone());
            Some(self.data_policy(tx, message, shared.len(), &results).await)
        } else {
            None
        };
        accepted.header = Vec::from(shared);
        accepted.scan = scans.then(|| results.clone());
        accepted.auth = verifier.is_some().then_some(results);
        let Some(outcome) = outcome else {
            return Ok(accepted);
        };
        match outcome.decision {
            refusal @ (Decision::Refuse(_) | Decision::Disconnect(_)) => {
                return Err(self.refusal(refusal).expect("a refusal"));
            }
            Decision::Discard => {
                tracing::info!(client = %self.peer.ip(), "message discarded by a plugin");
                return Err(replies::queued_as(SpoolId::generate()));
            }
            Decision::Quarantine(reason) => accepted.hold_reason = Some(reason),
            Decision::Continue | Decision::Accept => {}
        }
        let edits = crate::changes::header_edits(&outcome.changes);
        if let Some(edited) = crate::changes::remove_fields(&accepted.header, &edits.remove) {
            accepted.header = edited;
        }
        accepted.added = edits.add;
        crate::changes::apply_recipient_changes(
            &mut tx.recipients,
            &outcome.changes,
            self.ctx.config.limits.recipients,
        );
        crate::changes::apply_edits(
            &outcome.edits,
            &mut accepted.header,
            &mut tx.sender,
            &mut tx.params,
            &mut tx.recipients,
            self.ctx.config.limits.recipients,
        );
        if tx.recipients.is_empty() {
            tracing::info!(client = %self.peer.ip(), "plugins removed every recipient; message dropped");
            return Err(replies::queued_as(SpoolId::generate()));
        }
        accepted.reply = outcome.reply;
        if let Some(body) = outcome.body {
            match body.finish().await {
                Ok(written) => accepted.body = Some(written),
                Err(e) => {
                    tracing::error!(error = %e, "cannot keep the body a plugin wrote; message refused");
                    return Err(super::data::spool_error(&e));
                }
            }
        }
        Ok(accepted)
    }

    /// A verified message's results, counted by method and result.
    fn count_results(&self, r: &crate::mailauth::AuthResults) {
        let m = &self.ctx.metrics;
        m.auth_result("spf", r.spf.mail_from.status.as_str());
        for d in &r.dkim {
            m.auth_result("dkim", d.status.as_str());
        }
        m.auth_result("arc", r.arc.status.as_str());
        m.auth_result("dmarc", r.dmarc.status.as_str());
    }

    /// What the after-queue scan is told of this session, and whether it signs.
    fn pending_scan(&self, auth: &crate::mailauth::AuthResults) -> PendingScan {
        let info = self.plugin_info();
        PendingScan {
            client_port: info.client_port,
            listener: info.listener,
            tls: info.tls.map(|t| t.description),
            // The contract's records are plain data: always JSON.
            auth: serde_json::to_value(auth).expect("plain data"),
            sign: self.trusted() && !self.ctx.signers.is_empty(),
            seal: !self.trusted() && self.ctx.signers.seals(),
            head: 0,
            header: 0,
        }
    }

    /// Our fields, before the content as it came: Authentication-Results above our
    /// `Received:` (as a filter after the MTA would add it), the plugins' fields, and for
    /// our users (when `sign`) the DKIM signature over the message as it will leave.
    async fn trace_head(
        &mut self,
        envelope: &Envelope,
        accepted: &Accepted,
        body: &Content,
        sign: bool,
    ) -> String {
        let hostname = &self.ctx.config.hostname;
        let mut head = accepted
            .auth
            .as_ref()
            .map(|a| crate::mailauth::authentication_results(hostname, a))
            .unwrap_or_default();
        head.push_str(&self.received_header(envelope));
        head.push_str(&accepted.added);
        if !sign {
            return head;
        }
        if let Some(signature) = self.signature(&head, &accepted.header, body).await {
            head.insert_str(0, &signature);
        }
        // Mail we verified, sealed as it leaves (RFC 8617 5.1).
        if let Some(auth) = accepted.auth.as_ref().filter(|_| !self.trusted()) {
            let ctx = self.ctx.clone();
            let (id, header) = (&ctx.config.hostname, &accepted.header);
            if let Some(set) = ctx
                .signers
                .seal(id, auth, head.as_bytes(), header, body)
                .await
            {
                head.insert_str(0, &set);
            }
        }
        head
    }

    /// Our users' mail is signed as it will leave: after the plugins' changes.
    async fn signature(&mut self, head: &str, header: &[u8], body: &Content) -> Option<String> {
        if !self.trusted() || self.ctx.signers.is_empty() {
            return None;
        }
        let user = self.auth_user.clone();
        let ctx = &self.ctx;
        ctx.signers
            .sign_for(&ctx.config, user, head.as_bytes(), header, body)
            .await
    }

    /// A first `state` (a quarantine hold: never delivered until released; a scan after
    /// the queue: not delivered before it) is committed with the message, before the 250.
    async fn spool_and_queue(
        &mut self,
        envelope: &Envelope,
        content: &Content,
        state: Option<QueueState>,
        incoming: &Incoming,
        size: u64,
        text: Option<Vec<String>>,
    ) -> Reply {
        let stored = self
            .ctx
            .spool
            .store(envelope, content, state.as_ref(), Some(incoming))
            .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "spool write failed; message refused");
            // Nothing half-written was acknowledged: the writer cuts a failed write off.
            return super::data::spool_error(&e);
        }
        let hold_reason = state.as_ref().and_then(|s| s.hold_reason.as_ref());
        if let Some(reason) = hold_reason {
            tracing::warn!(id = %envelope.id, reason, "message quarantined");
        } else {
            self.ctx.metrics.message_size.observe(size as f64);
        }
        // A held message's task waits for `wasmtp queue release` or `remove`.
        self.ctx.queue.submit(envelope.id.clone());
        match text {
            Some(lines) => replies::queued_as_with(&envelope.id, &lines),
            None => replies::queued_as(&envelope.id),
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
