//! REQUIRETLS (RFC 8689): offered and taken only under TLS on the way in; on the way out a
//! REQUIRETLS message goes only over TLS validated by MTA-STS (or a route that verifies) to
//! hops that offer REQUIRETLS, else it fails with 5.7.30, and its report is itself sent
//! with REQUIRETLS. Against a DNS server, an HTTPS policy server and next hops started by
//! the test.

mod common;
use common::ca::TestCa;
use common::dns::Zone;
use common::policy::{PolicyServer, policy};
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer, tls_section};
use std::collections::HashMap;

/// One message with `MAIL FROM:<a@sender.test> REQUIRETLS` over `c` (under TLS).
async fn send_requiretls(c: &mut Client, to: &str, subject: &str) {
    c.cmd("MAIL FROM:<a@sender.test> REQUIRETLS", "250").await;
    c.cmd(&format!("RCPT TO:<{to}>"), "250").await;
    c.cmd("DATA", "354").await;
    c.send(format!("Subject: {subject}\r\n\r\nsecret\r\n.\r\n").as_bytes())
        .await;
    let reply = c.reply().await;
    assert!(reply.starts_with("250"), "{reply}");
}

#[tokio::test]
async fn requiretls_is_offered_and_taken_only_under_tls() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(&format!(
        "{}[relay]\nnetworks = [\"127.0.0.0/8\"]\n",
        tls_section(dir.path())
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    let ehlo = c.cmd("EHLO c", "250").await;
    assert!(!ehlo.contains("REQUIRETLS"), "{ehlo}");
    // Not offered in the clear, so not known there (RFC 5321 4.1.1.11: 555).
    c.cmd("MAIL FROM:<a@sender.test> REQUIRETLS", "555").await;
    let mut c = c.starttls().await;
    let ehlo = c.cmd("EHLO c", "250").await;
    assert!(ehlo.contains("250-REQUIRETLS"), "{ehlo}");
    c.cmd("MAIL FROM:<a@sender.test> REQUIRETLS", "250").await;
    c.cmd("RSET", "250").await;
    c.cmd("MAIL FROM:<a@sender.test> REQUIRETLS=yes", "501")
        .await;
}

#[tokio::test]
async fn a_requiretls_message_goes_only_over_validated_tls_to_hops_that_offer_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    // mx.good.test offers REQUIRETLS; mx.plain.test (same port, 127.0.0.2) does not.
    let good = Sink::start(SinkOptions {
        tls: Some(ca.server(&["mx.good.test"])),
        requiretls: true,
        ..Default::default()
    })
    .await;
    let port = good.addr.port();
    let plain = Sink::start_on(
        &format!("127.0.0.2:{port}"),
        SinkOptions {
            tls: Some(ca.server(&["mx.plain.test"])),
            ..Default::default()
        },
    )
    .await;
    // The sender's domain gets its reports over a route that verifies, from a hop that
    // offers REQUIRETLS; relay.test goes over a route that does not verify.
    let reports = Sink::start(SinkOptions {
        tls: Some(ca.server(&["localhost"])),
        requiretls: true,
        ..Default::default()
    })
    .await;
    let web = PolicyServer::start(
        ca.server(&[
            "mta-sts.good.test",
            "mta-sts.plain.test",
            "mta-sts.testing.test",
            "mta-sts.broken.test",
        ]),
        HashMap::from([
            ("good.test".into(), policy("enforce", &["mx.good.test"])),
            ("plain.test".into(), policy("enforce", &["mx.plain.test"])),
            ("testing.test".into(), policy("testing", &["*.good.test"])),
        ]),
    )
    .await;
    let here = "127.0.0.1".parse().unwrap();
    let mut zone = Zone::default()
        .a("mx.good.test.", here)
        .a("mx.plain.test.", "127.0.0.2".parse().unwrap())
        .mx("good.test.", 10, "mx.good.test.")
        .mx("plain.test.", 10, "mx.plain.test.")
        .mx("testing.test.", 10, "mx.good.test.")
        .mx("nopolicy.test.", 10, "mx.good.test.")
        .mx("broken.test.", 10, "mx.good.test.");
    // broken.test publishes a record, but its policy server has no policy for it.
    for d in ["good", "plain", "testing", "broken"] {
        zone = zone
            .a(&format!("mta-sts.{d}.test."), here)
            .txt(&format!("_mta-sts.{d}.test."), "v=STSv1; id=1;");
    }
    let dns = zone.start().await;
    let s = TestServer::start(&format!(
        "{}[relay]\nnetworks = [\"127.0.0.0/8\"]\n[dns]\nnameservers = [\"{}\"]\n\
         [delivery]\nsmtp_port = {port}\nmta_sts_port = {}\nretry = [\"1h\"]\n\
         [[route]]\ndomain = \"sender.test\"\nto = \"smtp:localhost:{}\"\ntls = \"required\"\nca = \"{ca}\"\n\
         [[route]]\ndomain = \"relay.test\"\nto = \"smtp:localhost:{}\"\ntls = \"opportunistic\"\n\
         [[route]]\ndomain = \"*\"\nto = \"mx\"\ntls = \"opportunistic\"\nca = \"{ca}\"\n",
        tls_section(dir.path()),
        dns.addr,
        web.port,
        reports.addr.port(),
        reports.addr.port(),
        ca = ca.pem.display()
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let mut c = c.starttls().await;
    c.cmd("EHLO c", "250").await;
    for d in ["good", "testing", "plain", "nopolicy", "relay", "broken"] {
        send_requiretls(&mut c, &format!("u@{d}.test"), d).await;
    }
    // good.test and testing.test (enforced for this message): over validated TLS, and
    // asked for REQUIRETLS onward.
    let got = good.wait_for(2).await;
    for m in &got {
        assert!(m.tls && m.mail.ends_with(" REQUIRETLS"), "{}", m.mail);
    }
    // The other three fail with 5.7.30, each reported to the sender with REQUIRETLS.
    common::eventually("three reports", || reports.reports().len() == 3).await;
    let texts: Vec<String> = reports.reports().iter().map(|m| m.text()).collect();
    for (rcpt, why) in [
        ("u@plain.test", "does not offer REQUIRETLS"),
        ("u@nopolicy.test", "has no MTA-STS policy"),
        ("u@relay.test", "does not verify TLS"),
    ] {
        let report = texts
            .iter()
            .find(|t| t.contains(&format!("Final-Recipient: rfc822; {rcpt}")))
            .unwrap_or_else(|| panic!("no report for {rcpt}: {texts:?}"));
        assert!(report.contains("Status: 5.7.30"), "{report}");
        assert!(report.contains(why), "{why}: {report}");
    }
    for m in reports.reports() {
        assert!(m.tls && m.mail.ends_with(" REQUIRETLS"), "{}", m.mail);
    }
    assert_eq!(plain.count(), 0);
    assert_eq!(reports.count(), 3);
    // A policy that cannot be had now is not a policy that is not there: it waits.
    let deferred = "u@broken.test> deferred (451 4.7.5 REQUIRETLS: the MTA-STS policy of broken.test cannot be had now";
    common::eventually("broken.test deferred", || {
        wasmtp::queue::list(&s.spool(), false)
            .unwrap()
            .contains(deferred)
    })
    .await;
}
