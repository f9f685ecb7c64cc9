//! Delivery by MX lookup against a DNS server started by the test: preference order with
//! fallback, implicit MX, null MX (RFC 7505) and a domain that does not exist.

mod common;
use common::dns::TestDns;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};

/// A server that relays for 127.0.0.0/8 by MX, with the test's DNS and smtp_port.
async fn server(dns: &TestDns, port: u16) -> TestServer {
    server_with(dns, port, "", "").await
}

/// The same, with `top` (e.g. a `[[listen]]`) and more `[delivery]` keys.
async fn server_with(dns: &TestDns, port: u16, top: &str, delivery: &str) -> TestServer {
    TestServer::start(&format!(
        "{top}[relay]\nnetworks = [\"127.0.0.0/8\"]\n[dns]\nnameservers = [\"{}\"]\n\
         [delivery]\nsmtp_port = {port}\nretry = [\"1h\"]\n{delivery}\
         [[route]]\ndomain = \"*\"\nto = \"mx\"\ntls = \"none\"\n",
        dns.addr
    ))
    .await
}

#[tokio::test]
async fn mx_in_preference_order_with_fallback_and_implicit_mx() {
    let sink = Sink::start(SinkOptions::default()).await;
    let port = sink.addr.port();
    // mx1 (preference 10) is 127.0.0.2, where nothing listens on the port; mx2 (20) is the sink.
    let dns = TestDns::start_with_mx(
        &[
            ("mx1.remote.test.", "127.0.0.2".parse().unwrap()),
            ("mx2.remote.test.", "127.0.0.1".parse().unwrap()),
            ("plain.test.", "127.0.0.1".parse().unwrap()),
        ],
        &[
            ("remote.test.", 20, "mx2.remote.test."),
            ("remote.test.", 10, "mx1.remote.test."),
        ],
    )
    .await;
    let s = server(&dns, port).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let reply = c
        .send_mail("a@b.test", &["u@remote.test"], "Subject: by mx\r\n\r\nx")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    // plain.test has no MX but an address: the implicit MX.
    let reply = c
        .send_mail("a@b.test", &["v@plain.test"], "Subject: implicit\r\n\r\nx")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(2).await;
    let texts: Vec<String> = got.iter().map(|m| m.text()).collect();
    assert!(
        texts.iter().any(|t| t.contains("Subject: by mx")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("Subject: implicit")),
        "{texts:?}"
    );
    common::eventually("spool cleanup", || s.spool_ids().is_empty()).await;
    assert_eq!(s.deliveries(), 2);
}

