//! On-Demand Mail Relay (RFC 2645): mail for a `to = "odmr"` route waits in the queue; the
//! domain's owner connects to the `odmr` listener, says STARTTLS, EHLO, AUTH and ATRN, and
//! then, the roles turned, receives the mail over the same connection as a server (written
//! in the test: the sink's session, driven over the client's own TLS stream).

mod common;
use base64::Engine;
use common::sink::Sink;
use common::{Client, TestServer, tls_section};

/// The gateway: an MX listener and an ODMR listener; remote.example.test and other.test
/// wait for ATRN; `site` may collect remote.example.test only.
async fn gateway(dir: &std::path::Path) -> TestServer {
    gateway_with(dir, "").await
}

/// The same, with more `[delivery]` keys.
async fn gateway_with(dir: &std::path::Path, delivery: &str) -> TestServer {
    let hash = wasmtp::session::hash_password("secret").unwrap();
    TestServer::start(&format!(
        "[[listen]]\naddress = \"127.0.0.1:0\"\nmode = \"mx\"\n\
         [[listen]]\naddress = \"127.0.0.1:0\"\nmode = \"odmr\"\n{}\
         [accept]\ndomains = [\"remote.example.test\", \"other.test\"]\n\
         [delivery]\nretry = [\"1h\"]\n{delivery}\
         [[user]]\nname = \"site\"\npassword_hash = \"{hash}\"\natrn_domains = [\"remote.example.test\"]\n\
         [[route]]\ndomain = \"remote.example.test\"\nto = \"odmr\"\n\
         [[route]]\ndomain = \"other.test\"\nto = \"odmr\"\n",
        tls_section(dir)
    ))
    .await
}

