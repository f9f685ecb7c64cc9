//! The plugin seam: one call per dialogue step, after the host's own checks passed. Without
//! plugins every call answers `Continue` at once.

use super::Session;
use crate::plugin::{
    Call, Decision, PluginChange, PluginParam, PluginSender, SessionInfo, TlsInfo,
};
use crate::proto::params::Param;
use crate::proto::{MailParams, Mailbox, RcptParams, Reply};

impl Session {
    fn plugin_info(&self) -> SessionInfo {
        SessionInfo {
            client_ip: self.peer.ip().to_string(),
            client_port: self.peer.port(),
            listener: format!("{:?}", self.mode).to_lowercase(),
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
        let info = self.plugin_info();
        match self.plugins.as_mut() {
            // Boxed: a plugin call's future is large, and would otherwise be part of every
            // session's future, idle or not.
            Some(p) => Box::pin(p.run(&info, call)).await,
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
        auth: &crate::plugin::AuthResults,
    ) -> crate::plugin::DataOutcome {
        let sender = sender_record(&tx.sender, &tx.params);
        let recipients: Vec<String> = tx
            .recipients
            .iter()
            .map(|r| r.address.to_string())
            .collect();
        let info = self.plugin_info();
        let plugins = self.plugins.as_mut().expect("checked by wants");
        plugins
            .data(&info, &sender, &recipients, message, auth)
            .await
    }
}

/// Parameters as plugins see them: names and values as on the wire.
fn plugin_params(params: Vec<Param>) -> Vec<PluginParam> {
    params
        .into_iter()
        .map(|p| PluginParam {
            name: p.keyword.as_str().into(),
            value: p.value,
        })
        .collect()
}

/// The sender and its parameters as plugins see them.
pub(super) fn sender_record(from: &Option<Mailbox>, params: &MailParams) -> PluginSender {
    PluginSender {
        address: from.as_ref().map(|m| m.to_string()).unwrap_or_default(),
        params: plugin_params(params.to_wire()),
    }
}

pub(super) fn rcpt_params(params: &RcptParams) -> Vec<PluginParam> {
    plugin_params(params.to_wire())
}

/// Header fields to add and names to remove, from the plugins' changes.
pub(super) struct HeaderEdits {
    pub add: String,
    pub remove: Vec<String>,
}

pub(super) fn header_edits(changes: &[PluginChange]) -> HeaderEdits {
    let mut edits = HeaderEdits {
        add: String::new(),
        remove: Vec::new(),
    };
    for c in changes {
        match c {
            PluginChange::AddHeader(h) => {
                edits.add.push_str(&format!("{}: {}\r\n", h.name, h.value))
            }
            PluginChange::RemoveHeader(name) => edits.remove.push(name.to_ascii_lowercase()),
            _ => {}
        }
    }
    edits
}

/// Drops every header field (with its continuation lines) whose name is in `names`.
pub(super) fn remove_fields(content: &[u8], names: &[String]) -> Option<Vec<u8>> {
    crate::proto::header::without(content, |f| {
        names
            .iter()
            .any(|n| n.as_bytes().eq_ignore_ascii_case(f.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_folded_fields_only_in_the_header() {
        let msg = b"A: 1\r\nX-Drop: a\r\n b\r\nB: 2\r\n\r\nX-Drop: body stays\r\n";
        let out = remove_fields(msg, &["x-drop".into()]).unwrap();
        assert_eq!(out, b"A: 1\r\nB: 2\r\n\r\nX-Drop: body stays\r\n");
    }
}
