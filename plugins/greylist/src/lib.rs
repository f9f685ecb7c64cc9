//! Greylisting: the first delivery attempt of a (client network, sender, recipient) triplet
//! gets `451 4.7.1`; a retry after `delay` passes. Real MTAs retry; most spam cannons do not.
//! Triplets are kept in the plugin's kv store for `expire`.

use wasmtp_sdk::kv::{self, KvError};
use wasmtp_sdk::{EnvelopeFrom, Hook, Param, Plugin, Session, Verdict, log};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// How long a new triplet must wait, e.g. "5m".
    pub delay: String,
    /// How long a triplet is remembered, e.g. "36h".
    pub expire: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            delay: "5m".into(),
            expire: "36h".into(),
        }
    }
}

pub struct Greylist {
    delay: u64,
    expire: u64,
}

/// The triplet key: IPv4 clients by /24, IPv6 by /64, since big senders retry from a pool.
pub fn triplet(client_ip: &str, sender: &str, recipient: &str) -> String {
    let net = if let Ok(v4) = client_ip.parse::<std::net::Ipv4Addr>() {
        let o = v4.octets();
        format!("{}.{}.{}", o[0], o[1], o[2])
    } else if let Ok(v6) = client_ip.parse::<std::net::Ipv6Addr>() {
        let s = v6.segments();
        format!("{:x}:{:x}:{:x}:{:x}", s[0], s[1], s[2], s[3])
    } else {
        client_ip.to_string()
    };
    format!(
        "{net}|{}|{}",
        sender.to_lowercase(),
        recipient.to_lowercase()
    )
}

impl Plugin for Greylist {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::Rcpt];

    fn new(config: Config) -> Result<Self, String> {
        Ok(Greylist {
            delay: wasmtp_sdk::parse_duration(&config.delay)?.as_secs(),
            expire: wasmtp_sdk::parse_duration(&config.expire)?.as_secs(),
        })
    }

    fn rcpt(
        &mut self,
        session: &Session,
        sender: &EnvelopeFrom,
        recipient: &str,
        _p: &[Param],
        _a: &[String],
    ) -> Verdict {
        // Authenticated users are not greylisted.
        if session.auth_user.is_some() {
            return Verdict::Continue;
        }
        let key = triplet(&session.client_ip, &sender.address, recipient);
        let now = wasmtp_sdk::now_unix();
        // The store unreachable (a shared Redis down): the `on_error` answer, 451 4.3.0 by
        // default; mail is never let through ungreylisted by a failure.
        let first_seen = match kv::get(&key) {
            Ok(v) => v
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|s| s.parse::<u64>().ok()),
            Err(e) => return unavailable(&e),
        };
        match first_seen {
            Some(first) if now >= first + self.delay => Verdict::Continue,
            Some(_) => greylisted(),
            None => match kv::set(&key, now.to_string().as_bytes(), Some(self.expire)) {
                // Over the quota the triplet is not remembered: greylisted until there is
                // room (the server logs the quota reached).
                Ok(()) | Err(KvError::OverQuota) => greylisted(),
                Err(e) => unavailable(&e),
            },
        }
    }
}

fn greylisted() -> Verdict {
    Verdict::tempfail(451, "4.7.1", "Greylisted, please try again later")
}

fn unavailable(e: &KvError) -> Verdict {
    log::warn(&format!("greylist store: {e:?}"));
    wasmtp_sdk::fault_verdict("Greylisting unavailable, please try again later")
}

wasmtp_sdk::export!(Greylist, capabilities = [kv]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triplets_group_networks() {
        assert_eq!(
            triplet("192.0.2.7", "A@b", "C@d"),
            triplet("192.0.2.200", "a@b", "c@d")
        );
        assert_ne!(
            triplet("192.0.3.7", "a@b", "c@d"),
            triplet("192.0.2.7", "a@b", "c@d")
        );
        assert_eq!(triplet("2001:db8::1", "a", "b"), "2001:db8:0:0|a|b");
    }
}
