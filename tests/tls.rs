//! STARTTLS (RFC 3207), implicit TLS (RFC 8314) and AUTH (RFC 4954) with certificates made
//! by rcgen for each test.

mod common;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// mx, submission and submissions listeners, TLS, one user alice/secret, relay to a sink.
async fn server(sink: &Sink) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let tls = common::tls_section(dir.path());
    let hash = wasmtp::session::hash_password("secret").unwrap();
    // The certificate is loaded at start, so `dir` may go when this returns.
    TestServer::start(&format!(
        r#"
[[listen]]
address = "127.0.0.1:0"
mode = "mx"
[[listen]]
address = "127.0.0.1:0"
mode = "submission"
[[listen]]
address = "127.0.0.1:0"
mode = "submissions"
{tls}
[accept]
domains = ["example.test"]
[[user]]
name = "alice"
password_hash = "{hash}"
{}"#,
        sink.config_route("*", "none")
    ))
    .await
}

fn plain(user: &str, pass: &str) -> String {
    B64.encode(format!("\0{user}\0{pass}"))
}

#[tokio::test]
async fn starttls_resets_the_session_and_is_not_offered_twice() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = server(&sink).await;
    let mut c = Client::connect(s.server.listen_addrs[0]).await;
    let ehlo = c.cmd("EHLO c", "250").await;
    assert!(ehlo.contains("STARTTLS"));
    assert!(
        !ehlo.contains("AUTH"),
        "AUTH offered in the clear on mx: {ehlo}"
    );
    c.cmd("MAIL FROM:<a@b.c>", "250").await;
    c.cmd("STARTTLS", "503").await;
    c.cmd("RSET", "250").await;
    let mut c = c.starttls().await;
    // RFC 3207 4.2: the session starts over; EHLO is needed again.
    c.cmd("MAIL FROM:<a@b.c>", "503 5.5.1").await;
    let ehlo = c.cmd("EHLO c", "250").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    c.cmd("STARTTLS", "503 5.5.1").await;
    let reply = c
        .send_mail("a@b.c", &["u@example.test"], "Subject: tls\r\n\r\nsecret")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(1).await;
    assert!(
        got[0].text().contains("with ESMTPS id"),
        "{}",
        got[0].text()
    );
    assert!(
        got[0].text().contains("(using TLSv1.3 with cipher"),
        "{}",
        got[0].text()
    );
}

#[tokio::test]
async fn plaintext_injected_before_the_handshake_is_discarded() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = server(&sink).await;
    let mut tcp = tokio::net::TcpStream::connect(s.server.listen_addrs[0])
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"220 "));
    tcp.write_all(b"EHLO c\r\n").await.unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STARTTLS"));
    // The attack: commands sent in the same packet as STARTTLS (CVE-2011-0411 class).
    tcp.write_all(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<u@example.test>\r\n")
        .await
        .unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"220 2.0.0 Ready to start TLS\r\n");
    let connector = tokio_rustls::TlsConnector::from(wasmtp::tls::delivery_client_config());
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(b"EHLO c\r\nRCPT TO:<u@example.test>\r\n")
        .await
        .unwrap();
    let mut lines = tokio::io::BufReader::new(tls).lines();
    // First the whole EHLO reply...
    let first = lines.next_line().await.unwrap().unwrap();
    assert!(first.starts_with("250-mx.test"), "{first}");
    while !lines
        .next_line()
        .await
        .unwrap()
        .unwrap()
        .starts_with("250 ")
    {}
    // ...then RCPT is out of sequence: the injected MAIL was never executed.
    let rcpt = lines.next_line().await.unwrap().unwrap();
    assert!(rcpt.starts_with("503 5.5.1"), "{rcpt}");
}

#[tokio::test]
async fn submission_requires_tls_then_auth_and_may_relay() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = server(&sink).await;
    let mut c = Client::connect(s.server.listen_addrs[1]).await;
    let ehlo = c.cmd("EHLO c", "250").await;
    assert!(!ehlo.contains("AUTH"), "AUTH advertised before TLS: {ehlo}");
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", "secret")),
        "538 5.7.11",
    )
    .await;
    c.cmd("MAIL FROM:<alice@example.test>", "530 5.7.0").await;
    let mut c = c.starttls().await;
    let ehlo = c.cmd("EHLO c", "250").await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", "wrong")),
        "535 5.7.8",
    )
    .await;
    c.cmd(
        &format!("AUTH PLAIN {}", plain("mallory", "secret")),
        "535 5.7.8",
    )
    .await;
    c.cmd("AUTH CRAM-MD5", "504 5.5.4").await;
    c.cmd("AUTH PLAIN", "334").await;
    c.cmd("*", "501 5.0.0").await;
    c.cmd("AUTH PLAIN", "334").await;
    c.cmd(&plain("alice", "secret"), "235 2.7.0").await;
    c.cmd(
        &format!("AUTH PLAIN {}", plain("alice", "secret")),
        "503 5.5.1",
    )
    .await;
    let reply = c
        .send_mail(
            "alice@example.test",
            &["friend@elsewhere.test"],
            "Subject: out\r\n\r\nhi",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(1).await;
    assert!(
        got[0].text().contains("with ESMTPSA id"),
        "{}",
        got[0].text()
    );
}

#[tokio::test]
async fn auth_login_over_implicit_tls() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = server(&sink).await;
    let mut c = Client::connect_tls(s.server.listen_addrs[2]).await;
    let ehlo = c.cmd("EHLO c", "250").await;
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    c.cmd("MAIL FROM:<alice@example.test>", "530").await;
    c.cmd("AUTH LOGIN", "334 VXNlcm5hbWU6").await;
    c.cmd(&B64.encode("alice"), "334 UGFzc3dvcmQ6").await;
    c.cmd(&B64.encode("secret"), "235").await;
    c.cmd("MAIL FROM:<alice@example.test>", "250").await;
    c.cmd("RCPT TO:<x@elsewhere.test>", "250").await;
    c.cmd("RSET", "250").await;
    c.cmd("AUTH LOGIN", "503").await;
}

#[tokio::test]
async fn unauthenticated_mx_over_tls_is_still_no_relay() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = server(&sink).await;
    let c = Client::connect(s.server.listen_addrs[0]).await;
    let mut c = c.starttls().await;
    c.cmd("EHLO c", "250").await;
    c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "502 5.5.1").await;
    c.cmd("MAIL FROM:<a@b.c>", "250").await;
    c.cmd("RCPT TO:<x@elsewhere.test>", "550 5.7.1").await;
}
