//! {{name}}: a wasmtp policy plugin. At MAIL it refuses senders from `blocked_domain`
//! (550 5.7.1); every other sender goes on to the next plugin. Config ([plugin.config]):
//!
//!     blocked_domain = "blocked.invalid"
//!
//! Build: cargo build --release --target wasm32-wasip2
//! Try:   wasmtp plugin test {{wasm}} --from a@example.com --to b@example.net

use wasmtp_sdk::{EnvelopeFrom, Hook, Plugin, Session, SpfResults, Verdict, log};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub blocked_domain: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            blocked_domain: "blocked.invalid".into(),
        }
    }
}

/// One instance serves one SMTP session: its fields are per session.
pub struct Policy {
    blocked: String,
}

impl Plugin for Policy {
    type Config = Config;
    /// The hooks it is called at; add more and implement them (see `cargo doc -p wasmtp-sdk`).
    const HOOKS: &'static [Hook] = &[Hook::Mail];

    fn new(config: Config) -> Result<Self, String> {
        Ok(Policy {
            blocked: config.blocked_domain.to_ascii_lowercase(),
        })
    }

    fn mail(&mut self, session: &Session, sender: &EnvelopeFrom, _spf: &SpfResults) -> Verdict {
        let domain = sender.address.rsplit_once('@').map_or("", |(_, d)| d);
        if domain.eq_ignore_ascii_case(&self.blocked) {
            log::info(&format!("refused {} from {}", sender.address, session.client_ip));
            return Verdict::reject(550, "5.7.1", &format!("Mail from {domain} is not accepted here"));
        }
        Verdict::Continue
    }
}

wasmtp_sdk::export!(Policy);