#[tokio::test]
async fn null_mx_and_missing_domains_fail_permanently() {
    let dns = TestDns::start_with_mx(&[], &[("nomail.test.", 0, ".")]).await;
    let s = server(&dns, common::free_port()).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    // From the null sender, so that no delivery report adds failures of its own.
    for rcpt in ["u@nomail.test", "u@nowhere.test"] {
        let reply = c.send_mail("", &[rcpt], "Subject: x\r\n\r\nx").await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    common::eventually("two permanent failures", || {
        s.server.metrics.failures_total.get() == 2
    })
    .await;
    common::eventually("spool cleanup", || s.spool_ids().is_empty()).await;
    assert_eq!(s.deferrals(), 0);
}

#[tokio::test]
async fn unreachable_mx_defers() {
    let dns = TestDns::start_with_mx(
        &[("mx.down.test.", "127.0.0.2".parse().unwrap())],
        &[("down.test.", 10, "mx.down.test.")],
    )
    .await;
    let s = server(&dns, common::free_port()).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    assert!(
        c.send_mail("a@b.test", &["u@down.test"], "Subject: x\r\n\r\nx")
            .await
            .starts_with("250")
    );
    common::eventually("a deferral", || s.deferrals() > 0).await;
    assert_eq!(s.spool_ids().len(), 1);
}

#[tokio::test]
async fn lowest_preference_wins_when_both_are_up() {
    let low = Sink::start(SinkOptions::default()).await;
    let port = low.addr.port();
    // The same port on another loopback address, so both MX hosts listen on smtp_port.
    let high = Sink::start_on(&format!("127.0.0.2:{port}"), SinkOptions::default()).await;
    let dns = TestDns::start_with_mx(
        &[
            ("a.two.test.", "127.0.0.1".parse().unwrap()),
            ("b.two.test.", "127.0.0.2".parse().unwrap()),
        ],
        &[
            ("two.test.", 20, "a.two.test."),
            ("two.test.", 5, "b.two.test."),
        ],
    )
    .await;
    let s = server(&dns, port).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let reply = c
        .send_mail("a@b.test", &["u@two.test"], "Subject: pref\r\n\r\nx")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    high.wait_for(1).await;
    assert_eq!(
        low.count(),
        0,
        "preference 20 got mail while preference 5 was up"
    );
}

#[tokio::test]
async fn mx_addresses_tried_per_attempt_are_capped() {
    // Three MX hosts, each busy (421 on connect), counting the attempts.
    let port = common::free_port();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut hosts = Vec::new();
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let listener = tokio::net::TcpListener::bind(format!("{ip}:{port}"))
            .await
            .unwrap();
        let counted = attempts.clone();
        hosts.push(tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tokio::io::AsyncWriteExt::write_all(&mut tcp, b"421 4.3.2 busy\r\n").await;
            }
        }));
    }
    let dns = TestDns::start_with_mx(
        &[
            ("a.busy.test.", "127.0.0.2".parse().unwrap()),
            ("b.busy.test.", "127.0.0.3".parse().unwrap()),
            ("c.busy.test.", "127.0.0.4".parse().unwrap()),
        ],
        &[
            ("busy.test.", 10, "a.busy.test."),
            ("busy.test.", 20, "b.busy.test."),
            ("busy.test.", 30, "c.busy.test."),
        ],
    )
    .await;
    let s = server_with(&dns, port, "", "mx_address_limit = 2\n").await;
    s.send_one(&["u@busy.test"], "capped").await;
    common::eventually("a deferral", || s.deferrals() > 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_backup_mx_that_is_ourselves_defers_instead_of_bouncing() {
    // We are the second MX of the domain; the first (127.0.0.2) is down.
    let port = common::free_port();
    let dns = TestDns::start_with_mx(
        &[
            ("primary.far.test.", "127.0.0.2".parse().unwrap()),
            ("backup.far.test.", "127.0.0.1".parse().unwrap()),
        ],
        &[
            ("far.test.", 10, "primary.far.test."),
            ("far.test.", 20, "backup.far.test."),
        ],
    )
    .await;
    let listen = format!("[[listen]]\naddress = \"127.0.0.1:{port}\"\n");
    let s = server_with(&dns, port, &listen, "").await;
    s.send_one(&["u@far.test"], "wait").await;
    common::eventually("a deferral", || s.deferrals() > 0).await;
    let spool = wasmtp::spool::Spool::attach(&s.dir.path().join("spool")).unwrap();
    let list = wasmtp::queue::list(&spool, false).unwrap();
    assert!(
        list.contains("deferred") && list.contains("preferred"),
        "{list}"
    );
}

#[tokio::test]
async fn equal_preferences_share_the_mail() {
    let a = Sink::start(SinkOptions::default()).await;
    let port = a.addr.port();
    let b = Sink::start_on(&format!("127.0.0.2:{port}"), SinkOptions::default()).await;
    let dns = TestDns::start_with_mx(
        &[
            ("a.eq.test.", "127.0.0.1".parse().unwrap()),
            ("b.eq.test.", "127.0.0.2".parse().unwrap()),
        ],
        &[
            ("eq.test.", 10, "a.eq.test."),
            ("eq.test.", 10, "b.eq.test."),
        ],
    )
    .await;
    // One message per connection, so that each message's order decides.
    let s = server_with(&dns, port, "", "reuse_limit = 1\n").await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    for i in 0..24 {
        let reply = c
            .send_mail(
                "a@b.test",
                &["u@eq.test"],
                &format!("Subject: {i}\r\n\r\nx"),
            )
            .await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    common::eventually("24 messages delivered", || a.count() + b.count() == 24).await;
    // Both get some (all 24 on one host: a chance of 2 in 2^24).
    assert!(
        a.count() > 0 && b.count() > 0,
        "{} and {}",
        a.count(),
        b.count()
    );
}

#[tokio::test]
async fn a_failing_mx_lookup_defers() {
    let dns = TestDns::start(&[]).await;
    let s = server(&dns, common::free_port()).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let reply = c
        .send_mail(
            "a@b.test",
            &["u@broken.servfail.test"],
            "Subject: x\r\n\r\nx",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    common::eventually("a deferral", || s.deferrals() >= 1).await;
    let (_, state) = s.spool().load_envelope(&s.spool().list()[0]).unwrap();
    assert!(
        format!("{:?}", state.recipients[0]).contains("MX lookup for broken.servfail.test failed"),
        "{state:?}"
    );
}

#[tokio::test]
async fn domains_on_one_mx_host_share_its_destination_concurrency() {
    // A slow next hop: each message's data is answered after 300 ms.
    let sink = Sink::start(SinkOptions {
        hold: std::time::Duration::from_millis(300),
        ..Default::default()
    })
    .await;
    let domains: Vec<String> = (0..8).map(|i| format!("hosted{i}.test")).collect();
    // Names are not case-sensitive (RFC 4343): half of the domains spell the host otherwise.
    let mx: Vec<(String, u16, &str)> = domains
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let host = ["mx.shared.test.", "MX.Shared.test."][i % 2];
            (format!("{d}."), 10, host)
        })
        .collect();
    let mx: Vec<(&str, u16, &str)> = mx.iter().map(|(d, p, e)| (d.as_str(), *p, *e)).collect();
    let dns =
        TestDns::start_with_mx(&[("mx.shared.test.", "127.0.0.1".parse().unwrap())], &mx).await;
    let s = server_with(&dns, sink.addr.port(), "", "destination_concurrency = 2\n").await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    for d in &domains {
        let reply = c
            .send_mail("a@b.test", &[&format!("u@{d}")], "Subject: shared\r\n\r\nx")
            .await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    sink.wait_for(8).await;
    // Eight recipient domains, one MX host: two transactions at a time, not eight.
    assert_eq!(sink.peak_transactions(), 2);
}
