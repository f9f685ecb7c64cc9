//! A test guest for the `http` capability: at EHLO it looks the EHLO name up in its config
//! (`urls`: name → URL), POSTs the name to that URL, and answers `451 4.0.0` with what came
//! back: `status=200 body=...` or `error=...`. `timeout_ms` sets the request's timeout.

use std::collections::HashMap;
use std::time::Duration;
use wasmtp_sdk::http::Request;
use wasmtp_sdk::{Hook, Plugin, Session, Verdict};

#[derive(serde::Deserialize)]
struct Config {
    urls: HashMap<String, String>,
    timeout_ms: Option<u64>,
}

struct Probe(Config);

impl Plugin for Probe {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::Helo];

    fn new(config: Config) -> Result<Self, String> {
        Ok(Probe(config))
    }

    fn helo(&mut self, _session: &Session, name: &str, _extended: bool) -> Verdict {
        let Some(url) = self.0.urls.get(name) else {
            return Verdict::Continue;
        };
        let mut request = Request::post(url).header("Content-Type", "text/plain");
        if let Some(ms) = self.0.timeout_ms {
            request = request.timeout(Duration::from_millis(ms));
        }
        let text = match request.send(name.as_bytes()) {
            Ok(r) => {
                let body = String::from_utf8_lossy(&r.body);
                let body: String = body.chars().take(200).collect();
                format!("status={} body={body}", r.status)
            }
            Err(e) => format!("error={e}"),
        };
        Verdict::tempfail(451, "4.0.0", &text)
    }
}

wasmtp_sdk::export!(Probe, capabilities = [http]);