#[tokio::test]
async fn a_customer_that_never_greets_is_let_go_and_its_domains_freed() {
    let dir = tempfile::tempdir().unwrap();
    let s = gateway_with(dir.path(), "greeting_timeout = \"1s\"\n").await;
    let mut m = Client::connect(s.addr()).await;
    m.cmd("EHLO sender.test", "250").await;
    let r = m
        .send_mail(
            "a@sender.test",
            &["u@remote.example.test"],
            "Subject: x\r\n\r\nx",
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    common::eventually("a deferral", || s.deferrals() >= 1).await;
    // ATRN, then silence where the customer's 220 should be: closed after greeting_timeout.
    let mut c = customer(&s).await;
    c.cmd("ATRN remote.example.test", "250").await;
    let started = std::time::Instant::now();
    assert!(c.closed().await, "the gateway kept a silent customer");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // The domain is free again, and its mail still waits.
    let mut c = customer(&s).await;
    c.cmd("ATRN remote.example.test", "250").await;
    assert_eq!(s.spool_ids().len(), 1);
}

/// A customer on the ODMR listener: STARTTLS, EHLO, AUTH as `site`.
async fn customer(s: &TestServer) -> Client {
    let mut c = Client::connect(s.server.listen_addrs[1]).await;
    c.cmd("EHLO customer.test", "250").await;
    let mut c = c.starttls().await;
    let ehlo = c.cmd("EHLO customer.test", "250").await;
    assert!(ehlo.contains("250-ATRN") && ehlo.contains("AUTH"), "{ehlo}");
    let auth = base64::engine::general_purpose::STANDARD.encode("\0site\0secret");
    c.cmd(&format!("AUTH PLAIN {auth}"), "235").await;
    c
}

#[tokio::test]
async fn atrn_turns_the_connection_around_and_delivers_what_waits() {
    let dir = tempfile::tempdir().unwrap();
    let s = gateway(dir.path()).await;
    // Nothing waits yet: 453 (RFC 2645 4.2.2), not an error.
    let mut c = customer(&s).await;
    c.cmd("ATRN remote.example.test", "453").await;
    // Not someone else's domain; no mail taken on this port.
    c.cmd("ATRN other.test", "450").await;
    c.cmd("MAIL FROM:<a@b.test>", "502").await;
    drop(c);
    // ATRN needs AUTH.
    let mut stranger = Client::connect(s.server.listen_addrs[1]).await;
    stranger.cmd("EHLO x", "250").await;
    let mut stranger = stranger.starttls().await;
    stranger.cmd("EHLO x", "250").await;
    stranger.cmd("ATRN remote.example.test", "530").await;

    // Mail arrives by MX: two messages for the site (one 8-bit, one asking for DSN), one
    // for other.test; a recipient the site will defer.
    let mut m = Client::connect(s.addr()).await;
    m.cmd("EHLO sender.test", "250").await;
    let r = m
        .send_mail(
            "a@sender.test",
            &["u@remote.example.test", "later@remote.example.test"],
            "Subject: one\r\n\r\nfirst",
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    m.cmd("MAIL FROM:<a@sender.test> BODY=8BITMIME", "250")
        .await;
    m.cmd("RCPT TO:<v@remote.example.test> NOTIFY=FAILURE", "250")
        .await;
    m.cmd("DATA", "354").await;
    m.send("Subject: two\r\n\r\ncaf\u{e9}\r\n.\r\n".as_bytes())
        .await;
    let r = m.reply().await;
    assert!(r.starts_with("250"), "{r}");
    let r = m
        .send_mail(
            "a@sender.test",
            &["w@other.test"],
            "Subject: three\r\n\r\nx",
        )
        .await;
    assert!(r.starts_with("250"), "{r}");
    // They wait: the first attempts found nobody collecting (four recipients deferred).
    common::eventually("four deferrals", || s.deferrals() >= 4).await;
    assert_eq!(s.spool_ids().len(), 3);

    // The site collects: 250, then it greets us and we deliver, then QUIT.
    let site = Sink::with_rcpt_rule(|line| {
        line.contains("later@")
            .then(|| "450 4.2.1 not now".to_string())
    })
    .await;
    let mut c = customer(&s).await;
    c.cmd("ATRN remote.example.test", "250").await;
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        site.serve_reversed(c.into_stream()),
    )
    .await
    .expect("the gateway said QUIT");
    let got = site.messages.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let one = got
        .iter()
        .find(|m| m.text().contains("Subject: one"))
        .unwrap();
    assert_eq!(one.rcpts, ["RCPT TO:<u@remote.example.test>"]);
    let two = got
        .iter()
        .find(|m| m.text().contains("Subject: two"))
        .unwrap();
    // The client's extensions, as for any next hop: 8BITMIME and DSN passed on.
    assert!(two.mail.contains("BODY=8BITMIME"), "{}", two.mail);
    assert!(two.rcpts[0].contains("NOTIFY=FAILURE"), "{:?}", two.rcpts);
    assert!(two.tls);
    // Left: the deferred recipient, and other.test's message.
    common::eventually("two left", || s.spool_ids().len() == 2).await;
    let list = wasmtp::queue::list(&s.spool(), false).unwrap();
    assert!(list.contains("later@remote.example.test"), "{list}");
    assert!(list.contains("w@other.test"), "{list}");
    assert!(list.contains("<u@remote.example.test> delivered"), "{list}");
    assert!(!list.contains("v@remote.example.test"), "{list}");
    // Nothing else waits for the site now but the deferred recipient, which counts.
    let mut c = customer(&s).await;
    c.cmd("ATRN", "250").await;
    site.serve_reversed(c.into_stream()).await;
}

#[tokio::test]
async fn atrn_is_refused_where_it_does_not_belong() {
    let dir = tempfile::tempdir().unwrap();
    let s = gateway(dir.path()).await;
    // Not on an MX listener.
    let mut c = Client::connect(s.addr()).await;
    let ehlo = c.cmd("EHLO c", "250").await;
    assert!(!ehlo.contains("ATRN"), "{ehlo}");
    c.cmd("ATRN remote.example.test", "502").await;
    c.cmd("ATRN bad..domain", "501").await;
    // A user's atrn_domains must be routed to odmr: check-config says so.
    let hash = wasmtp::session::hash_password("secret").unwrap();
    let toml = format!(
        "hostname = \"mx.test\"\n[[user]]\nname = \"site\"\npassword_hash = \"{hash}\"\n\
         atrn_domains = [\"remote.example.test\"]\n"
    );
    let e = wasmtp::config::Config::parse("test", &toml)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("user[0].atrn_domains[0]") && e.contains("not routed to \"odmr\""),
        "{e}"
    );
}
