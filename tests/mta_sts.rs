//! MTA-STS (RFC 8461) for MX delivery, against a DNS server and an HTTPS policy server
//! started by the test, with a CA made in the test as the route's trust anchors: an
//! `enforce` policy delivers only over TLS validated for an MX host it names, defers a
//! certificate for another name and an MX host it does not name (4.7.5); `testing` delivers
//! and counts what would fail; a policy is fetched once and kept.

mod common;
use common::TestServer;
use common::ca::TestCa;
use common::dns::Zone;
use common::sink::{Sink, SinkOptions};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTPS server that answers `GET /.well-known/mta-sts.txt` with the policy of the
/// domain its Host field names (`mta-sts.DOMAIN`), 404 otherwise; counts the requests.
struct PolicyServer {
    port: u16,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PolicyServer {
    async fn start(tls: Arc<rustls::ServerConfig>, policies: HashMap<String, String>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fetches = Arc::new(AtomicUsize::new(0));
        let (count, policies) = (fetches.clone(), Arc::new(policies));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (tls, count, policies) = (tls.clone(), count.clone(), policies.clone());
                tokio::spawn(async move {
                    let Ok(mut s) = tokio_rustls::TlsAcceptor::from(tls).accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                        if s.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let domain = head
                        .lines()
                        .find_map(|l| l.strip_prefix("host: "))
                        .and_then(|h| h.split(':').next())
                        .and_then(|h| h.strip_prefix("mta-sts."))
                        .unwrap_or("");
                    let path_ok = head.starts_with("get /.well-known/mta-sts.txt ");
                    let answer = match policies.get(domain).filter(|_| path_ok) {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into(),
                    };
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        PolicyServer {
            port,
            fetches,
            task,
        }
    }
}

fn policy(mode: &str, mx: &[&str]) -> String {
    let mx: String = mx.iter().map(|m| format!("mx: {m}\r\n")).collect();
    format!("version: STSv1\r\nmode: {mode}\r\n{mx}max_age: 86400\r\n")
}

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
    // enforce (twice), testing and nopolicy get through, each over TLS.
    let got = sink.wait_for(4).await;
    for m in &got {
        assert!(m.tls, "{}", m.text());
    }
    let subjects: Vec<String> = got.iter().map(|m| m.text()).collect();
    for d in ["enforce", "testing", "nopolicy"] {
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
    let broken = ["garbled.test", "missing.test", "untrusted.test"];
    let names: Vec<String> = broken.iter().map(|d| format!("mta-sts.{d}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let policies = HashMap::from([("garbled.test".into(), "<html>hello</html>".into())]);
    // untrusted.test's policy server shows a certificate from a CA nobody trusts.
    let elsewhere = tempfile::tempdir().unwrap();
    let stranger = TestCa::new(elsewhere.path());
    let web = PolicyServer::start(ca.server(&names[..2]), policies.clone()).await;
    let rogue = PolicyServer::start(stranger.server(&names[2..]), policies).await;
    assert_ne!(web.port, rogue.port);
    let here = "127.0.0.1".parse().unwrap();
    let mut zone = Zone::default().a("mx.sts.test.", here);
    for d in broken {
        zone = zone
            .mx(&format!("{d}."), 10, "mx.sts.test.")
            .a(&format!("mta-sts.{d}."), here)
            .txt(&format!("_mta-sts.{d}."), "v=STSv1; id=1;");
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
    s.send_one(&["u@garbled.test"], "garbled").await;
    s.send_one(&["u@missing.test"], "missing").await;
    let r = TestServer::start(&config(rogue.port)).await;
    r.send_one(&["u@untrusted.test"], "untrusted").await;
    // RFC 8461 5.1: without a valid policy, delivery goes on as if there were none.
    sink.wait_for(3).await;
    assert_eq!(
        s.metric("wasmtp_mta_sts_total{mode=\"enforce\",result=\"tls_failed\"}"),
        0.0
    );
    // The rogue server's TLS handshake failed, so it never read a request.
    assert_eq!(rogue.fetches.load(Ordering::SeqCst), 0);
    assert_eq!(web.fetches.load(Ordering::SeqCst), 2);
}
