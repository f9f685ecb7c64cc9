//! A test guest. `mode` picks what happens at MAIL (and, for "huge-header" and
//! "many-changes", at data): "panic", "loop", "memory", "bad-reply", "log-flood",
//! "huge-header", "many-changes", "slow-init"; "echo-auth" writes the authentication results
//! it was given (at MAIL and at data) into an `X-Echo-Auth` field; anything else is a
//! well-behaved policy driven by the addresses and subject, to exercise every verdict and
//! change. `scan_ms` makes its data hook take that long.

use wasmtp_sdk::{
    AuthResults, Change, DataResult, DataVerdict, EnvelopeFrom, Header, Hook, Message, Param,
    Plugin, Reply, Session, SpfResults, Verdict, edit, kv, log,
};

#[derive(serde::Deserialize, Default)]
#[serde(default)]
pub struct Config {
    pub mode: String,
    /// How long the data hook takes (a slow scanner), in milliseconds.
    pub scan_ms: u64,
}

pub struct Misbehave {
    mode: String,
    scan_ms: u64,
    /// Per-session state: counts hooks seen by this instance.
    calls: u32,
    /// "echo-auth": the SPF results the mail hook got.
    mail_spf: String,
}

impl Plugin for Misbehave {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[
        Hook::Connect,
        Hook::Helo,
        Hook::Mail,
        Hook::Rcpt,
        Hook::Data,
        Hook::Vrfy,
    ];

    fn new(config: Config) -> Result<Self, String> {
        if config.mode == "bad-config" {
            return Err("mode bad-config is refused on purpose".into());
        }
        if config.mode == "slow-init" {
            loop {
                std::hint::black_box(());
            }
        }
        Ok(Misbehave {
            mode: config.mode,
            scan_ms: config.scan_ms,
            calls: 0,
            mail_spf: String::new(),
        })
    }

    fn connect(&mut self, session: &Session) -> Verdict {
        self.calls += 1;
        let n = kv::increment("connections", 1, None).unwrap_or(-1);
        log::info(&format!("connection {n} from {}", session.client_ip));
        Verdict::Continue
    }

    fn helo(&mut self, _session: &Session, name: &str, _extended: bool) -> Verdict {
        self.calls += 1;
        match name {
            "reject.test" => Verdict::reject(550, "5.7.1", "HELO refused by plugin"),
            "bye.test" => Verdict::disconnect("4.7.0", "go away"),
            // What the store answers, told in the reply: a count or the error the guest reads.
            "kv.test" => match kv::increment("helos", 1, None) {
                Ok(n) => Verdict::reject(550, "5.7.1", &format!("kv: {n}")),
                Err(kv::KvError::Denied) => Verdict::reject(550, "5.7.1", "kv: denied"),
                Err(e) => Verdict::tempfail(451, "4.3.0", &format!("kv: {e:?}")),
            },
            _ => Verdict::Continue,
        }
    }

    fn mail(&mut self, _session: &Session, sender: &EnvelopeFrom, spf: &SpfResults) -> Verdict {
        self.calls += 1;
        self.mail_spf = format!(
            "{}/{}:{}",
            spf.mail_from.status.as_str(),
            spf.helo.status.as_str(),
            spf.mail_from.domain
        );
        match self.mode.as_str() {
            "panic" => panic!("misbehave: panic on purpose"),
            "loop" => loop {
                std::hint::black_box(());
            },
            "memory" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            // Logs as fast as it can until its deadline, each line trying to forge another.
            "log-flood" => loop {
                log::info("flood\nFORGED: a line of the server's own");
                println!("printed\nFORGED: from stdout");
            },
            "bad-reply" => Verdict::Reject(Reply {
                code: 250,
                enhanced: "2.0.0".into(),
                text: "not a refusal".into(),
            }),
            _ if sender.address.starts_with("tempfail@") => {
                Verdict::tempfail(451, "4.7.1", "sender deferred by plugin")
            }
            _ => {
                println!("mail from {} (call {})", sender.address, self.calls);
                Verdict::Continue
            }
        }
    }

