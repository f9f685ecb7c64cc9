//! The openspf.org RFC 7208 test suite (release 2014.04, from pyspf's source archive:
//! tests/data/rfc7208-tests.yml with its licence), every case run through our SPF
//! evaluator: each scenario's zone served by a DNS server the test starts, each case's
//! client address, HELO and MAIL FROM checked as a session would, and the result (and the
//! explanation, where the case gives one) compared.

mod common;
use common::auth::{delivered_fields, echo_plugin, field, gateway, plain};
use common::dns::Zone;
use common::sink::{Sink, SinkOptions};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use wasmtp::mailauth::{AuthStatus, Verifier};
use yaml_rust2::{Yaml, YamlLoader};

const SUITE: &str = include_str!("data/rfc7208-tests.yml");

/// Cases whose answer here differs from the suite's, each with why RFC 7208 allows ours.
const DIFFERENT: &[(&str, &str)] = &[(
    "v-macro-ip6",
    "an explanation's %{ir} of an IPv6 client: the suite writes the nibbles in upper case, \
     RFC 7208 7.4's own example (and DNS, which ignores case) in lower case, as we do",
)];

fn text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Real(r) => r.clone(),
        _ => String::new(),
    }
}

/// A TXT or SPF value: one string, or a list of strings (one record of several).
fn strings(y: &Yaml, text: impl Fn(&Yaml) -> String) -> Vec<Vec<u8>> {
    match y {
        Yaml::Array(parts) => parts.iter().map(|p| latin(&text(p))).collect(),
        other => vec![latin(&text(other))],
    }
}

/// The suite writes octets as `\xNN` escapes, which YAML reads as code points: back to
/// octets, as pyspf's driver sends them.
fn latin(s: &str) -> Vec<u8> {
    s.chars()
        .flat_map(|c| match u8::try_from(u32::from(c)) {
            Ok(b) => vec![b],
            Err(_) => c.to_string().into_bytes(),
        })
        .collect()
}

/// `text` with the IPv4 address `from` (a whole address, not part of a longer one) as `to`.
fn swap_ip(text: &str, from: &str, to: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let before = out.chars().last().or(rest[..i].chars().last());
        let after = &rest[i + from.len()..];
        let part_of_more = before.is_some_and(|c| c.is_ascii_digit() || c == '.')
            || after.starts_with(|c: char| c.is_ascii_digit())
            || after
                .strip_prefix('.')
                .is_some_and(|a| a.starts_with(|c: char| c.is_ascii_digit()));
        out.push_str(&rest[..i]);
        out.push_str(if part_of_more { from } else { to });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// A scenario's zone as pyspf's driver serves it: SPF records are also TXT records when
/// the name has no TXT of its own; TIMEOUT names or types never answer. `text` reads each
/// value (`swap_ip` to move the scenario onto a loopback client).
fn zone(data: &Yaml, text: impl Fn(&Yaml) -> String) -> Zone {
    let mut zone = Zone::default();
    let Some(names) = data.as_hash() else {
        return zone;
    };
    for (name, records) in names {
        let name = format!("{}.", text(name).trim_end_matches('.'));
        let records = records.as_vec().cloned().unwrap_or_default();
        let has_txt = records.iter().any(|r| {
            r.as_hash()
                .is_some_and(|h| h.contains_key(&Yaml::from_str("TXT")))
        });
        zone = zone.exists(&name);
        for record in &records {
            if text(record) == "TIMEOUT" {
                zone = zone.timeout(&name, None);
                continue;
            }
            let Some(hash) = record.as_hash() else {
                continue;
            };
            for (kind, value) in hash {
                let kind = text(kind);
                if text(value) == "TIMEOUT" {
                    zone = zone.timeout(&name, Some(&kind));
                    continue;
                }
                if text(value) == "NONE" {
                    continue;
                }
                zone = match kind.as_str() {
                    "A" => zone.a(&name, text(value).parse().unwrap()),
                    "AAAA" => zone.aaaa(&name, text(value).parse().unwrap()),
                    "MX" => {
                        let v = value.as_vec().unwrap();
                        let exchange = format!("{}.", text(&v[1]).trim_end_matches('.'));
                        zone.mx(&name, v[0].as_i64().unwrap() as u16, &exchange)
                    }
                    "PTR" => zone.ptr(&name, &text(value)),
                    "CNAME" => zone.cname(&name, &text(value)),
                    "TXT" => zone.txt_strings(&name, strings(value, &text)),
                    "SPF" if has_txt => zone,
                    "SPF" => zone.txt_strings(&name, strings(value, &text)),
                    other => panic!("record type {other}"),
                };
            }
        }
    }
    zone
}

fn status(s: AuthStatus) -> &'static str {
    match s {
        AuthStatus::Pass => "pass",
        AuthStatus::Fail => "fail",
        AuthStatus::Softfail => "softfail",
        AuthStatus::Neutral => "neutral",
        AuthStatus::None => "none",
        AuthStatus::Temperror => "temperror",
        AuthStatus::Permerror => "permerror",
    }
}

