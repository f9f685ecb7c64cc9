//! Size limit: refuses with `552 5.3.4` at MAIL when `SIZE=` declares more than `max_size`
//! (RFC 1870 6.2), and at data when the message is larger.

use wasmtp_sdk::{
    AuthResults, DataResult, EnvelopeFrom, Hook, Message, Plugin, Session, SpfResults, Verdict,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// e.g. "10KiB", "25MiB"
    pub max_size: String,
}

pub struct SizeLimit {
    max: u64,
}

impl SizeLimit {
    fn refuse(&self) -> Verdict {
        Verdict::reject(
            552,
            "5.3.4",
            &format!("Message size exceeds the limit of {} octets", self.max),
        )
    }

    /// The verdict for a declared `SIZE=` value, if any.
    pub fn check_declared(&self, declared: Option<&str>) -> Verdict {
        match declared.and_then(|s| s.parse::<u64>().ok()) {
            Some(size) if size > self.max => self.refuse(),
            _ => Verdict::Continue,
        }
    }
}

impl Plugin for SizeLimit {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::Mail, Hook::Data];

    fn new(config: Config) -> Result<Self, String> {
        Ok(SizeLimit {
            max: wasmtp_sdk::parse_size(&config.max_size)?,
        })
    }

    fn mail(&mut self, _session: &Session, sender: &EnvelopeFrom, _spf: &SpfResults) -> Verdict {
        self.check_declared(sender.param("SIZE"))
    }

    fn data(
        &mut self,
        _s: &Session,
        _from: &EnvelopeFrom,
        _rcpts: &[String],
        message: &Message,
        _auth: &AuthResults,
    ) -> DataResult {
        if message.size() > self.max {
            DataResult::verdict(self.refuse())
        } else {
            DataResult::default()
        }
    }
}

wasmtp_sdk::export!(SizeLimit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_size() {
        let p = SizeLimit::new(Config {
            max_size: "10KiB".into(),
        })
        .unwrap();
        assert!(
            matches!(p.check_declared(Some("20000")), Verdict::Reject(r) if r.code == 552 && r.enhanced == "5.3.4")
        );
        assert!(matches!(p.check_declared(Some("100")), Verdict::Continue));
        assert!(matches!(p.check_declared(None), Verdict::Continue));
        assert!(
            SizeLimit::new(Config {
                max_size: "ten".into()
            })
            .is_err()
        );
    }
}
