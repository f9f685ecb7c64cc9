//! A broken resolver must not become a slow gateway: against DNS servers the tests start,
//! one that loses a fifth of its queries (retransmission after 1 s keeps MAIL under
//! 2.5 s), one that never answers (one timeout for the outage, not one per message), and
//! one whose "no such name" answers carry an SOA (kept for its minimum, RFC 2308: a name
//! is asked for once, not once per session).

mod common;
use common::Client;
use common::auth::{gateway, plain};
use common::dns::Zone;
use common::sink::{Sink, SinkOptions};
use std::time::{Duration, Instant};

/// One message from `from` after `EHLO helo`; how long the MAIL reply took.
async fn timed_mail(s: &common::TestServer, helo: &str, from: &str) -> Duration {
    let mut c = Client::connect(s.addr()).await;
    c.cmd(&format!("EHLO {helo}"), "250").await;
    let started = Instant::now();
    c.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
    let took = started.elapsed();
    c.cmd("RCPT TO:<rcpt@example.test>", "250").await;
    c.cmd("DATA", "354").await;
    let mut data = plain("x@x.test", "resolver");
    data.extend_from_slice(b".\r\n");
    c.send(&data).await;
    assert!(c.reply().await.starts_with("250"));
    took
}

#[tokio::test]
async fn a_lossy_resolver_costs_a_retransmission_not_the_timeout() {
    const MESSAGES: usize = 40;
    let mut zone = Zone::default().drop_every(5);
    for i in 0..MESSAGES {
        zone = zone.txt(&format!("s{i}.lossy.test."), "v=spf1 ip4:127.0.0.1 -all");
    }
    let dns = zone.start().await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, "").await;
    let mut took = Vec::new();
    for i in 0..MESSAGES {
        // A sender domain of its own each time: every MAIL asks DNS.
        took.push(timed_mail(&s, "client.lossy.test", &format!("a@s{i}.lossy.test")).await);
    }
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    eprintln!(
        "MAIL with 20% of queries lost: p50 {:?}, p99 {p99:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(
        p99 < Duration::from_millis(2500),
        "p99 MAIL {p99:?}: {took:?}"
    );
    assert!(dns.queries.load(std::sync::atomic::Ordering::SeqCst) >= MESSAGES);
}

#[tokio::test]
async fn a_dead_resolver_costs_one_timeout_not_one_per_message() {
    let dns = Zone::default().drop_every(1).start().await;
    let sink = Sink::start(SinkOptions::default()).await;
    // The default budget (10 s), as an operator would have it.
    let s = common::TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n[dns]\nnameservers = [\"{}\"]\n\
         [authentication]\nverify = true\n{}",
        dns.addr,
        sink.config_route("example.test", "none")
    ))
    .await;
    let started = Instant::now();
    for i in 0..20 {
        timed_mail(&s, "client.dead.test", &format!("a@s{i}.dead.test")).await;
    }
    let all = started.elapsed();
    assert!(all < Duration::from_secs(30), "20 messages took {all:?}");
    let got = sink.wait_for(20).await;
    assert!(
        got.iter().all(|m| m.text().contains("spf=temperror")),
        "SPF without DNS is a temporary error"
    );
}

#[tokio::test]
async fn no_such_name_is_asked_once_not_once_per_session() {
    let dns = Zone::default().start().await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, "").await;
    for _ in 0..10 {
        timed_mail(&s, "unknown-helo.test", "a@unknown-sender.test").await;
    }
    let asked = dns.asked.lock().unwrap().clone();
    for name in ["unknown-helo.test.", "unknown-sender.test."] {
        let times = asked.iter().filter(|(n, _)| n == name).count();
        assert_eq!(times, 1, "{name} asked {times} times: {asked:?}");
    }
}
