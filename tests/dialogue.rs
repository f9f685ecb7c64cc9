//! The RFC 5321 dialogue over a real socket: verbs, sequence, limits, relay rules, ESMTP
//! parameters, pipelining and BDAT.

mod common;
use common::{Client, TestServer};

const ACCEPT: &str = "[accept]\ndomains = [\"example.test\"]\n[[route]]\ndomain = \"*\"\nto = \"maildir:{dir}/maildir\"\n";

/// These tests provoke many refusals on purpose: without the growing error delay (which
/// tests/hostile_clients.rs checks) and with room for all of them.
async fn server() -> TestServer {
    TestServer::start(&format!(
        "{ACCEPT}[limits]\nrecipients = 3\nmessage_size = \"10KiB\"\nerror_delay = \"0s\"\nerror_limit = 100\n"
    ))
    .await
}

#[tokio::test]
async fn greeting_ehlo_helo_and_simple_verbs() {
    let s = server().await;
    let mut c = Client::connect(s.addr()).await;
    let ehlo = c.cmd("EHLO client.test", "250-mx.test").await;
    for kw in [
        "PIPELINING",
        "SIZE 10240",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
        "ETRN",
        "HELP",
    ] {
        assert!(
            ehlo.lines().any(|l| l[4..] == *kw),
            "{kw} missing from {ehlo}"
        );
    }
    // No TLS configured: no STARTTLS; mx listener: no AUTH.
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    c.cmd("helo client.test", "250 mx.test").await;
    c.cmd("noop", "250 2.0.0").await;
    c.cmd("NOOP with argument", "250 2.0.0").await;
    c.cmd("rset", "250 2.0.0").await;
    c.cmd("HELP", "214").await;
    c.cmd("VRFY alice", "252 2.5.0").await;
    c.cmd("EXPN staff", "252 2.5.0").await;
    c.cmd("VRFY", "501 5.5.4").await;
    for verb in [
        "SEND FROM:<a@b.c>",
        "SOML FROM:<a@b.c>",
        "SAML FROM:<a@b.c>",
        "TURN",
        "send",
    ] {
        c.cmd(verb, "502 5.5.1").await;
    }
    c.cmd("STARTTLS", "502 5.5.1").await;
    c.cmd("AUTH PLAIN AGFAYg==", "502 5.5.1").await;
    c.cmd("FROB", "500 5.5.2").await;
    c.cmd("DATA extra", "501 5.5.4").await;
    c.cmd("QUIT", "221 2.0.0").await;
    assert!(c.closed().await);
}

#[tokio::test]
async fn sequence_errors() {
    let s = server().await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("MAIL FROM:<a@b.c>", "503 5.5.1").await;
    c.cmd("EHLO c", "250").await;
    c.cmd("RCPT TO:<u@example.test>", "503 5.5.1").await;
    c.cmd("DATA", "503 5.5.1").await;
    c.cmd("MAIL FROM:<a@b.c>", "250 2.1.0").await;
    c.cmd("MAIL FROM:<a@b.c>", "503 5.5.1").await;
    c.cmd("DATA", "503 5.5.1").await;
    c.cmd("RSET", "250").await;
    c.cmd("RCPT TO:<u@example.test>", "503 5.5.1").await;
    // EHLO resets the transaction (RFC 5321 4.1.4).
    c.cmd("MAIL FROM:<a@b.c>", "250").await;
    c.cmd("EHLO c", "250").await;
    c.cmd("RCPT TO:<u@example.test>", "503 5.5.1").await;
}

