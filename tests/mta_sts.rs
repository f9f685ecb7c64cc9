//! MTA-STS (RFC 8461) for MX delivery, against a DNS server and an HTTPS policy server
//! started by the test, with a CA made in the test as the route's trust anchors: an
//! `enforce` policy delivers only over TLS validated for an MX host it names, defers a
//! certificate for another name and an MX host it does not name (4.7.5); `testing` delivers
//! and counts what would fail; `TLS-Required: No` (RFC 8689 5) sets a policy aside; a policy
//! is fetched once and kept.

mod common;
use common::TestServer;
use common::ca::TestCa;
use common::dns::Zone;
use common::policy::{PolicyServer, ok, policy};
use common::sink::{Sink, SinkOptions};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

fn queue_list(s: &TestServer) -> String {
    wasmtp::queue::list(&s.spool(), false).unwrap()
}

#[tokio::test]
async fn enforce_delivers_only_over_validated_tls_to_the_hosts_a_policy_names() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    // The MX host's certificate is for mx.sts.test; wrong.sts.test is the same host under
    // a name its certificate does not show.
    let sink = Sink::start(SinkOptions {
        tls: Some(ca.server(&["mx.sts.test"])),
        ..Default::default()
    })
    .await;
    let policed = [
        "enforce.test",
        "wrongname.test",
        "unlisted.test",
        "testing.test",
    ];
    let names: Vec<String> = policed.iter().map(|d| format!("mta-sts.{d}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let policies = HashMap::from([
        ("enforce.test".into(), policy("enforce", &["mx.sts.test"])),
        ("wrongname.test".into(), policy("enforce", &["*.sts.test"])),
        (
            "unlisted.test".into(),
            policy("enforce", &["mx.elsewhere.test"]),
        ),
        ("testing.test".into(), policy("testing", &["*.sts.test"])),
    ]);
    let web = PolicyServer::start(ca.server(&names), policies).await;
    let here = "127.0.0.1".parse().unwrap();
    let mut zone = Zone::default()
        .a("mx.sts.test.", here)
        .a("wrong.sts.test.", here)
        .mx("enforce.test.", 10, "mx.sts.test.")
        .mx("wrongname.test.", 10, "wrong.sts.test.")
        .mx("unlisted.test.", 10, "mx.sts.test.")
        .mx("testing.test.", 10, "wrong.sts.test.")
        .mx("nopolicy.test.", 10, "mx.sts.test.");
    for d in policed {
        zone = zone
            .a(&format!("mta-sts.{d}."), here)
            .txt(&format!("_mta-sts.{d}."), "v=STSv1; id=20261204T000000;");
    }
    let dns = zone.start().await;
    let s = TestServer::start(&format!(
        "[relay]\nnetworks = [\"127.0.0.0/8\"]\n[dns]\nnameservers = [\"{}\"]\n\
         [delivery]\nsmtp_port = {}\nmta_sts_port = {}\nretry = [\"1h\"]\n\
         [[route]]\ndomain = \"*\"\nto = \"mx\"\ntls = \"opportunistic\"\nca = \"{}\"\n",
        dns.addr,
        sink.addr.port(),
        web.port,
        ca.pem.display()
    ))
    .await;
    for d in [
        "enforce",
        "wrongname",
        "unlisted",
        "testing",
        "nopolicy",
        "enforce",
    ] {
        s.send_one(&[&format!("u@{d}.test")], d).await;
    }
    // RFC 8689 5: `TLS-Required: No` sets the policy aside (the certificate's name is
    // wrong, and the mail goes anyway).
    let mut c = common::Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let body = "TLS-Required: No\r\nSubject: optional\r\n\r\nx";
    let reply = c.send_mail("a@b.test", &["v@wrongname.test"], body).await;
    assert!(reply.starts_with("250"), "{reply}");
    // enforce (twice), testing, nopolicy and the optional one get through, each over TLS.
    let got = sink.wait_for(5).await;
    for m in &got {
        assert!(m.tls, "{}", m.text());
    }
    let subjects: Vec<String> = got.iter().map(|m| m.text()).collect();
    for d in ["enforce", "testing", "nopolicy", "optional"] {
        let subject = format!("Subject: {d}\r\n");
        assert!(
            subjects.iter().any(|t| t.contains(&subject)),
            "{d}: {subjects:?}"
        );
    }
    // The other two are deferred with 4.7.5 and why.
    common::eventually("two deferrals", || s.deferrals() >= 2).await;
    let list = queue_list(&s);
    assert!(list.contains("u@wrongname.test"), "{list}");
    assert!(!list.contains("v@wrongname.test"), "{list}");
    assert!(list.contains("u@unlisted.test"), "{list}");
    assert!(
        list.contains("4.7.5 MTA-STS policy of wrongname.test"),
        "{list}"
    );
    assert!(
        list.contains("4.7.5 unlisted.test: no MX host named by its MTA-STS policy"),
        "{list}"
    );
    assert!(
        !list.contains("u@enforce.test") && !list.contains("u@testing.test"),
        "{list}"
    );
    let metric = |mode: &str, result: &str| {
        s.metric(&format!(
            "wasmtp_mta_sts_total{{mode=\"{mode}\",result=\"{result}\"}}"
        ))
    };
    assert_eq!(metric("enforce", "valid"), 2.0);
    assert_eq!(metric("enforce", "tls_failed"), 1.0);
    assert_eq!(metric("enforce", "mx_mismatch"), 1.0);
    assert_eq!(metric("testing", "tls_failed"), 1.0);
    // One fetch per policed domain: the second message to enforce.test used the cached
    // policy; nopolicy.test, without a record, was never asked.
    assert_eq!(web.fetches.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_policy_that_cannot_be_fetched_or_read_is_no_policy() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    // The MX host offers no TLS at all, so any policy in force would defer the mail.
    let sink = Sink::start(SinkOptions::default()).await;
    let broken = [
        "garbled",
        "missing",
        "redirected",
        "huge",
        "html",
        "untrusted",
    ];
    let names: Vec<String> = broken.iter().map(|d| format!("mta-sts.{d}.test")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let enforce = policy("enforce", &["mx.sts.test"]);
    // Each would be an enforced policy if it were taken: over 64 KiB, not text/plain, or
    // behind a redirect (RFC 8461 3.3: not followed).
    let padded = format!("{enforce}{}", "x-padding: yes\r\n".repeat(5000));
    let answers = HashMap::from([
        (
            "garbled.test".into(),
            ok("text/plain", "<html>hello</html>"),
        ),
        (
            "redirected.test".into(),
            format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: https://mta-sts.garbled.test/.well-known/mta-sts.txt\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{enforce}",
                enforce.len()
            ),
        ),
        ("huge.test".into(), ok("text/plain", &padded)),
        ("html.test".into(), ok("text/html", &enforce)),
        ("untrusted.test".into(), ok("text/plain", &enforce)),
    ]);
    // untrusted.test's policy server shows a certificate from a CA nobody trusts.
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger = TestCa::new(elsewhere.path());
    let web = PolicyServer::answering(ca.server(&names[..5]), answers.clone()).await;
    let rogue = PolicyServer::answering(stranger.server(&names[5..]), answers).await;
    let here = "127.0.0.1".parse().unwrap();
    let mut zone = Zone::default().a("mx.sts.test.", here);
    for d in broken {
        zone = zone
            .mx(&format!("{d}.test."), 10, "mx.sts.test.")
            .a(&format!("mta-sts.{d}.test."), here)
            .txt(&format!("_mta-sts.{d}.test."), "v=STSv1; id=1;");
    }
    let dns = zone.start().await;
    let config = |port: u16| {
        format!(
            "[relay]\nnetworks = [\"127.0.0.0/8\"]\n[dns]\nnameservers = [\"{}\"]\n\
             [delivery]\nsmtp_port = {}\nmta_sts_port = {port}\nretry = [\"1h\"]\n\
             [[route]]\ndomain = \"*\"\nto = \"mx\"\ntls = \"opportunistic\"\nca = \"{}\"\n",
            dns.addr,
            sink.addr.port(),
            ca.pem.display()
        )
    };
    let s = TestServer::start(&config(web.port)).await;
    for d in &broken[..5] {
        s.send_one(&[&format!("u@{d}.test")], d).await;
    }
    let r = TestServer::start(&config(rogue.port)).await;
    r.send_one(&["u@untrusted.test"], "untrusted").await;
    // RFC 8461 5.1: without a valid policy, delivery goes on as if there were none.
    sink.wait_for(6).await;
    assert_eq!(
        s.metric("wasmtp_mta_sts_total{mode=\"enforce\",result=\"tls_failed\"}"),
        0.0
    );
    // The rogue server's TLS handshake failed, so it never read a request; the redirect
    // was not followed (one request each, none to garbled.test's a second time).
    assert_eq!(rogue.fetches.load(Ordering::SeqCst), 0);
    assert_eq!(web.fetches.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_policy_server_that_drips_is_cut_off_at_the_fetch_deadline() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let sink = Sink::start(SinkOptions::default()).await;
    // Headers at once, then one octet of body every 100 ms, for as long as we listen.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let closed = Arc::new(AtomicBool::new(false));
    let tls = ca.server(&["mta-sts.drip.test"]);
    let seen = closed.clone();
    let _server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut s = tokio_rustls::TlsAcceptor::from(tls)
            .accept(tcp)
            .await
            .unwrap();
        let mut head = [0u8; 1024];
        let _ = s.read(&mut head).await;
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100000\r\n\r\n";
        let mut write = s.write_all(head.as_bytes()).await;
        while write.is_ok() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            write = async {
                s.write_all(b"x").await?;
                s.flush().await
            }
            .await;
        }
        seen.store(true, Ordering::SeqCst);
    });
    let here = "127.0.0.1".parse().unwrap();
    let dns = Zone::default()
        .a("mx.sts.test.", here)
        .a("mta-sts.drip.test.", here)
        .mx("drip.test.", 10, "mx.sts.test.")
        .txt("_mta-sts.drip.test.", "v=STSv1; id=1;")
        .start()
        .await;
    let s = TestServer::start(&format!(
        "[relay]\nnetworks = [\"127.0.0.0/8\"]\n[dns]\nnameservers = [\"{}\"]\n\
         [delivery]\nsmtp_port = {}\nmta_sts_port = {port}\nretry = [\"1h\"]\n\
         [[route]]\ndomain = \"*\"\nto = \"mx\"\ntls = \"opportunistic\"\nca = \"{}\"\n",
        dns.addr,
        sink.addr.port(),
        ca.pem.display()
    ))
    .await;
    s.send_one(&["u@drip.test"], "drip").await;
    // No policy within the fetch's 10 s: delivered as without one ...
    tokio::time::timeout(std::time::Duration::from_secs(20), sink.wait_for(1))
        .await
        .expect("the fetch was not cut off");
    // ... and the connection to the policy server is gone with it, not left running.
    common::eventually("the dripping connection closed", || {
        closed.load(Ordering::SeqCst)
    })
    .await;
}