    fn rcpt(
        &mut self,
        _s: &Session,
        _from: &EnvelopeFrom,
        recipient: &str,
        _p: &[Param],
        accepted: &[String],
    ) -> Verdict {
        self.calls += 1;
        if recipient.starts_with("blocked@") {
            return Verdict::reject(
                550,
                "5.1.1",
                &format!(
                    "{recipient} blocked by plugin after {} accepted",
                    accepted.len()
                ),
            );
        }
        Verdict::Continue
    }

    fn data(
        &mut self,
        _s: &Session,
        _from: &EnvelopeFrom,
        _rcpts: &[String],
        message: &Message,
        auth: &AuthResults,
    ) -> DataResult {
        self.calls += 1;
        // Waits in a host call (the clock's), as a scanner waiting on its daemon would.
        std::thread::sleep(std::time::Duration::from_millis(self.scan_ms));
        if self.mode == "echo-auth" {
            let dkim: Vec<String> = auth
                .dkim
                .iter()
                .map(|d| {
                    format!(
                        "{}:{}:{}:{}",
                        d.status.as_str(),
                        d.domain,
                        d.selector,
                        d.algorithm
                    )
                })
                .collect();
            let d = &auth.dmarc;
            let echo = format!(
                "mail={}; spf={}; dkim=[{}]; arc={}/{}; dmarc={} from={} policy={} pct={} disposition={} aligned={}{}",
                self.mail_spf,
                auth.spf.mail_from.status.as_str(),
                dkim.join(","),
                auth.arc.status.as_str(),
                auth.arc.sets,
                d.status.as_str(),
                d.from_domain,
                d.policy.as_str(),
                d.percent,
                d.disposition.as_str(),
                if d.spf_aligned { "spf" } else { "" },
                if d.dkim_aligned { "dkim" } else { "" },
            );
            return DataResult::default().add_header("X-Echo-Auth", &echo);
        }
        if self.mode == "huge-header" {
            return DataResult::default().add_header("X-Huge", &"x".repeat(2 << 20));
        }
        if self.mode == "many-changes" {
            let changes = (0..100_000)
                .map(|i| Change::AddRecipient(format!("u{i}@example.test")))
                .chain((0..100_000).map(|i| Change::RemoveRecipient(format!("r{i}@example.test"))))
                .collect();
            return DataResult {
                verdict: DataVerdict::Continue,
                changes,
            };
        }
        let subject = message
            .header("Subject")
            .into_iter()
            .next()
            .unwrap_or_default();
        if let Some(result) = milter(&subject) {
            return result;
        }
        let verdict = match subject.as_str() {
            "quarantine me" => DataVerdict::Quarantine("looks odd".into()),
            "discard me" => DataVerdict::Discard,
            "tempfail me" => DataVerdict::Tempfail(Reply {
                code: 451,
                enhanced: "4.7.1".into(),
                text: "scan deferred by plugin".into(),
            }),
            "reject me" => DataVerdict::Reject(Reply {
                code: 554,
                enhanced: "5.7.0".into(),
                text: "content refused by plugin".into(),
            }),
            _ => DataVerdict::Continue,
        };
        let body = message.body(0, 16);
        DataResult {
            verdict,
            changes: vec![
                Change::AddHeader(Header {
                    name: "X-Misbehave".into(),
                    value: format!(
                        "calls={} size={} body={}",
                        self.calls,
                        message.size(),
                        String::from_utf8_lossy(&body).trim()
                    ),
                }),
                Change::RemoveHeader("X-Remove-Me".into()),
                Change::AddRecipient("added@example.test".into()),
                Change::RemoveRecipient("removed@example.test".into()),
            ],
        }
    }

    fn vrfy(&mut self, _s: &Session, argument: &str) -> Verdict {
        Verdict::reject(502, "5.5.1", &format!("no VRFY for {argument}"))
    }
}