#[tokio::test]
async fn addresses_and_parameters() {
    let s = server().await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:a@b.c", "501 5.1.7").await;
    c.cmd("MAIL FROM:<a@b.c> FOO=BAR", "555 5.5.4").await;
    c.cmd("MAIL FROM:<a@b.c> SIZE=20000", "552 5.3.4").await;
    c.cmd("MAIL FROM:<a@b.c> BODY=BINARYMIME", "501 5.5.4")
        .await;
    c.cmd("MAIL FROM:<jörg@b.c>", "553 5.6.7").await;
    c.cmd(&format!("MAIL FROM:<{}@b.c>", "x".repeat(65)), "501 5.1.7")
        .await;
    c.cmd(
        "MAIL FROM:<> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=abc+2B",
        "250",
    )
    .await;
    c.cmd(
        "RCPT TO:<u@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@example.test",
        "250",
    )
    .await;
    c.cmd("RCPT TO:<u@example.test> NOTIFY=NEVER,SUCCESS", "501 5.5.4")
        .await;
    c.cmd("RCPT TO:<u@example.test> BOGUS", "555 5.5.4").await;
    c.cmd("RCPT TO:<Postmaster>", "250").await;
    c.cmd("RCPT TO:<@relay.one,@relay.two:v@example.test>", "250")
        .await;
    // limits.recipients = 3
    c.cmd("RCPT TO:<w@example.test>", "452 4.5.3").await;
    c.cmd("RSET", "250").await;
    c.cmd("MAIL FROM:<jörg@bücher.example> SMTPUTF8", "250")
        .await;
    c.cmd("RCPT TO:<ü@example.test>", "250").await;
    c.cmd("RSET", "250").await;
    // ESMTP parameters need EHLO.
    c.cmd("HELO c", "250").await;
    c.cmd("MAIL FROM:<a@b.c> SIZE=10", "504 5.5.4").await;
}

#[tokio::test]
async fn never_an_open_relay() {
    let s = server().await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<a@b.c>", "250").await;
    for rcpt in [
        "<u@elsewhere.test>",
        "<u@EXAMPLE.test.evil>",
        "<u%elsewhere.test@example.test>",
        "<elsewhere.test!u@example.test>",
        "<\"u@elsewhere.test\"@example.test>",
        "<u@[127.0.0.1]>",
    ] {
        c.cmd(&format!("RCPT TO:{rcpt}"), "550 5.7.1").await;
    }
    c.cmd("RCPT TO:<u@Example.Test>", "250").await;
}

#[tokio::test]
async fn relay_networks_may_relay() {
    let s = TestServer::start(&format!("{ACCEPT}[relay]\nnetworks = [\"127.0.0.0/8\"]\n")).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<a@b.c>", "250").await;
    c.cmd("RCPT TO:<u@elsewhere.test>", "250").await;
}

#[tokio::test]
async fn long_lines_and_bare_newlines_do_not_end_the_session() {
    let s = server().await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd(&format!("NOOP {}", "x".repeat(600)), "500 5.5.2")
        .await;
    c.cmd(&format!("EHLO {}", "x".repeat(20000)), "500 5.5.2")
        .await;
    c.send(b"NOOP\nNOOP\r\n").await;
    assert!(c.reply().await.starts_with("500 5.5.2"));
    assert!(c.reply().await.starts_with("250"));
    c.send(b"NO\rOP\r\n").await;
    assert!(c.reply().await.starts_with("500 5.5.2"));
    c.cmd("EHLO c", "250").await;
    // MAIL may be longer than 512 octets with parameters (RFC 5321 4.5.3.1.4).
    c.cmd(
        &format!("MAIL FROM:<a@b.c> ENVID={}", "e".repeat(100)),
        "250",
    )
    .await;
}

