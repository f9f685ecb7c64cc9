//! `[[listen]] proxy_protocol` behind a real HAProxy (Debian's package) started by the test,
//! with `send-proxy` (v1) and `send-proxy-v2`: the clients' own addresses (several on
//! 127.0.0.x) count for the per-IP limit, are checked by SPF and written in `Received:`, over
//! implicit TLS too. A peer outside `proxy_from`, and a missing, malformed or late header:
//! the connection is closed without a word.

mod common;
use base64::Engine;
use common::dns::Zone;
use common::haproxy::HaProxy;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_balancer_passes_on_each_clients_address() {
    let dns = Zone::default()
        .txt("sender.test.", "v=spf1 ip4:127.0.0.2 -all")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\n\
         [accept]\ndomains = [\"example.test\"]\n[limits]\nconnections_per_ip = 1\n\
         [dns]\nnameservers = [\"{}\"]\n[authentication]\nverify = true\ntimeout = \"3s\"\n{}",
        dns.addr,
        sink.config_route("*", "none"),
    ))
    .await;
    let hp = HaProxy::start(&[(s.addr(), "send-proxy"), (s.addr(), "send-proxy-v2")]).await;
    for (n, &front) in hp.frontends.iter().enumerate() {
        // One session each: a second from 127.0.0.2 is over its limit, whatever the
        // balancer's own address; one from 127.0.0.3 is not.
        let mut listed = Client::connect_from(front, ip("127.0.0.2")).await;
        let mut again = Client::connect_raw_from(front, ip("127.0.0.2")).await;
        assert!(again.reply().await.starts_with("421 4.7.0"), "frontend {n}");
        let mut other = Client::connect_from(front, ip("127.0.0.3")).await;
        for c in [&mut listed, &mut other] {
            c.cmd("EHLO client.sender.test", "250").await;
            let reply = c
                .send_mail("a@sender.test", &["u@example.test"], "Subject: hi\r\n\r\nx")
                .await;
            assert!(reply.starts_with("250"), "{reply}");
            c.cmd("QUIT", "221").await;
        }
        let got = sink.wait_for(2 * (n + 1)).await;
        let texts: Vec<String> = got[2 * n..].iter().map(|m| m.text()).collect();
        // The SPF record lists 127.0.0.2 only.
        let from = |ip: &str| {
            texts
                .iter()
                .find(|t| t.contains(&format!("[{ip}]")))
                .unwrap_or_else(|| panic!("no message from {ip}: {texts:?}"))
                .clone()
        };
        assert!(
            from("127.0.0.2").contains("spf=pass"),
            "{}",
            from("127.0.0.2")
        );
        assert!(
            from("127.0.0.3").contains("spf=fail"),
            "{}",
            from("127.0.0.3")
        );
        assert!(
            !texts.iter().any(|t| t.contains("[127.0.0.1]")),
            "{texts:?}"
        );
    }
}

#[tokio::test]
async fn implicit_tls_behind_the_balancer() {
    let dir = tempfile::tempdir().unwrap();
    let tls = common::tls_section(dir.path());
    let hash = wasmtp::session::hash_password("secret").unwrap();
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\nmode = \"submissions\"\nproxy_protocol = true\n\
         {tls}\n[accept]\ndomains = [\"example.test\"]\n\
         [[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n{}",
        sink.config_route("*", "none"),
    ))
    .await;
    let hp = HaProxy::start(&[(s.addr(), "send-proxy-v2")]).await;
    let mut c = Client::connect_tls_from(hp.frontends[0], ip("127.0.0.4")).await;
    c.cmd("EHLO c", "250").await;
    let plain = base64::engine::general_purpose::STANDARD.encode("\0alice\0secret");
    c.cmd(&format!("AUTH PLAIN {plain}"), "235").await;
    let reply = c
        .send_mail(
            "alice@example.test",
            &["x@elsewhere.test"],
            "Subject: hi\r\n\r\nx",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let text = sink.wait_for(1).await[0].text();
    assert!(text.contains("[127.0.0.4]"), "{text}");
}

/// A listener that takes PROXY headers from `from`.
async fn proxied(from: &str) -> TestServer {
    TestServer::start(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\nproxy_protocol = true\nproxy_from = [{from}]\n"
    ))
    .await
}

#[tokio::test]
async fn untrusted_peers_and_bad_headers_are_closed_without_a_word() {
    // A header from a peer that is not the balancer is not believed: closed unread.
    let s = proxied("\"127.0.0.9/32\"").await;
    let mut c = Client::connect_raw(s.addr()).await;
    c.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 4000 25\r\n").await;
    assert!(c.closed().await, "an untrusted peer was answered");

    let s = proxied("\"127.0.0.0/8\"").await;
    for bad in [
        &b"EHLO client.example\r\n"[..],
        b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 25\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x99\x11\0\x0c",
    ] {
        let mut c = Client::connect_raw(s.addr()).await;
        c.send(bad).await;
        assert!(c.closed().await, "{bad:?} was answered");
    }
    // A header that never ends is refused at its longest.
    let mut c = Client::connect_raw(s.addr()).await;
    c.send(&[b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat())
        .await;
    assert!(c.closed().await, "an endless v1 line was answered");

    // A good header, in two pieces, then the dialogue as the client's.
    let mut c = Client::connect_raw(s.addr()).await;
    c.send(b"PROXY TCP4 192.0.2.1 127.0.0.1 4000").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b" 25\r\n").await;
    assert!(c.reply().await.starts_with("220 "));
    c.cmd("EHLO c", "250").await;
    // A v2 LOCAL header (a health check): the balancer's own connection.
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let mut c = Client::connect_raw(s.addr()).await;
    c.send(local).await;
    assert!(c.reply().await.starts_with("220 "));

    // No header at all: closed after the PROXY timeout, the greeting never sent.
    let started = Instant::now();
    let mut raw = tokio::net::TcpStream::connect(s.addr()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut raw, &mut buf),
    )
    .await
    .expect("closed within the timeout")
    .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", &buf[..n]);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let _ = raw.shutdown().await;
}
