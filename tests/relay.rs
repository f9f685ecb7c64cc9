//! Relay to a next hop started by the test: content, trace header, parameters passed on,
//! per-recipient outcomes, retries, opportunistic STARTTLS, and 200 concurrent sessions.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};
use std::sync::Arc;
use wasmtp::spool::RecipientStatus;

fn accept(extra: &str) -> String {
    format!(
        "[accept]\ndomains = [\"example.test\", \"other.test\"]\n[delivery]\nretry = [\"1s\"]\n{extra}"
    )
}

#[tokio::test]
async fn relays_content_with_received_header_and_parameters() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&accept(&sink.config_route("example.test", "none"))).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO client.test", "250").await;
    c.cmd(
        "MAIL FROM:<sender@client.test> BODY=8BITMIME RET=HDRS ENVID=env+2B1",
        "250",
    )
    .await;
    c.cmd(
        "RCPT TO:<u@example.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u+40example.test",
        "250",
    )
    .await;
    c.cmd("RCPT TO:<v@example.test>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: relay\r\n\r\nline\r\n..dotted\r\n.\r\n")
        .await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    let id = reply.rsplit(' ').next().unwrap().to_string();
    let got = &sink.wait_for(1).await[0];
    assert!(
        got.mail.starts_with("MAIL FROM:<sender@client.test>"),
        "{}",
        got.mail
    );
    for p in ["BODY=8BITMIME", "RET=HDRS", "ENVID=env+2B1", "SIZE="] {
        assert!(got.mail.contains(p), "{p} not in {}", got.mail);
    }
    assert_eq!(got.rcpts.len(), 2);
    assert!(
        got.rcpts[0].contains("NOTIFY=SUCCESS,DELAY")
            && got.rcpts[0].contains("ORCPT=rfc822;u+40example.test"),
        "{:?}",
        got.rcpts
    );
    let text = got.text();
    assert!(
        text.starts_with(
            "Received: from client.test ([127.0.0.1])\r\n\tby mx.test (wasmtp) with ESMTP id "
        ),
        "{text}"
    );
    assert!(text.contains(&id), "{text}");
    assert!(
        text.ends_with("Subject: relay\r\n\r\nline\r\n.dotted\r\n"),
        "{text:?}"
    );
    // Delivered: the spool is empty again.
    common::eventually("spool cleanup", || s.spool_ids().is_empty()).await;
}

#[tokio::test]
async fn per_recipient_results_and_retry() {
    // "bad" is refused for good; "later" is deferred twice, then accepted.
    let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = tries.clone();
    let sink = Sink::with_rcpt_rule(move |line: &str| {
        if line.contains("bad@") {
            Some("550 5.1.1 no such user".to_string())
        } else if line.contains("later@") && t.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2
        {
            Some("450 4.2.0 try later".to_string())
        } else {
            None
        }
    })
    .await;
    let s = TestServer::start(&accept(&sink.config_route("*", "none"))).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let reply = c
        .send_mail(
            // The null sender: this test is about outcomes, not the report for "bad".
            "",
            &["ok@example.test", "bad@example.test", "later@example.test"],
            "Subject: r\r\n\r\nx",
        )
        .await;
    assert!(reply.starts_with("250"));
    let got = sink.wait_for(2).await;
    assert_eq!(got[0].rcpts.len(), 1, "{:?}", got[0].rcpts);
    assert!(got[0].rcpts[0].contains("ok@"));
    assert_eq!(got[1].rcpts.len(), 1);
    assert!(got[1].rcpts[0].contains("later@"));
    assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
    common::eventually("spool cleanup", || s.spool_ids().is_empty()).await;
}

#[tokio::test]
async fn next_hop_down_keeps_mail_until_it_is_up() {
    // Reserve a port, then free it: the first attempts are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A retry interval of an hour: only ETRN can bring the second attempt forward.
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n[relay]\nnetworks = [\"127.0.0.1\"]\n[delivery]\nretry = [\"1h\"]\n[[route]]\ndomain = \"*\"\nto = \"smtp:127.0.0.1:{port}\"\n"
    ))
    .await;
    let mut c = s.send_one(&["u@example.test"], "wait").await;
    common::eventually("a deferral", || s.deferrals() > 0).await;
    assert_eq!(s.spool_ids().len(), 1);
    let sink = Sink::start_on(&format!("127.0.0.1:{port}"), SinkOptions::default()).await;
    // ETRN asks for the queue to run now.
    c.cmd("ETRN example.test", "250").await;
    sink.wait_for(1).await;
    common::eventually("spool cleanup", || s.spool_ids().is_empty()).await;
}

#[tokio::test]
async fn opportunistic_starttls_to_next_hop() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("c.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("k.pem"), cert.key_pair.serialize_pem()).unwrap();
    let tls = wasmtp::tls::load_server_config(&wasmtp::config::Tls {
        certificate: dir.path().join("c.pem"),
        private_key: dir.path().join("k.pem"),
    })
    .unwrap();
    let sink = Sink::start(SinkOptions {
        tls: Some(tls),
        ..Default::default()
    })
    .await;
    let s = TestServer::start(&accept(&sink.config_route("*", "opportunistic"))).await;
    s.send_one(&["u@example.test"], "tls").await;
    let got = sink.wait_for(1).await;
    assert!(got[0].tls, "relayed in the clear");
}

