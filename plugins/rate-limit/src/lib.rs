//! Rate limit: at most `max_messages` transactions (MAIL commands) per `window` per client
//! IP, counted with the kv store's atomic increment; beyond it `451 4.7.0`.

use wasmtp_sdk::kv::{self, KvError};
use wasmtp_sdk::{EnvelopeFrom, Hook, Plugin, Session, SpfResults, Verdict};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub max_messages: i64,
    /// e.g. "1h"
    pub window: String,
}

pub struct RateLimit {
    max: i64,
    window: u64,
}

impl Plugin for RateLimit {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::Mail];

    fn new(config: Config) -> Result<Self, String> {
        let window = wasmtp_sdk::parse_duration(&config.window)?.as_secs();
        if window == 0 || config.max_messages < 1 {
            return Err("window and max_messages must be positive".into());
        }
        Ok(RateLimit {
            max: config.max_messages,
            window,
        })
    }

    fn mail(&mut self, session: &Session, _sender: &EnvelopeFrom, _spf: &SpfResults) -> Verdict {
        // Fixed windows: the key names the window, and expires with it.
        let slot = wasmtp_sdk::now_unix() / self.window;
        let key = format!("{}|{slot}", session.client_ip);
        let count = match kv::increment(&key, 1, Some(self.window)) {
            Ok(n) => n,
            // The namespace is full (the server logs it): not counted, as before the
            // quota, rather than every new client refused because others filled it.
            Err(KvError::OverQuota) => return Verdict::Continue,
            // Unreachable: the plugin's `on_error` answer (451 4.3.0 by default).
            Err(e) => {
                wasmtp_sdk::log::warn(&format!("rate-limit store: {e:?}"));
                return wasmtp_sdk::fault_verdict("Rate limiting unavailable, try again later");
            }
        };
        if count > self.max {
            Verdict::tempfail(
                451,
                "4.7.0",
                &format!(
                    "Rate limit of {} messages exceeded, try again later",
                    self.max
                ),
            )
        } else {
            Verdict::Continue
        }
    }
}

wasmtp_sdk::export!(RateLimit, capabilities = [kv]);
