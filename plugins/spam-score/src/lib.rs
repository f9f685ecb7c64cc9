//! Spam score: content heuristics plus DNS blocklists. The total goes into `X-Spam-Score`
//! and `X-Spam-Status`; above `reject_above` the message is refused with `550 5.7.1`.

use wasmtp_sdk::{
    AuthResults, DataResult, EnvelopeFrom, Hook, Message, Plugin, Session, Verdict, dns, log,
};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// DNSBL zones to query with the client address, e.g. ["zen.spamhaus.org"].
    pub dnsbl: Vec<String>,
    /// Points for each zone that lists the client.
    pub dnsbl_score: f64,
    /// Refuse above this total.
    pub reject_above: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dnsbl: Vec::new(),
            dnsbl_score: 5.0,
            reject_above: 10.0,
        }
    }
}

pub struct SpamScore(Config);

/// Words that weigh on a message (case-insensitive, counted once each).
const SPAM_WORDS: &[(&str, f64)] = &[
    ("viagra", 3.0),
    ("lottery", 2.0),
    ("winner", 1.5),
    ("free money", 2.5),
    ("click here", 1.5),
    ("100% free", 2.0),
    ("act now", 1.5),
    ("wire transfer", 1.5),
    ("bitcoin", 1.0),
];

/// Scores headers and the start of the body; returns the total and the names of the tests hit.
pub fn content_score(headers: &[(String, String)], body: &[u8]) -> (f64, Vec<String>) {
    let mut score = 0.0;
    let mut hits = Vec::new();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let mut hit = |name: &str, points: f64| {
        score += points;
        hits.push(name.to_string());
    };
    if header("Date").is_none() {
        hit("MISSING_DATE", 1.0);
    }
    if header("Message-ID").is_none() {
        hit("MISSING_MID", 1.0);
    }
    let subject = header("Subject").unwrap_or("");
    if subject.is_empty() {
        hit("MISSING_SUBJECT", 0.5);
    }
    let letters: Vec<char> = subject.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() >= 8 && letters.iter().all(|c| c.is_uppercase()) {
        hit("SUBJ_ALL_CAPS", 1.5);
    }
    if subject.matches('!').count() >= 3 {
        hit("SUBJ_EXCLAIM", 1.0);
    }
    // The words are ASCII: an ASCII-lowercased copy and a substring search (memchr's
    // memmem) find them without decoding or Unicode case mapping of the whole body.
    let mut text = Vec::with_capacity(subject.len() + 1 + body.len());
    text.extend_from_slice(subject.as_bytes());
    text.push(b'\n');
    text.extend_from_slice(body);
    text.make_ascii_lowercase();
    for (word, points) in SPAM_WORDS {
        if memchr::memmem::find(&text, word.as_bytes()).is_some() {
            hit(
                &format!("WORD_{}", word.to_uppercase().replace([' ', '%'], "_")),
                *points,
            );
        }
    }
    (score, hits)
}

impl Plugin for SpamScore {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::Data];

    fn new(config: Config) -> Result<Self, String> {
        if config.reject_above <= 0.0 {
            return Err("reject_above must be positive".into());
        }
        Ok(SpamScore(config))
    }

    fn data(
        &mut self,
        session: &Session,
        _from: &EnvelopeFrom,
        _rcpts: &[String],
        message: &Message,
        _auth: &AuthResults,
    ) -> DataResult {
        let headers: Vec<(String, String)> = message
            .headers()
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect();
        let (mut score, mut hits) = content_score(&headers, &message.body(0, 64 * 1024));
        for zone in &self.0.dnsbl {
            match dns::dnsbl(&session.client_ip, zone) {
                Ok(codes) if !codes.is_empty() => {
                    score += self.0.dnsbl_score;
                    hits.push(format!("DNSBL({zone})"));
                }
                Ok(_) => {}
                Err(e) => log::warn(&format!("DNSBL {zone} for {}: {e:?}", session.client_ip)),
            }
        }
        let spam = score > self.0.reject_above;
        let status = format!(
            "{}, score={score:.1} required={:.1} tests={}",
            if spam { "Yes" } else { "No" },
            self.0.reject_above,
            if hits.is_empty() {
                "none".to_string()
            } else {
                hits.join(",")
            }
        );
        let verdict = if spam {
            Verdict::reject(
                550,
                "5.7.1",
                &format!("Message refused as spam (score {score:.1})"),
            )
        } else {
            Verdict::Continue
        };
        DataResult::verdict(verdict)
            .add_header("X-Spam-Score", &format!("{score:.1}"))
            .add_header("X-Spam-Status", &status)
    }
}

wasmtp_sdk::export!(SpamScore, capabilities = [dns]);

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn clean_mail_scores_zero() {
        let (score, hits) = content_score(
            &h(&[
                ("Date", "x"),
                ("Message-ID", "<a@b>"),
                ("Subject", "Lunch on Friday?"),
            ]),
            b"See you there.",
        );
        assert_eq!(score, 0.0, "{hits:?}");
    }

    #[test]
    fn spammy_mail_scores_high() {
        let (score, hits) = content_score(
            &h(&[("Subject", "YOU ARE A WINNER!!!")]),
            b"Click here for free money and viagra",
        );
        assert!(score > 10.0, "{score} {hits:?}");
        assert!(hits.contains(&"SUBJ_ALL_CAPS".to_string()));
    }
}
