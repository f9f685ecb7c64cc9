//! VRFY and EXPN guard: answers both with `502 5.5.1` (or, with `reply = 252`, the
//! non-committal 252 of RFC 5321 3.5.3) and logs who asked for what. VRFY and EXPN let
//! outsiders harvest user names and list members; the usual advice is to disable or log them.

use wasmtp_sdk::{Hook, Plugin, Session, Verdict, log};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// 502 (disabled, the default) or 252 (answer without revealing anything).
    pub reply: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config { reply: 502 }
    }
}

pub struct Guard {
    reply: u16,
}

impl Guard {
    fn answer(&self, session: &Session, verb: &str, argument: &str) -> Verdict {
        log::info(&format!("{verb} {argument:?} from {}", session.client_ip));
        if self.reply == 252 {
            // The host's own answer to VRFY/EXPN is the 252 of RFC 5321 3.5.3.
            Verdict::Accept
        } else {
            Verdict::reject(502, "5.5.1", &format!("{verb} command is disabled"))
        }
    }
}

impl Plugin for Guard {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::Vrfy, Hook::Expn];

    fn new(config: Config) -> Result<Self, String> {
        match config.reply {
            252 | 502 => Ok(Guard {
                reply: config.reply,
            }),
            other => Err(format!("reply must be 502 or 252, not {other}")),
        }
    }

    fn vrfy(&mut self, session: &Session, argument: &str) -> Verdict {
        self.answer(session, "VRFY", argument)
    }

    fn expn(&mut self, session: &Session, argument: &str) -> Verdict {
        self.answer(session, "EXPN", argument)
    }
}

wasmtp_sdk::export!(Guard);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        assert!(Guard::new(Config { reply: 250 }).is_err());
        assert!(Guard::new(Config::default()).is_ok());
    }
}
