//! MAIL and RCPT (RFC 5321 4.1.1.2, 4.1.1.3), with the relay rules of SPEC.md.

use super::{Session, Transaction};
use crate::config::Target;
use crate::mailauth::{SpfResults, Verifier};
use crate::plugin::{Call, Hook};
use crate::proto::{MailParams, Mailbox, RcptParams, RcptPath, Reply, replies};
use crate::spool::Recipient;
use std::sync::Arc;

impl Session {
    pub(super) async fn handle_mail(&mut self, from: Option<Mailbox>, params: MailParams) -> Reply {
        let Some(helo) = &self.helo else {
            return replies::HELO_FIRST;
        };
        if self.mode == crate::config::Mode::Odmr {
            return replies::ODMR_TAKES_NO_MAIL;
        }
        if self.tx.is_some() {
            return replies::NESTED_MAIL;
        }
        if self.sasl.is_some() {
            return replies::BAD_SEQUENCE;
        }
        // RFC 5321 4.1.1.1: service extensions, and so their parameters, need EHLO.
        if !helo.extended && params != MailParams::default() {
            return replies::PARAM_NOT_IMPLEMENTED.with_text("MAIL parameters require EHLO");
        }
        if params.auth.is_some() && !self.auth_offered() {
            return crate::proto::command::ParseError::UnknownParam("AUTH".into()).reply();
        }
        // RFC 8689 4.1: REQUIRETLS is offered only under TLS, so it is not known without.
        if params.requiretls && self.tls.is_none() {
            return crate::proto::command::ParseError::UnknownParam("REQUIRETLS".into()).reply();
        }
        // RFC 6409 / SPEC: submission listeners take mail only from authenticated users
        // (or clients in relay.networks).
        if self.auth_offered()
            && self.auth_user.is_none()
            && !self.ctx.config.relay_allowed(self.peer.ip())
        {
            return replies::AUTH_REQUIRED;
        }
        // Authenticated users send as themselves only (the null sender stays allowed).
        if let (Some(user), Some(sender)) = (&self.auth_user, &from)
            && !self.ctx.config.user_owns(user, sender)
        {
            return replies::SENDER_NOT_OWNED;
        }
        if !self.spool_has_room() {
            return replies::SPOOL_FULL;
        }
        // RFC 1870 6.2: a declared size over the limit is refused at MAIL.
        if params
            .size
            .is_some_and(|s| s > self.ctx.config.limits.message_size.0)
        {
            return replies::SIZE_EXCEEDED;
        }
        // RFC 6531 3.4: UTF-8 addresses only with the SMTPUTF8 parameter.
        if from.as_ref().is_some_and(Mailbox::is_utf8) && !params.smtputf8 {
            return replies::UTF8_NEEDS_SMTPUTF8;
        }
        let checking = std::time::Instant::now();
        let spf = self.check_spf(from.as_ref()).await;
        let auth_spent = checking.elapsed();
        if self.wants(Hook::Mail) {
            let sender = crate::changes::sender_record(&from, &params);
            let call = Call::Mail {
                sender: &sender,
                spf: &spf,
            };
            let decision = self.policy(call).await;
            if let Some(refusal) = self.refusal(decision) {
                return refusal;
            }
        }
        self.tx = Some(Transaction {
            sender: from,
            params,
            recipients: Vec::new(),
            bdat: None,
            _open: self.ctx.spool.open_transaction(),
            spf,
            auth_spent,
            started: checking,
        });
        replies::SENDER_OK
    }

    pub(super) async fn handle_rcpt(&mut self, to: RcptPath, params: RcptParams) -> Reply {
        let reply = match self.check_rcpt(to, params) {
            Ok(recipient) => self.rcpt_policy(recipient).await,
            Err(reply) => reply,
        };
        if !reply.is_positive() {
            self.ctx.metrics.recipients_refused_total.inc();
        }
        reply
    }

    /// Asks the plugins about a recipient the host accepts; adds it unless refused. The
    /// plugins' arguments (the recipients so far among them) are built only when one of
    /// them wants the hook.
    async fn rcpt_policy(&mut self, recipient: Recipient) -> Reply {
        if self.wants(Hook::Rcpt) {
            let tx = self.tx.as_ref().expect("check_rcpt saw a transaction");
            let sender = crate::changes::sender_record(&tx.sender, &tx.params);
            let accepted: Vec<String> = tx
                .recipients
                .iter()
                .map(|r| r.address.to_string())
                .collect();
            let address = recipient.address.to_string();
            let params = super::hooks::rcpt_params(&recipient.params);
            let call = Call::Rcpt {
                sender: &sender,
                recipient: &address,
                params: &params,
                accepted: &accepted,
            };
            let decision = self.policy(call).await;
            if let Some(refusal) = self.refusal(decision) {
                return refusal;
            }
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.recipients.push(recipient);
        }
        replies::RECIPIENT_OK
    }

