//! HELO and EHLO (RFC 5321 4.1.1.1) and the EHLO keyword list.

use super::{Helo, Session};
use crate::config::Mode;
use crate::plugin::Call;
use crate::proto::{Extension, Reply};

impl Session {
    /// Both reset any transaction (RFC 5321 4.1.4).
    pub(super) async fn handle_helo(&mut self, name: String, extended: bool) -> Reply {
        self.tx = None;
        let decision = self
            .policy(Call::Helo {
                name: &name,
                extended,
            })
            .await;
        if let Some(refusal) = self.refusal(decision) {
            return refusal;
        }
        self.helo = Some(Helo {
            name,
            extended,
            spf: None,
        });
        let hostname = &self.ctx.config.hostname;
        if !extended {
            return Reply::plain(250, hostname.clone());
        }
        let size = self.ctx.config.limits.message_size.0;
        let mut offered = vec![
            (Extension::Pipelining, None),
            (Extension::Size, Some(size.to_string())),
            (Extension::EightBitMime, None),
            (Extension::SmtpUtf8, None),
            (Extension::EnhancedStatusCodes, None),
        ];
        // RFC 3207 4.2: STARTTLS is not offered once TLS is up.
        if self.tls.is_none() && self.ctx.tls.is_some() && self.mode != Mode::Submissions {
            offered.push((Extension::StartTls, None));
        }
        // AUTH only on submission listeners and only under TLS (RFC 4954 4, RFC 8314).
        if self.auth_offered() && self.tls.is_some() && self.auth_user.is_none() {
            offered.push((Extension::Auth, Some("PLAIN LOGIN".into())));
        }
        offered.extend([Extension::Chunking, Extension::Dsn, Extension::Etrn].map(|e| (e, None)));
        if self.mode == Mode::Odmr {
            offered.push((Extension::Atrn, None));
        }
        // RFC 8689 4.1: REQUIRETLS only in a session that TLS protects.
        if self.tls.is_some() {
            offered.push((Extension::RequireTls, None));
        }
        offered.push((Extension::Help, None));
        let mut lines = vec![format!("{hostname} greets {}", self.peer.ip())];
        lines.extend(offered.into_iter().map(|(e, args)| match args {
            Some(args) => format!("{} {args}", e.keyword()),
            None => e.keyword().to_string(),
        }));
        Reply::plain(250, lines.join("\n"))
    }

    pub(super) fn auth_offered(&self) -> bool {
        self.mode != Mode::Mx
    }
}
