//! Plugins written in other languages, built by `examples/build.sh` (which `tests/run.sh`
//! runs first): JavaScript (componentize-js), Python (componentize-py) and C (clang,
//! wasi-libc, wit-bindgen), loaded into the server and driven through a real session.

mod common;
use common::dns::Zone;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer, example};

/// The servers' SPF results reach plugins: a test DNS publishes the records.
fn verified(dns: &common::dns::TestDns) -> String {
    format!(
        "[dns]\nnameservers = [\"{}\"]\n[authentication]\nverify = true\ntimeout = \"3s\"\n",
        dns.addr
    )
}

#[tokio::test]
async fn c_plugin_checks_helo_names() {
    let dns = Zone::default()
        .txt("mail.example.org.", "v=spf1 ip4:127.0.0.1 -all")
        .txt("forged.example.org.", "v=spf1 ip4:192.0.2.1 -all")
        .start()
        .await;
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n{}[[plugin]]\nname = \"helo-check\"\npath = \"{}\"\n",
        verified(&dns),
        example("c-plugin")
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd(
        "EHLO localhost",
        "504 5.5.2 Helo command rejected: need fully-qualified hostname",
    )
    .await;
    c.cmd("EHLO 192.0.2.7", "504 5.5.2").await;
    c.cmd("EHLO [192.0.2.7]", "250").await;
    c.cmd("EHLO mail.example.org", "250").await;
    c.cmd("MAIL FROM:<a@example.org>", "250").await;
    c.cmd("RSET", "250").await;
    // The HELO name's SPF record does not list 127.0.0.1: refused at MAIL.
    c.cmd("EHLO forged.example.org", "250").await;
    c.cmd(
        "MAIL FROM:<a@example.org>",
        "550 5.7.23 SPF: this client may not use its HELO name",
    )
    .await;
    assert_eq!(s.server.metrics.faults(), 0);
}

#[tokio::test]
async fn javascript_and_python_plugins_in_one_session() {
    let sink = Sink::start(SinkOptions::default()).await;
    let dns = Zone::default()
        .txt("good.example.", "v=spf1 ip4:127.0.0.0/8 -all")
        .txt("forged.example.", "v=spf1 -all")
        .txt("_dmarc.good.example.", "v=DMARC1; p=none")
        .start()
        .await;
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n{}{}\n\
         [[plugin]]\nname = \"py\"\npath = \"{}\"\ntimeout = \"2s\"\nmemory = \"128MiB\"\n\
         [plugin.config]\nblocked_domains = [\"spam.example\"]\ntag = \"py-test\"\n\
         [[plugin]]\nname = \"js\"\npath = \"{}\"\ntimeout = \"2s\"\nmemory = \"128MiB\"\ncapabilities = [\"kv\"]\n\
         [plugin.config]\nblocked_users = [\"abuse-test\"]\n",
        verified(&dns),
        sink.config_route("*", "none"),
        example("python-plugin"),
        example("js-plugin"),
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    // Python refuses the sender domain, JavaScript the recipient.
    c.cmd(
        "MAIL FROM:<x@spam.example>",
        "550 5.7.1 Mail from spam.example is not accepted here",
    )
    .await;
    // Python refuses a sender whose SPF fails.
    c.cmd(
        "MAIL FROM:<x@forged.example>",
        "550 5.7.23 SPF: forged.example does not allow 127.0.0.1",
    )
    .await;
    c.cmd("MAIL FROM:<a@good.example>", "250").await;
    c.cmd(
        "RCPT TO:<abuse-test@example.test>",
        "550 5.1.1 abuse-test@example.test: no such user here",
    )
    .await;
    c.cmd("RCPT TO:<u@example.test>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"From: a@good.example\r\nSubject: two plugins here\r\n\r\nhello\r\n.\r\n")
        .await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250"), "{reply}");
    let text = sink.wait_for(1).await[0].text();
    assert!(
        text.contains(
            "X-Python-Policy: py-test; recipients=1; subject-length=16; spf=pass; dkim=none; dmarc=pass"
        ),
        "{text}"
    );
    assert!(text.contains("X-JS-Policy: size="), "{text}");
    assert!(
        text.contains("subject-words=3; domain-count=1; dmarc=pass from=good.example"),
        "{text}"
    );
    // A second message from the same domain: the JavaScript plugin's kv counter moves on.
    let reply = c
        .send_mail(
            "b@good.example",
            &["u@example.test"],
            "Subject: again\r\n\r\nx",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let text = sink.wait_for(2).await[1].text();
    assert!(text.contains("domain-count=2"), "{text}");
    assert_eq!(s.server.metrics.faults(), 0);
}
