//! The plugin seam: one call per dialogue step, after the host's own checks passed. Without
//! plugins every call answers `Continue` at once.

use super::Session;
use crate::plugin::{Call, Decision, PluginParam, SessionInfo, TlsInfo};
use crate::proto::{RcptParams, Reply};

impl Session {
    /// What the plugins are told of this session.
    pub(super) fn plugin_info(&self) -> SessionInfo {
        SessionInfo {
            client_ip: self.peer.ip().to_string(),
            client_port: self.peer.port(),
            listener: self.mode.as_str().into(),
            tls: self.tls.clone().map(|description| TlsInfo { description }),
            auth_user: self.auth_user.clone(),
            helo: self.helo.as_ref().map(|h| h.name.clone()),
        }
    }

    /// Runs one hook through the plugins that want it (none: nothing is built for them).
    pub(super) async fn policy(&mut self, call: Call<'_>) -> Decision {
        if !self.wants(call.hook()) {
            return Decision::Continue;
        }
        // Built at the first hook, then again only when HELO, TLS or AUTH changed it.
        let current = |i: &SessionInfo| {
            i.helo.as_deref() == self.helo.as_ref().map(|h| h.name.as_str())
                && i.tls.as_ref().map(|t| t.description.as_str()) == self.tls.as_deref()
                && i.auth_user == self.auth_user
        };
        if !self.info.as_ref().is_some_and(current) {
            self.info = Some(self.plugin_info());
        }
        let info = self.info.as_ref().expect("just made");
        match self.plugins.as_mut() {
            // Boxed: a plugin call's future is large, and would otherwise be part of every
            // session's future, idle or not.
            Some(p) => Box::pin(p.run(info, call)).await,
            None => Decision::Continue,
        }
    }

    /// The reply for a refusal; a disconnect also ends the session after the reply.
    pub(super) fn refusal(&mut self, decision: Decision) -> Option<Reply> {
        match decision {
            Decision::Refuse(r) => Some(r),
            Decision::Disconnect(r) => {
                self.closing = true;
                Some(r)
            }
            _ => None,
        }
    }

    /// Does any plugin of this session want `hook`? When none does, its arguments are
    /// never built.
    pub(super) fn wants(&self, hook: crate::plugin::Hook) -> bool {
        self.plugins.as_ref().is_some_and(|p| p.wants(hook))
    }

    /// The data hook over the complete message, with its authentication results.
    pub(super) async fn data_policy(
        &mut self,
        tx: &super::Transaction,
        message: std::sync::Arc<crate::plugin::Message>,
        header_len: usize,
        auth: &crate::plugin::AuthResults,
    ) -> crate::plugin::DataOutcome {
        let sender = crate::changes::sender_record(&tx.sender, &tx.params);
        let recipients: Vec<String> = tx
            .recipients
            .iter()
            .map(|r| r.address.to_string())
            .collect();
        let info = self.plugin_info();
        let config = &self.ctx.config;
        // A body a plugin writes goes into the spool, and the message as it will leave
        // counts against limits.message_size.
        let target = crate::plugin::EditTarget {
            spool: self.ctx.spool.clone(),
            min_free: config.spool.min_free.0,
            max_body: config
                .limits
                .message_size
                .0
                .saturating_sub(header_len as u64),
            max_recipients: config.limits.recipients,
        };
        let plugins = self.plugins.as_mut().expect("checked by wants");
        let call = crate::plugin::DataCall {
            session: &info,
            sender: &sender,
            recipients: &recipients,
            message,
            auth,
            target: &target,
        };
        plugins.data(false, &call).await
    }
}

pub(super) fn rcpt_params(params: &RcptParams) -> Vec<PluginParam> {
    crate::changes::plugin_params(params.to_wire())
}