#[tokio::test]
async fn required_tls_defers_when_next_hop_has_none() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&accept(&sink.config_route("*", "required"))).await;
    s.send_one(&["u@example.test"], "tls").await;
    common::eventually("a deferral", || s.deferrals() > 0).await;
    assert_eq!(sink.count(), 0);
    assert_eq!(s.spool_ids().len(), 1);
}

#[tokio::test]
async fn next_hop_without_pipelining() {
    let sink = Sink::start(SinkOptions {
        no_pipelining: true,
        ..Default::default()
    })
    .await;
    let s = TestServer::start(&accept(&sink.config_route("*", "none"))).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    assert!(
        c.send_mail(
            "s@c.test",
            &["a@example.test", "b@other.test"],
            "Subject: np\r\n\r\nx"
        )
        .await
        .starts_with("250")
    );
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].rcpts.len(), 2);
}

#[tokio::test]
async fn two_hundred_concurrent_sessions_all_accepted_and_relayed() {
    const SESSIONS: usize = 200;
    let sink = Sink::start(SinkOptions::default()).await;
    // All from one address: above the default per-client cap of 20.
    let s = TestServer::start(&accept(&format!(
        "[limits]\nconnections_per_ip = {SESSIONS}\n{}",
        sink.config_route("*", "none")
    )))
    .await;
    let addr = s.addr();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SESSIONS {
        tasks.spawn(async move {
            let mut c = Client::connect(addr).await;
            c.cmd("EHLO load.test", "250").await;
            let reply = c
                .send_mail(
                    "load@load.test",
                    &["u@example.test"],
                    &format!("Subject: load {i}\r\n\r\n{}", "x".repeat(1000)),
                )
                .await;
            assert!(reply.starts_with("250"), "{reply}");
            c.cmd("QUIT", "221").await;
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let got = sink.wait_for(SESSIONS).await;
    let mut subjects: Vec<usize> = got
        .iter()
        .map(|m| {
            m.text()
                .split("Subject: load ")
                .nth(1)
                .unwrap()
                .split("\r\n")
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    subjects.sort();
    assert_eq!(subjects, (0..SESSIONS).collect::<Vec<_>>());
    common::eventually("spool cleanup", || s.spool_ids().is_empty()).await;
}

#[tokio::test]
async fn lmtp_route_gets_one_outcome_per_recipient() {
    let sink = Sink::start(SinkOptions {
        lmtp: true,
        ..Default::default()
    })
    .await;
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n[delivery]\nretry = [\"1h\"]\n{}",
        sink.lmtp_route("*")
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    assert!(
        c.send_mail(
            "s@c.test",
            &["a@example.test", "b@example.test"],
            "Subject: lmtp\r\n\r\nx"
        )
        .await
        .starts_with("250")
    );
    sink.wait_for(1).await;
    // "a" was delivered, "b" deferred by the LMTP server: the message stays queued for "b".
    common::eventually("b deferred", || s.server.metrics.deferrals() == 1).await;
    assert_eq!(s.server.metrics.deliveries_total.get(), 1);
    let ids = s.spool_ids();
    assert_eq!(ids.len(), 1);
    // The counters move during the attempt; the state is written just after it.
    common::eventually("the saved delivery state", || {
        let spool = s.spool();
        spool.list().first().is_some_and(|id| {
            let state = spool.load_envelope(id).unwrap().1;
            matches!(&state.recipients[0], RecipientStatus::Delivered(_))
                && matches!(&state.recipients[1], RecipientStatus::Deferred(r)
                    if r.to_string() == "452 4.2.2 mailbox full"
                        && r.remote.as_deref() == Some("127.0.0.1"))
        })
    })
    .await;
}

/// Sends `n` messages one after another, each delivered before the next is sent.
async fn one_by_one(s: &TestServer, sink: &Sink, n: usize, pause: std::time::Duration) {
    for i in 1..=n {
        s.send_one(&["u@example.test"], &format!("m{i}")).await;
        sink.wait_for(i).await;
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test]
async fn connections_to_a_hop_are_reused_up_to_the_limit() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&accept(&format!(
        "reuse_limit = 3\n{}",
        sink.config_route("*", "none")
    )))
    .await;
    one_by_one(&s, &sink, 5, std::time::Duration::ZERO).await;
    let got = sink.wait_for(5).await;
    let on: Vec<(usize, usize)> = got.iter().map(|m| (m.connection, m.resets)).collect();
    // Three messages on the first connection (RSET before the second and third), then a
    // new one.
    assert_eq!(on, [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_reuse_idle() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&accept(&format!(
        "reuse_idle = \"200ms\"\n{}",
        sink.config_route("*", "none")
    )))
    .await;
    one_by_one(&s, &sink, 2, std::time::Duration::from_millis(700)).await;
    let connections: Vec<usize> = sink
        .wait_for(2)
        .await
        .iter()
        .map(|m| m.connection)
        .collect();
    assert_eq!(connections, [1, 2]);
}

#[tokio::test]
async fn a_hop_that_hung_up_on_an_idle_connection_gets_a_new_one() {
    // The hop closes each connection after its message, without a word: the next message
    // finds the kept connection dead at RSET and goes out on a new one, not deferred.
    let sink = Sink::start(SinkOptions {
        hang_up_after_message: true,
        ..Default::default()
    })
    .await;
    let s = TestServer::start(&accept(&sink.config_route("*", "none"))).await;
    one_by_one(&s, &sink, 3, std::time::Duration::from_millis(50)).await;
    let connections: Vec<usize> = sink
        .wait_for(3)
        .await
        .iter()
        .map(|m| m.connection)
        .collect();
    assert_eq!(connections, [1, 2, 3]);
    assert_eq!(s.deferrals(), 0);
}

/// A server relaying everything to a sink that lacks `what` (8BITMIME or SMTPUTF8).
async fn to_a_hop_without(what: &str) -> (Sink, TestServer) {
    let sink = Sink::start(SinkOptions {
        no_8bitmime: what == "8BITMIME",
        no_smtputf8: what == "SMTPUTF8",
        ..Default::default()
    })
    .await;
    let s = TestServer::start(&accept(&sink.config_route("*", "none"))).await;
    (sink, s)
}

async fn send_raw(s: &TestServer, mail: &str, rcpt: &str, body: &[u8]) {
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd(mail, "250").await;
    c.cmd(rcpt, "250").await;
    c.cmd("DATA", "354").await;
    c.send(body).await;
    c.send(b"\r\n.\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250"), "{reply}");
}

/// The delivery status report the sink got for the sender.
async fn report_at(sink: &Sink) -> String {
    common::eventually("a report", || !sink.reports().is_empty()).await;
    sink.reports()[0].text()
}

#[tokio::test]
async fn eight_bit_mail_is_converted_for_a_hop_without_8bitmime() {
    let (sink, s) = to_a_hop_without("8BITMIME").await;
    send_raw(
        &s,
        "MAIL FROM:<s@c.test> BODY=8BITMIME",
        "RCPT TO:<u@example.test>",
        "Subject: Grusse\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln"
            .as_bytes(),
    )
    .await;
    let got = &sink.wait_for(1).await[0];
    assert!(!got.mail.contains("BODY="), "{}", got.mail);
    assert!(got.data.iter().all(|b| b.is_ascii()), "{}", got.text());
    let text = got.text();
    assert!(
        text.contains(
            "Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus K=C3=B6ln"
        ),
        "{text}"
    );
    assert!(!text.contains("Content-Transfer-Encoding: 8bit"), "{text}");
}

#[tokio::test]
async fn eight_bit_headers_to_a_hop_without_8bitmime_bounce() {
    let (sink, s) = to_a_hop_without("8BITMIME").await;
    // RET=HDRS: the report returns the header as text/rfc822-headers, which can itself be
    // converted for this hop (an 8-bit message/rfc822 could not).
    send_raw(
        &s,
        "MAIL FROM:<s@c.test> BODY=8BITMIME RET=HDRS",
        "RCPT TO:<u@example.test>",
        "Subject: Grüße\r\n\r\nbody".as_bytes(),
    )
    .await;
    let report = report_at(&sink).await;
    assert!(report.contains("Status: 5.6.3"), "{report}");
    assert!(report.contains("does not support 8BITMIME"), "{report}");
    // Only the report reached the sink.
    assert_eq!(sink.count(), 1);
}

#[tokio::test]
async fn smtputf8_mail_to_a_hop_without_smtputf8_bounces() {
    let (sink, s) = to_a_hop_without("SMTPUTF8").await;
    send_raw(
        &s,
        "MAIL FROM:<s@c.test> SMTPUTF8",
        "RCPT TO:<jörg@example.test>",
        "Subject: x\r\n\r\nbody".as_bytes(),
    )
    .await;
    let report = report_at(&sink).await;
    assert!(report.contains("Status: 5.6.7"), "{report}");
    assert!(report.contains("does not support SMTPUTF8"), "{report}");
    assert_eq!(sink.count(), 1);
}

#[tokio::test]
async fn bdat_to_a_hop_that_offers_chunking() {
    let sink = Sink::start(SinkOptions {
        chunking: true,
        ..Default::default()
    })
    .await;
    let s = TestServer::start(&accept(&sink.config_route("*", "none"))).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let body = "Subject: chunks\r\n\r\n.leading dot\r\n..two\r\nend";
    let reply = c.send_mail("s@c.test", &["u@example.test"], body).await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = &sink.wait_for(1).await[0];
    assert!(got.chunked, "sent with DATA");
    // The content as spooled (our DATA reader took one dot off each line's start), sent
    // as it is: BDAT carries no dot-stuffing, so the sink's raw chunk has ".two", not "..two".
    let text = got.text();
    assert!(
        text.ends_with("Subject: chunks\r\n\r\nleading dot\r\n.two\r\nend\r\n"),
        "{text:?}"
    );
}
