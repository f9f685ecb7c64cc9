//! The ARC validation test suite (ValiMail's arc_test_suite, tests/data/
//! arc-draft-validation-tests.yml with its licence; dkimpy passes it), every case run
//! through our verifier: each scenario's keys served by a DNS server the test starts, each
//! message verified as one received, and our `arc=` result compared with the case's `cv`.

mod common;
use common::dns::Zone;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use wasmtp::mailauth::{AuthStatus, SpfResults, Verifier};
use yaml_rust2::{Yaml, YamlLoader};

const SUITE: &str = include_str!("data/arc-draft-validation-tests.yml");

/// Cases whose answer here differs from the suite's, each with why the RFCs ask for ours.
const DIFFERENT: &[(&str, &str)] = &[];

fn text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) => s.clone(),
        _ => String::new(),
    }
}

/// The message with CRLF line ends, split into its header section (with the empty line)
/// and its body.
fn message(text: &str) -> (Vec<u8>, Vec<u8>) {
    let crlf = text.replace("\r\n", "\n").replace('\n', "\r\n");
    let bytes = crlf.into_bytes();
    let at = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |i| i + 4);
    let (header, body) = bytes.split_at(at);
    (header.to_vec(), body.to_vec())
}

/// The suite with its few repeated case names made unique (`name#2`): a YAML reader that
/// refuses repeated keys reads it then, and every case runs.
fn suite() -> Vec<Yaml> {
    let mut seen = std::collections::HashSet::new();
    let mut text = String::new();
    for line in SUITE.lines() {
        if line.starts_with("---") {
            seen.clear();
        }
        let key = line
            .strip_prefix("  ")
            .and_then(|l| l.strip_suffix(':'))
            .filter(|k| !k.starts_with(' ') && !k.contains(' '));
        match key {
            Some(k) if !seen.insert(k.to_string()) => text.push_str(&format!("  {k}#2:\n")),
            _ => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    YamlLoader::load_from_str(&text).unwrap()
}

#[tokio::test]
async fn the_arc_validation_suite() {
    let mut wrong = BTreeMap::new();
    let mut run = 0;
    for scenario in suite() {
        let mut zone = Zone::default();
        for (name, record) in scenario["txt-records"].as_hash().into_iter().flatten() {
            zone = zone.txt(&format!("{}.", text(name)), &text(record));
        }
        let dns = zone.start().await;
        let resolver = wasmtp::dns::Dns::new(&[dns.addr]).unwrap();
        let verifier = Arc::new(Verifier::new(
            resolver,
            "receiver.test",
            Duration::from_secs(2),
        ));
        for (name, case) in scenario["tests"].as_hash().unwrap() {
            let want = text(&case["cv"]).trim().to_ascii_lowercase();
            // A case without an expected answer (three) is not a case.
            if want.is_empty() {
                continue;
            }
            run += 1;
            let (header, body) = message(&text(&case["message"]));
            let results = verifier
                .message(
                    header.into(),
                    body.into(),
                    SpfResults::none(),
                    verifier.timeout(),
                )
                .await;
            let got = match results.arc.status {
                AuthStatus::Pass => "pass".to_string(),
                AuthStatus::Fail => "fail".to_string(),
                AuthStatus::None => "none".to_string(),
                other => format!("{other:?}").to_ascii_lowercase(),
            };
            if got != want {
                wrong.insert(text(name), format!("{got}, not {want}"));
            }
        }
    }
    assert_eq!(run, 172, "the suite's cases with an answer");
    common::check_suite(&wrong, DIFFERENT, run);
}