#[tokio::test]
async fn too_many_errors_get_421() {
    // The default error_limit (20), without the growing delay (tests/hostile_clients.rs).
    let s = TestServer::start(&format!("{ACCEPT}[limits]\nerror_delay = \"0s\"\n")).await;
    let mut c = Client::connect(s.addr()).await;
    for _ in 0..19 {
        c.cmd("BOGUS", "500").await;
    }
    c.send(b"BOGUS\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("500"), "{reply}");
    assert!(c.reply().await.starts_with("421 4.7.0"));
    assert!(c.closed().await);
}

#[tokio::test]
async fn pipelined_replies_in_order() {
    let s = server().await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.send(b"MAIL FROM:<a@b.c>\r\nRCPT TO:<u@example.test>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<v@example.test>\r\nDATA\r\n").await;
    for expect in ["250 2.1.0", "250 2.1.5", "550 5.7.1", "250 2.1.5", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(expect), "expected {expect}, got {r}");
    }
    c.send(b"Subject: p\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
        .await;
    assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued as "));
    assert!(c.reply().await.starts_with("250"));
    assert!(c.reply().await.starts_with("221"));
}

#[tokio::test]
async fn message_too_large_after_data() {
    let s = server().await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let body = format!(
        "Subject: big\r\n\r\n{}",
        "0123456789abcdef\r\n".repeat(1000)
    );
    let reply = c.send_mail("a@b.c", &["u@example.test"], &body).await;
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    // The session goes on, and a normal message still passes.
    let reply = c
        .send_mail("a@b.c", &["u@example.test"], "Subject: small\r\n\r\nok")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
}

#[tokio::test]
async fn bdat_chunks() {
    let s = server().await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    // BDAT without a transaction: refused, but the octets are still consumed.
    c.send(b"BDAT 5\r\nNOOP\r").await;
    assert!(c.reply().await.starts_with("503"));
    c.cmd("MAIL FROM:<a@b.c>", "250").await;
    c.cmd("RCPT TO:<u@example.test>", "250").await;
    let part1 = b"Subject: chunked\r\n\r\n.leading dot kept\r\n";
    c.send(format!("BDAT {}\r\n", part1.len()).as_bytes()).await;
    c.send(part1).await;
    assert!(c.reply().await.starts_with("250"));
    c.cmd("DATA", "503 5.5.1").await;
    c.cmd("RCPT TO:<v@example.test>", "503").await;
    c.send(b"BDAT 7 LAST\r\nend\r\n\r\n").await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250 2.0.0 Ok: queued as"), "{reply}");
    common::eventually("maildir delivery", || {
        !common::maildir_files(&s.dir.path().join("maildir"), "u").is_empty()
    })
    .await;
    let file = &common::maildir_files(&s.dir.path().join("maildir"), "u")[0];
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains("\n.leading dot kept\nend\n"), "{text}");
    // BDAT 0 LAST ends a message.
    c.cmd("MAIL FROM:<a@b.c>", "250").await;
    c.cmd("RCPT TO:<u@example.test>", "250").await;
    let chunk = b"Subject: x\r\n\r\nhi\r\n";
    c.send(format!("BDAT {}\r\n", chunk.len()).as_bytes()).await;
    c.send(chunk).await;
    assert!(c.reply().await.starts_with("250"));
    c.cmd("BDAT 0 LAST", "250 2.0.0 Ok: queued").await;
    // Bare LF inside BDAT content is refused at the last chunk.
    c.cmd("MAIL FROM:<a@b.c>", "250").await;
    c.cmd("RCPT TO:<u@example.test>", "250").await;
    c.send(b"BDAT 8 LAST\r\nbad\nline").await;
    assert!(c.reply().await.starts_with("554 5.5.2"));
}

#[tokio::test]
async fn etrn_only_for_relay_clients() {
    let s = server().await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    // RFC 1985: 459 for a node the client may not start.
    c.cmd("ETRN example.test", "459 4.7.1").await;
    c.cmd("ETRN", "501").await;
    let s = TestServer::start(&format!("{ACCEPT}[relay]\nnetworks = [\"127.0.0.0/8\"]\n")).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("ETRN example.test", "250").await;
}

#[tokio::test]
async fn connection_limit_answers_421() {
    let s = TestServer::start(&format!("{ACCEPT}[limits]\nconnections = 2\n")).await;
    let _a = Client::connect(s.addr()).await;
    let _b = Client::connect(s.addr()).await;
    let mut c = Client::connect_raw(s.addr()).await;
    let reply = c.reply().await;
    assert!(reply.starts_with("421 4.7.0"), "{reply}");
}
