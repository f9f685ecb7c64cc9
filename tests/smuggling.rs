//! SMTP smuggling (RFC 5321 2.3.8, 4.1.1.4): only CRLF.CRLF ends DATA. Each variant below
//! tries to end the first message early and start a second one inside it. The server must
//! see a single message, refuse it for its bare CR/LF, and relay nothing.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};

const VARIANTS: [&[u8]; 7] = [
    b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r", b"\r\n.\r",
];

#[tokio::test]
async fn no_variant_smuggles_a_second_message() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n[delivery]\nretry = [\"1s\"]\n{}",
        sink.config_route("*", "none")
    ))
    .await;
    for variant in VARIANTS {
        let mut c = Client::connect(s.addr()).await;
        c.cmd("EHLO attacker.test", "250").await;
        c.cmd("MAIL FROM:<a@attacker.test>", "250").await;
        c.cmd("RCPT TO:<u@example.test>", "250").await;
        c.cmd("DATA", "354").await;
        let mut payload = b"Subject: first\r\n\r\nfirst message".to_vec();
        payload.extend_from_slice(variant);
        payload.extend_from_slice(
            b"MAIL FROM:<admin@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n",
        );
        c.send(&payload).await;
        let reply = c.reply().await;
        assert!(reply.starts_with("554 5.5.2"), "{variant:?}: {reply}");
        // Nothing more was taken as commands: the next reply is to our NOOP.
        c.cmd("NOOP", "250").await;
        c.cmd("QUIT", "221").await;
    }
    assert!(s.spool_ids().is_empty(), "something was spooled");
    // A clean message still flows, proving the relay path is live.
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO good.test", "250").await;
    let reply = c
        .send_mail(
            "a@good.test",
            &["u@example.test"],
            "Subject: clean\r\n\r\nok",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert!(got[0].text().contains("Subject: clean"));
}

#[tokio::test]
async fn bare_lf_in_commands_is_refused_not_executed() {
    let s = TestServer::start("[accept]\ndomains = [\"example.test\"]\n").await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.send(b"MAIL FROM:<a@b.c>\nRCPT TO:<u@example.test>\r\n")
        .await;
    assert!(c.reply().await.starts_with("500 5.5.2"));
    // The MAIL was refused, so RCPT is out of sequence.
    assert!(c.reply().await.starts_with("503"));
}
