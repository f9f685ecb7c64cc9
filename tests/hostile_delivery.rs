//! Hostile or broken next hops and envelopes on the delivery side: a tarpit after STARTTLS,
//! one destination that must not take every slot, `tls = "required"` that verifies, routes
//! and messages that loop, and DSN parameters that try to inject header fields.

mod common;
use common::ca::TestCa;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `wasmtp queue list` of the server's spool.
fn queue_list(s: &TestServer) -> String {
    let spool = wasmtp::spool::Spool::attach(&s.dir.path().join("spool")).unwrap();
    wasmtp::queue::list(&spool, false).unwrap()
}

/// A next hop that greets, offers STARTTLS, says 220 to it, then never says anything again.
async fn tarpit() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = tcp.write_all(b"220 tarpit.test ESMTP\r\n").await;
                let mut buf = [0u8; 1024];
                let mut said = Vec::new();
                loop {
                    let n = match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    said.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&said).to_uppercase();
                    if text.contains("STARTTLS\r\n") {
                        let _ = tcp.write_all(b"220 go ahead\r\n").await;
                        // Silence, holding the connection, as long as the peer stays.
                        let _ = tcp.read(&mut buf).await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    if text.contains("EHLO") {
                        said.clear();
                        let _ = tcp
                            .write_all(b"250-tarpit.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
                            .await;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_tarpit_after_starttls_times_out_and_cannot_take_every_slot() {
    let (pit, _task) = tarpit().await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\", \"pit.test\"]\n\
         [delivery]\nretry = [\"1h\"]\nconcurrency = 2\ndestination_concurrency = 1\ntls_timeout = \"1s\"\n\
         [[route]]\ndomain = \"pit.test\"\nto = \"smtp:{pit}\"\ntls = \"opportunistic\"\n{}",
        sink.config_route("*", "none")
    ))
    .await;
    for i in 0..4 {
        s.send_one(&["u@pit.test"], &format!("pit {i}")).await;
    }
    s.send_one(&["u@example.test"], "through").await;
    // One slot is the tarpit's at most; the other destination gets through at once.
    let got = tokio::time::timeout(Duration::from_secs(5), sink.wait_for(1))
        .await
        .expect("a slow destination blocked another one");
    assert!(got[0].text().contains("Subject: through"));
    // Each tarpit attempt ends at tls_timeout and is deferred with its reason.
    common::eventually("four deferrals", || s.deferrals() >= 4).await;
    let list = queue_list(&s);
    assert!(list.contains("deferred"), "{list}");
    assert!(list.contains("TLS handshake"), "{list}");
    assert!(list.contains("timed out"), "{list}");
}

#[tokio::test]
async fn required_tls_verifies_the_chain_and_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let tls = ca.server(&["localhost"]);
    let ca = ca.pem;
    let sink = Sink::start(SinkOptions {
        tls: Some(tls),
        ..Default::default()
    })
    .await;
    let port = sink.addr.port();
    let route = |domain: &str, host: &str, ca: Option<&std::path::Path>| {
        let ca = ca
            .map(|p| format!("ca = \"{}\"\n", p.display()))
            .unwrap_or_default();
        format!(
            "[[route]]\ndomain = \"{domain}\"\nto = \"smtp:{host}:{port}\"\ntls = \"required\"\n{ca}"
        )
    };
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"anchored.test\", \"system.test\", \"misnamed.test\"]\n\
         [delivery]\nretry = [\"1h\"]\n{}{}{}",
        route("anchored.test", "localhost", Some(&ca)),
        // Not signed by any of Mozilla's roots.
        route("system.test", "localhost", None),
        // The right anchor, the wrong name.
        route("misnamed.test", "127.0.0.1", Some(&ca)),
    ))
    .await;
    s.send_one(&["u@system.test"], "no anchor").await;
    s.send_one(&["u@misnamed.test"], "wrong name").await;
    s.send_one(&["u@anchored.test"], "verified").await;
    let got = sink.wait_for(1).await;
    assert!(got[0].tls);
    assert!(got[0].text().contains("Subject: verified"));
    common::eventually("two deferrals", || s.deferrals() >= 2).await;
    // The delivered one leaves the queue just after the sink has it.
    common::eventually("the delivered one gone", || {
        queue_list(&s).lines().count() == 2
    })
    .await;
    let list = queue_list(&s);
    assert_eq!(list.lines().count(), 2, "{list}");
    for line in list.lines() {
        assert!(
            line.contains("deferred") && line.contains("4.7.5"),
            "{line}"
        );
    }
    assert!(list.contains("UnknownIssuer"), "{list}");
    assert!(list.contains("not valid for name"), "{list}");
    assert_eq!(sink.count(), 1, "mail went to an unverified hop");
}

