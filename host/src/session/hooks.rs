//! The plugin seam: one call per dialogue step, after the host's own checks passed. Without
//! plugins every call answers `Continue` at once.

use super::Session;
use crate::plugin::{
    Call, Decision, PluginChange, PluginParam, PluginSender, SessionInfo, TlsInfo,
};
use crate::proto::command::{Body, Ret};
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

    /// Runs one hook through the plugins that want it.
    pub(super) async fn policy(&mut self, call: Call<'_>) -> Decision {
        let info = self.plugin_info();
        match self.plugins.as_mut() {
            Some(p) => p.run(&info, call).await,
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

    pub(super) fn wants_data_hook(&self) -> bool {
        self.plugins
            .as_ref()
            .is_some_and(|p| p.wants(crate::plugin::Hook::Data))
    }

    /// The data hook over the complete message.
    pub(super) async fn data_policy(
        &mut self,
        sender: &PluginSender,
        recipients: &[String],
        message: std::sync::Arc<Vec<u8>>,
    ) -> crate::plugin::DataOutcome {
        let info = self.plugin_info();
        let plugins = self.plugins.as_mut().expect("checked by wants_data_hook");
        plugins.data(&info, sender, recipients, message).await
    }
}

/// The sender and its parameters as plugins see them (names as on the wire).
pub(super) fn sender_record(from: &Option<Mailbox>, params: &MailParams) -> PluginSender {
    let mut p = Vec::new();
    let mut push = |name: &str, value: Option<String>| {
        p.push(PluginParam {
            name: name.into(),
            value,
        })
    };
    if let Some(size) = params.size {
        push("SIZE", Some(size.to_string()));
    }
    if let Some(body) = params.body {
        push(
            "BODY",
            Some(
                if body == Body::EightBitMime {
                    "8BITMIME"
                } else {
                    "7BIT"
                }
                .into(),
            ),
        );
    }
    if params.smtputf8 {
        push("SMTPUTF8", None);
    }
    if let Some(ret) = params.ret {
        push(
            "RET",
            Some(if ret == Ret::Full { "FULL" } else { "HDRS" }.into()),
        );
    }
    if let Some(envid) = &params.envid {
        push("ENVID", Some(envid.clone()));
    }
    if let Some(auth) = &params.auth {
        push("AUTH", Some(auth.clone()));
    }
    PluginSender {
        address: from.as_ref().map(|m| m.to_string()).unwrap_or_default(),
        params: p,
    }
}

pub(super) fn rcpt_params(params: &RcptParams) -> Vec<PluginParam> {
    let mut p = Vec::new();
    if let Some(n) = &params.notify {
        p.push(PluginParam {
            name: "NOTIFY".into(),
            value: Some(n.to_param()),
        });
    }
    if let Some(o) = &params.orcpt {
        p.push(PluginParam {
            name: "ORCPT".into(),
            value: Some(o.clone()),
        });
    }
    p
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
pub(super) fn remove_fields(content: &[u8], names: &[String]) -> Vec<u8> {
    if names.is_empty() {
        return content.to_vec();
    }
    let mut out = Vec::with_capacity(content.len());
    let mut rest = content;
    let mut skipping = false;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        if line == b"\r\n" || line == b"\n" {
            out.extend_from_slice(rest);
            break;
        }
        let continuation = line.starts_with(b" ") || line.starts_with(b"\t");
        if !continuation {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            skipping = names
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(name.trim_ascii()));
        }
        if !skipping {
            out.extend_from_slice(line);
        }
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_folded_fields_only_in_the_header() {
        let msg = b"A: 1\r\nX-Drop: a\r\n b\r\nB: 2\r\n\r\nX-Drop: body stays\r\n";
        let out = remove_fields(msg, &["x-drop".into()]);
        assert_eq!(out, b"A: 1\r\nB: 2\r\n\r\nX-Drop: body stays\r\n");
    }
}
