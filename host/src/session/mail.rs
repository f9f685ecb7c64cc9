//! MAIL and RCPT (RFC 5321 4.1.1.2, 4.1.1.3), with the relay rules of SPEC.md.

use super::{Session, Transaction};
use crate::proto::{MailParams, Mailbox, RcptParams, RcptPath, Reply, replies};
use crate::spool::Recipient;

impl Session {
    pub(super) fn handle_mail(&mut self, from: Option<Mailbox>, params: MailParams) -> Reply {
        let Some(helo) = &self.helo else {
            return replies::HELO_FIRST;
        };
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
        // RFC 6409 / SPEC: submission listeners take mail only from authenticated users
        // (or clients in relay.networks).
        if self.auth_offered()
            && self.auth_user.is_none()
            && !self.ctx.config.relay_allowed(self.peer.ip())
        {
            return replies::AUTH_REQUIRED;
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
        self.tx = Some(Transaction {
            sender: from,
            params,
            recipients: Vec::new(),
            bdat: None,
        });
        replies::SENDER_OK
    }

    pub(super) fn handle_rcpt(&mut self, to: RcptPath, params: RcptParams) -> Reply {
        let reply = self.check_rcpt(to, params);
        if !reply.is_positive() {
            crate::metrics::Metrics::inc(&self.ctx.metrics.recipients_refused_total);
        }
        reply
    }

    fn check_rcpt(&mut self, to: RcptPath, params: RcptParams) -> Reply {
        let relay_allowed = self.relay_allowed();
        let config = self.ctx.config.clone();
        let Some(tx) = self.tx.as_mut() else {
            return replies::NEED_MAIL;
        };
        if tx.bdat.is_some() {
            return replies::BAD_SEQUENCE;
        }
        if tx.recipients.len() >= config.limits.recipients {
            return replies::TOO_MANY_RECIPIENTS;
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
                    return replies::UTF8_NEEDS_SMTPUTF8;
                }
                if !relay_allowed {
                    if !config.accepts_domain(&m.domain) {
                        return replies::RELAY_DENIED;
                    }
                    // Postfix's allow_untrusted_routing = no: "a%b@ours", "b!a@ours" and
                    // quoted "a@b"@ours would turn the next hop into a relay for strangers.
                    if m.local_unquoted().contains(['%', '!', '@']) {
                        return replies::ROUTING_DENIED;
                    }
                }
                m
            }
        };
        tx.recipients.push(Recipient { address, params });
        replies::RECIPIENT_OK
    }

    /// Clients in `relay.networks`, and users authenticated on a submission listener.
    fn relay_allowed(&self) -> bool {
        self.ctx.config.relay_allowed(self.peer.ip())
            || (self.auth_user.is_some() && self.auth_offered())
    }
}