#[tokio::test]
async fn a_route_back_to_ourselves_is_a_loop_and_bounces() {
    let port = common::free_port();
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "[[listen]]\naddress = \"127.0.0.1:{port}\"\n[accept]\ndomains = [\"loop.test\"]\n\
         [delivery]\nretry = [\"1h\"]\n\
         [[route]]\ndomain = \"loop.test\"\nto = \"smtp:127.0.0.1:{port}\"\ntls = \"none\"\n{}",
        sink.config_route("*", "none")
    ))
    .await;
    s.send_one(&["u@loop.test"], "looping").await;
    // The failure report reaches the sender's domain (routed to the sink).
    let got = sink.wait_for(1).await;
    let report = got[0].text();
    assert!(report.contains("Status: 5.4.6"), "{report}");
    assert!(report.contains("loops back to myself"), "{report}");
    // Our own verdict: no remote server answered, so none is named (RFC 3464 2.3.5-2.3.6).
    assert!(!report.contains("Diagnostic-Code"), "{report}");
    assert!(!report.contains("Remote-MTA"), "{report}");
    common::eventually("spool cleanup", || s.spool_ids().is_empty()).await;
    assert_eq!(
        s.server.metrics.transactions("accepted", "2xx"),
        1,
        "the message came back in"
    );
}

#[tokio::test]
async fn too_many_received_fields_are_refused_at_data() {
    let s = TestServer::start("[accept]\ndomains = [\"example.test\"]\n[limits]\nhop_limit = 5\n")
        .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let hops = "Received: from a by b; Mon, 1 Jan 2026 00:00:00 +0000\r\n";
    for (count, expect) in [(6, "554 5.4.6"), (5, "250")] {
        let body = format!("{}Subject: x\r\n\r\nx", hops.repeat(count));
        let reply = c.send_mail("a@c.test", &["u@example.test"], &body).await;
        assert!(reply.starts_with(expect), "{count} hops: {reply}");
    }
}

#[tokio::test]
async fn dsn_parameters_cannot_inject_header_fields() {
    let s = TestServer::start("[accept]\ndomains = [\"example.test\"]\n").await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    // RFC 3461 4.4: ENVID must decode to printable US-ASCII.
    c.cmd(
        "MAIL FROM:<a@c.test> ENVID=x+0D+0AX-Injected:+20yes",
        "501 5.5.4",
    )
    .await;
    c.cmd("MAIL FROM:<a@c.test> ENVID=ok+2Bfine", "250").await;
    // RFC 3461 4.2: so must ORCPT's address.
    c.cmd(
        "RCPT TO:<u@example.test> ORCPT=rfc822;y+0D+0AX-Evil:+201",
        "501 5.5.4",
    )
    .await;
    c.cmd(
        "RCPT TO:<u@example.test> ORCPT=rfc822;u+40example.test",
        "250",
    )
    .await;
}

#[tokio::test]
async fn recipients_at_one_hop_keep_their_own_routes_tls() {
    let dir = tempfile::tempdir().unwrap();
    let tls = TestCa::new(dir.path()).server(&["localhost"]);
    let sink = Sink::start(SinkOptions {
        tls: Some(tls),
        ..Default::default()
    })
    .await;
    let port = sink.addr.port();
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"clear.test\", \"secure.test\"]\n[delivery]\nretry = [\"1h\"]\n\
         [[route]]\ndomain = \"clear.test\"\nto = \"smtp:localhost:{port}\"\ntls = \"none\"\n\
         [[route]]\ndomain = \"secure.test\"\nto = \"smtp:localhost:{port}\"\ntls = \"required\"\n"
    ))
    .await;
    // One message, the clear route's recipient first.
    s.send_one(&["a@clear.test", "b@secure.test"], "two routes")
        .await;
    let got = sink.wait_for(1).await;
    assert!(!got[0].tls);
    assert_eq!(got[0].rcpts.len(), 1, "{:?}", got[0].rcpts);
    assert!(got[0].rcpts[0].contains("a@clear.test"));
    // The required route's recipient waits for a verifiable certificate.
    common::eventually("a deferral", || s.deferrals() > 0).await;
    assert_eq!(sink.count(), 1);
}
