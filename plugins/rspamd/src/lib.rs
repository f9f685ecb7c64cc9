//! Scans each message with Rspamd (`/checkv2` of its normal worker, over the `http`
//! capability) and acts on its answer: see README.md.

mod answer;

use answer::{Answer, Scan};
use std::collections::HashMap;
use std::time::Duration;
use wasmtp_sdk::http::Request;
use wasmtp_sdk::{AuthResults, DataResult, EnvelopeFrom, Hook, Message, Plugin, Session, log};

/// Octets of the message read from the host at once and written to Rspamd.
const CHUNK: u32 = 256 * 1024;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The normal worker's base URL, e.g. "http://127.0.0.1:11333".
    url: String,
    /// Sent as the `Password` header (for a worker or proxy that asks for one).
    password: Option<String>,
    /// How long to wait for Rspamd ("5s"); the server also ends it by the hook's timeout.
    #[serde(default = "default_timeout")]
    timeout: String,
    /// What to do for an Rspamd action, overriding the defaults: e.g.
    /// `actions = { "add header" = "quarantine" }`.
    #[serde(default)]
    actions: HashMap<String, Answer>,
}

fn default_timeout() -> String {
    "5s".into()
}

pub struct Rspamd {
    checkv2: String,
    password: Option<String>,
    timeout: Duration,
    actions: HashMap<String, Answer>,
}

impl Plugin for Rspamd {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::Data];

    fn new(config: Config) -> Result<Self, String> {
        let timeout =
            wasmtp_sdk::parse_duration(&config.timeout).map_err(|e| format!("timeout: {e}"))?;
        if !config.url.starts_with("http://") && !config.url.starts_with("https://") {
            return Err(format!("url: {:?} is not an http(s) URL", config.url));
        }
        let mut actions = answer::defaults();
        for (action, answer) in config.actions {
            if !actions.contains_key(action.as_str()) {
                return Err(format!("actions: {action:?} is not an Rspamd action"));
            }
            actions.insert(action, answer);
        }
        Ok(Rspamd {
            checkv2: format!("{}/checkv2", config.url.trim_end_matches('/')),
            password: config.password,
            timeout,
            actions,
        })
    }

    fn data(
        &mut self,
        session: &Session,
        sender: &EnvelopeFrom,
        recipients: &[String],
        message: &Message,
        _auth: &AuthResults,
    ) -> DataResult {
        match self.scan(session, sender, recipients, message) {
            Ok(scan) => scan.result(&self.actions),
            Err(why) => {
                log::warn(&why);
                DataResult::verdict(wasmtp_sdk::fault_verdict("spam scanner unavailable"))
            }
        }
    }
}

impl Rspamd {
    /// Sends the message with its envelope in Rspamd's protocol headers; the parsed reply.
    fn scan(
        &self,
        session: &Session,
        sender: &EnvelopeFrom,
        recipients: &[String],
        message: &Message,
    ) -> Result<Scan, String> {
        let size = message.size();
        let mut request = Request::post(&self.checkv2)
            .timeout(self.timeout)
            .header("Content-Length", size.to_string())
            .header("IP", session.client_ip.as_str())
            .header("From", sender.address.as_str());
        if let Some(helo) = &session.helo {
            request = request.header("Helo", helo.as_str());
        }
        if let Some(user) = &session.auth_user {
            request = request.header("User", user.as_str());
        }
        if let Some(password) = &self.password {
            request = request.header("Password", password.as_str());
        }
        for rcpt in recipients {
            request = request.header("Rcpt", rcpt.as_str());
        }
        let chunks =
            (0..size.div_ceil(u64::from(CHUNK))).map(|i| message.raw(i * u64::from(CHUNK), CHUNK));
        let response = request
            .send_chunks(chunks)
            .map_err(|e| format!("rspamd at {}: {e}", self.checkv2))?;
        if response.status != 200 {
            let body: String = String::from_utf8_lossy(&response.body)
                .chars()
                .take(200)
                .collect();
            return Err(format!(
                "rspamd at {} answered HTTP {}: {body}",
                self.checkv2, response.status
            ));
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| format!("rspamd at {}: unreadable reply: {e}", self.checkv2))
    }
}

wasmtp_sdk::export!(Rspamd, capabilities = [http]);