    /// The host's own checks: sequence, limits, syntax, relay rules.
    fn check_rcpt(&mut self, to: RcptPath, params: RcptParams) -> Result<Recipient, Reply> {
        let relay_allowed = self.relay_allowed();
        let config = self.ctx.config.clone();
        let Some(tx) = self.tx.as_ref() else {
            return Err(replies::NEED_MAIL);
        };
        if tx.bdat.is_some() {
            return Err(replies::BAD_SEQUENCE);
        }
        if tx.recipients.len() >= config.limits.recipients {
            return Err(replies::TOO_MANY_RECIPIENTS);
        }
        let address = match to {
            // RFC 5321 4.5.1: mail to Postmaster must always be accepted.
            RcptPath::Postmaster => Mailbox {
                local: "postmaster".into(),
                domain: config
                    .accept
                    .domains
                    .first()
                    .unwrap_or(&config.hostname)
                    .clone(),
            },
            RcptPath::Mailbox(m) => {
                if m.is_utf8() && !tx.params.smtputf8 {
                    return Err(replies::UTF8_NEEDS_SMTPUTF8);
                }
                if !relay_allowed {
                    if !config.accepts_domain(&m.domain) {
                        return Err(replies::RELAY_DENIED);
                    }
                    // A local part our own Maildir delivery would refuse is refused now,
                    // not bounced later.
                    if matches!(config.route_for(&m.domain).to, Target::Maildir(_))
                        && crate::delivery::mailbox_name(&m.local_unquoted()).is_none()
                    {
                        return Err(replies::MAILBOX_NAME_REFUSED);
                    }
                    // Postfix's allow_untrusted_routing = no: "a%b@ours", "b!a@ours" and
                    // quoted "a@b"@ours would turn the next hop into a relay for strangers.
                    if m.local_unquoted().contains(['%', '!', '@']) {
                        return Err(replies::ROUTING_DENIED);
                    }
                }
                m
            }
        };
        Ok(Recipient { address, params })
    }

    /// Is there room in the spool for new mail (`spool.min_free`)? When the free space
    /// cannot be read, the write itself will tell.
    pub(super) fn spool_has_room(&self) -> bool {
        let needed = self.ctx.config.spool.min_free.0;
        match self.ctx.spool.free_space() {
            Ok(free) if free < needed => {
                tracing::warn!(
                    free,
                    needed,
                    "spool filesystem nearly full; mail deferred with 452"
                );
                false
            }
            _ => true,
        }
    }

    /// SPF of the HELO identity (once per HELO) and of MAIL FROM (the HELO identity's
    /// result for the null sender, RFC 7208 2.4), for clients that are not trusted.
    async fn check_spf(&mut self, from: Option<&Mailbox>) -> SpfResults {
        let Some(verifier) = self.verifier() else {
            return SpfResults::none();
        };
        let Some(helo) = self.helo.as_mut() else {
            return SpfResults::none();
        };
        let ip = self.peer.ip();
        let name = helo.name.clone();
        let cached = helo.spf.clone();
        let helo_check = async {
            match cached {
                Some(check) => check,
                None => verifier.spf_helo(ip, &name).await,
            }
        };
        let (helo_check, mail_from) = match from {
            Some(sender) => {
                let sender = sender.to_string();
                tokio::join!(helo_check, verifier.spf_mail_from(ip, &name, &sender))
            }
            None => {
                let check = helo_check.await;
                (check.clone(), check)
            }
        };
        helo.spf = Some(helo_check.clone());
        SpfResults {
            helo: helo_check,
            mail_from,
        }
    }

    /// The verifier, for clients whose mail is verified: neither authenticated nor in
    /// `relay.networks` (their mail is ours, and signed instead).
    pub(super) fn verifier(&self) -> Option<Arc<Verifier>> {
        if self.trusted() {
            return None;
        }
        self.ctx.verifier.clone()
    }

    /// Authenticated users and `relay.networks`: our own users, whose mail we sign.
    pub(super) fn trusted(&self) -> bool {
        self.auth_user.is_some() || self.ctx.config.relay_allowed(self.peer.ip())
    }

    /// Clients in `relay.networks`, and users authenticated on a submission listener.
    pub(super) fn relay_allowed(&self) -> bool {
        self.ctx.config.relay_allowed(self.peer.ip())
            || (self.auth_user.is_some() && self.auth_offered())
    }
}
