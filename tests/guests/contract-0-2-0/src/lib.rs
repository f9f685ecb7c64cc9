//! A plugin of the 0.2.0 contract, as one built before 0.2.1 was: refuses EHLO `old.test`,
//! answers EHLO `count.test` with the count of them in its kv (`kv`, not 0.2.2's `store`)
//! and adds `X-Contract: 0.2.0 size=N` to every message.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use exports::wasmtp::plugin::hooks::Guest;
use wasmtp::plugin::kv;
use wasmtp::plugin::message::Message;
use wasmtp::plugin::types::{
    AuthResults, Change, DataResult, DataVerdict, EnvelopeFrom, Header, Hook, Param, Reply,
    Session, SpfResults, Verdict,
};

struct Old;

impl Guest for Old {
    fn init(_config: String) -> Result<Vec<Hook>, String> {
        Ok(vec![Hook::Helo, Hook::Data])
    }
    fn on_connect(_: Session) -> Verdict {
        Verdict::Continue
    }
    fn on_helo(_: Session, name: String, _: bool) -> Verdict {
        let text = match name.as_str() {
            "old.test" => "refused by a 0.2.0 plugin".to_string(),
            "count.test" => format!("count {}", kv::increment("helos", 1, None)),
            _ => return Verdict::Continue,
        };
        Verdict::Reject(Reply {
            code: 550,
            enhanced: "5.7.1".into(),
            text,
        })
    }
    fn on_auth(_: Session, _: String, _: String, _: bool) -> Verdict {
        Verdict::Continue
    }
    fn on_mail(_: Session, _: EnvelopeFrom, _: SpfResults) -> Verdict {
        Verdict::Continue
    }
    fn on_rcpt(_: Session, _: EnvelopeFrom, _: String, _: Vec<Param>, _: Vec<String>) -> Verdict {
        Verdict::Continue
    }
    fn on_data(
        _: Session,
        _: EnvelopeFrom,
        _: Vec<String>,
        message: &Message,
        _: AuthResults,
    ) -> DataResult {
        DataResult {
            verdict: DataVerdict::Continue,
            changes: vec![Change::AddHeader(Header {
                name: "X-Contract".into(),
                value: format!("0.2.0 size={}", message.size()),
            })],
        }
    }
    fn on_vrfy(_: Session, _: String) -> Verdict {
        Verdict::Continue
    }
    fn on_expn(_: Session, _: String) -> Verdict {
        Verdict::Continue
    }
}

export!(Old);