wasmtp_sdk::export!(Misbehave);

fn param(name: &str, value: &str) -> Param {
    Param {
        name: name.into(),
        value: Some(value.into()),
    }
}

/// The milter-like edits, by subject: "edit me" asks for every kind (a new body of 300 KiB
/// in 3 chunks); "refuse in lines" refuses with a two-line reply; "body too big" writes
/// past limits.message_size and refuses with the error it reads; "bad edits" asks for
/// edits the host must refuse, and tells which were refused; "keep my body" starts a body,
/// goes past the limit, and says in the 250 what it read; "bare line ends" writes a
/// body of bare CRs and LFs across chunks.
fn milter(subject: &str) -> Option<DataResult> {
    let lines = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let result = |verdict| DataResult {
        verdict,
        changes: Vec::new(),
    };
    match subject {
        "edit me" => {
            edit::insert_header(0, "X-Inserted", "on top").unwrap();
            edit::insert_header(2, "X-Third", "third").unwrap();
            edit::change_header("X-Change", 2, Some("second changed")).unwrap();
            edit::change_header("X-Delete", 1, None).unwrap();
            edit::set_sender("new-sender@example.test", &[param("RET", "HDRS")]).unwrap();
            edit::add_recipient(
                "dsn@example.test",
                &[
                    param("NOTIFY", "SUCCESS,FAILURE"),
                    param("ORCPT", "rfc822;orig@example.test"),
                ],
            )
            .unwrap();
            for chunk in 0..3 {
                let line = format!("replaced body, chunk {chunk}\r\n");
                let body = line.repeat(100 * 1024 / line.len());
                edit::write_body(body.as_bytes()).unwrap();
            }
            edit::set_reply(&lines(&["edited by misbehave", "all of it"])).unwrap();
            Some(result(DataVerdict::Continue))
        }
        "refuse in lines" => {
            edit::set_reply(&lines(&["refused, first line", "and a second"])).unwrap();
            Some(result(DataVerdict::Reject(Reply {
                code: 550,
                enhanced: "5.7.1".into(),
                text: "one line".into(),
            })))
        }
        "body too big" => {
            let chunk = vec![b'x'; 64 * 1024];
            let err = loop {
                if let Err(e) = edit::write_body(&chunk) {
                    break e;
                }
            };
            Some(result(DataVerdict::Reject(Reply {
                code: 552,
                enhanced: "5.3.4".into(),
                text: format!("{err:?}"),
            })))
        }
        "keep my body" => {
            edit::write_body(b"a start\r\n").unwrap();
            let refused = edit::write_body(&vec![b'x'; 2 << 20]).is_err();
            let after = edit::write_body(b"more\r\n").is_err();
            edit::set_reply(&[format!("refused {refused} {after}")]).unwrap();
            Some(result(DataVerdict::Continue))
        }
        "bare line ends" => {
            edit::write_body(b"one\ntwo\r").unwrap();
            edit::write_body(b"\n.\nthree\r\rfour\r").unwrap();
            Some(result(DataVerdict::Continue))
        }
        "bad edits" => {
            let refused = [
                edit::insert_header(0, "Bad Name", "x").is_err(),
                edit::change_header("X-A", 1, Some("two\r\nlines")).is_err(),
                edit::change_header("X-A", 0, None).is_err(),
                edit::set_sender("not an address", &[]).is_err(),
                edit::add_recipient("r@example.test", &[param("NOTIFY", "SOMETIMES")]).is_err(),
                edit::set_reply(&[]).is_err(),
                edit::set_reply(&["x".repeat(600)]).is_err(),
                edit::set_reply(&["d\u{e9}j\u{e0} vu".into()]).is_err(),
                edit::insert_header(0, "X-A", "bell\u{7}").is_err(),
            ];
            let text = format!("refused {:?}", refused);
            Some(result(DataVerdict::Reject(Reply {
                code: 550,
                enhanced: "5.7.1".into(),
                text,
            })))
        }
        _ => None,
    }
}