#[tokio::test]
async fn the_rfc_7208_test_suite() {
    let scenarios = YamlLoader::load_from_str(SUITE).unwrap();
    let mut wrong = BTreeMap::new();
    let mut run = 0;
    for scenario in &scenarios {
        let dns = zone(&scenario["zonedata"], text).start().await;
        let resolver = wasmtp::dns::Dns::new(&[dns.addr]).unwrap();
        let verifier = Arc::new(Verifier::new(
            resolver,
            "receiver.test",
            Duration::from_secs(2),
        ));
        for (name, case) in scenario["tests"].as_hash().unwrap() {
            let name = text(name);
            let ip: IpAddr = text(&case["host"]).parse().unwrap();
            let (helo, sender) = (text(&case["helo"]), text(&case["mailfrom"]));
            let got = if sender.is_empty() {
                verifier.spf_helo(ip, &helo).await
            } else {
                verifier.spf_mail_from(ip, &helo, &sender).await
            };
            run += 1;
            let want: Vec<String> = match &case["result"] {
                Yaml::Array(any) => any.iter().map(text).collect(),
                one => vec![text(one)],
            };
            let result = status(got.status);
            let mut problem = None;
            if !want.iter().any(|w| w == result) {
                problem = Some(format!("{result}, not {want:?}"));
            } else if result == "fail" && case["explanation"] != Yaml::BadValue {
                let expected = text(&case["explanation"]);
                let explained = got.explanation.as_deref().unwrap_or("DEFAULT");
                if explained != expected {
                    problem = Some(format!("explained {explained:?}, not {expected:?}"));
                }
            }
            if let Some(problem) = problem {
                wrong.insert(name, problem);
            }
        }
    }
    assert_eq!(
        run, 203,
        "the suite's cases (200 names; three appear in two scenarios)"
    );
    common::check_suite(&wrong, DIFFERENT, run);
}

/// Suite cases of a client at 1.2.3.4, through the gateway end to end: the scenario's zone
/// with that address moved to 127.0.0.2, the session from 127.0.0.2, and the result read
/// from our Authentication-Results.
#[tokio::test]
async fn suite_cases_end_to_end() {
    const CASES: [&str; 5] = [
        "a-colon-domain",
        "mx-colon-domain",
        "a-nxdomain",
        "modifier-charset-bad1",
        "detect-errors-anywhere",
    ];
    let client: IpAddr = "127.0.0.2".parse().unwrap();
    let moved = |y: &Yaml| swap_ip(&text(y), "1.2.3.4", "127.0.0.2");
    for scenario in YamlLoader::load_from_str(SUITE).unwrap() {
        let tests = scenario["tests"].as_hash().unwrap();
        let cases: Vec<_> = tests
            .iter()
            .filter(|(n, _)| CASES.contains(&text(n).as_str()))
            .collect();
        if cases.is_empty() {
            continue;
        }
        let dns = zone(&scenario["zonedata"], moved).start().await;
        let sink = Sink::start(SinkOptions::default()).await;
        let s = gateway(&dns, &sink, &echo_plugin()).await;
        for (i, (name, case)) in cases.iter().enumerate() {
            assert_eq!(text(&case["host"]), "1.2.3.4");
            let sender = text(&case["mailfrom"]);
            let mut c = common::Client::connect_from(s.addr(), client).await;
            c.cmd(&format!("EHLO {}", text(&case["helo"])), "250").await;
            c.cmd(&format!("MAIL FROM:<{sender}>"), "250").await;
            c.cmd("RCPT TO:<rcpt@example.test>", "250").await;
            c.cmd("DATA", "354").await;
            let mut data = plain("x@x.test", &format!("case {i}"));
            data.extend_from_slice(b".\r\n");
            c.send(&data).await;
            assert!(c.reply().await.starts_with("250"), "{}", text(name));
            let got = sink.wait_for(i + 1).await;
            let fields = delivered_fields(&got, &format!("Subject: case {i}\r\n"));
            let results = field(&fields, "Authentication-Results");
            let domain = sender.split('@').nth(1).unwrap();
            let want = format!("spf={} smtp.mailfrom={domain}", text(&case["result"]));
            assert!(results[0].contains(&want), "{}: {}", text(name), results[0]);
        }
    }
}
