//! Sender authentication through real sockets and a DNS server started by each test: SPF
//! (include, redirect, macros, -all/~all, lookup and void limits, temperror on a DNS server
//! that fails or never answers), DMARC alignment, organizational domains, `sp=` and `pct=`,
//! the bundled dmarc-policy plugin, forged Authentication-Results, and DMARC against
//! malformed or doubled From fields. DKIM is in tests/dkim.rs.

mod common;
use common::Client;
use common::auth::*;
use common::dns::Zone;
use common::sink::{Sink, SinkOptions};
use std::time::{Duration, Instant};

#[tokio::test]
async fn spf_results_reach_plugins_and_the_header() {
    let ip = std::net::Ipv4Addr::LOCALHOST;
    let dns = Zone::default()
        .txt("pass.test.", "v=spf1 ip4:127.0.0.0/8 -all")
        .txt("fail.test.", "v=spf1 ip4:192.0.2.1 -all")
        .txt("soft.test.", "v=spf1 ~all")
        .txt("neutral.test.", "v=spf1 ?all")
        .txt("inc.test.", "v=spf1 include:_spf.inc.test -all")
        .txt("_spf.inc.test.", "v=spf1 a:host.inc.test -all")
        .a("host.inc.test.", ip)
        .txt("red.test.", "v=spf1 redirect=_spf.red.test")
        .txt("_spf.red.test.", "v=spf1 mx -all")
        .mx("_spf.red.test.", 10, "mx.red.test.")
        .a("mx.red.test.", ip)
        // %{i} of 127.0.0.1 reversed is 1.0.0.127, %{l} the local part.
        .txt(
            "macro.test.",
            "v=spf1 exists:%{ir}.%{l}._spf.macro.test -all",
        )
        .a("1.0.0.127.alice._spf.macro.test.", ip)
        .txt("helo.test.", "v=spf1 ip4:127.0.0.1 -all")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, &echo_plugin()).await;
    let cases = [
        ("a@pass.test", "pass"),
        ("a@fail.test", "fail"),
        ("a@soft.test", "softfail"),
        ("a@neutral.test", "neutral"),
        ("a@none.test", "none"),
        ("a@inc.test", "pass"),
        ("a@red.test", "pass"),
        ("alice@macro.test", "pass"),
        ("bob@macro.test", "fail"),
    ];
    for (i, (from, _)) in cases.iter().enumerate() {
        let reply = send(
            &s,
            "helo.test",
            from,
            &plain("x@x.test", &format!("case {i}")),
        )
        .await;
        assert!(reply.starts_with("250"), "{from}: {reply}");
    }
    let got = sink.wait_for(cases.len()).await;
    for (i, (from, expected)) in cases.iter().enumerate() {
        let fields = delivered_fields(&got, &format!("Subject: case {i}\r\n"));
        let domain = from.split('@').nth(1).unwrap();
        let results = field(&fields, "Authentication-Results");
        assert_eq!(results.len(), 1, "{fields:?}");
        assert!(results[0].starts_with("mx.test;"), "{}", results[0]);
        assert!(
            results[0].contains(&format!("spf={expected} smtp.mailfrom={domain}")),
            "{from}: {}",
            results[0]
        );
        assert!(
            results[0].contains("spf=pass smtp.helo=helo.test"),
            "{}",
            results[0]
        );
        // The typed results: the mail hook's (MAIL FROM/HELO) and the data hook's.
        let echo = field(&fields, "X-Echo-Auth");
        assert!(
            echo[0].starts_with(&format!("mail={expected}/pass:{domain}; spf={expected};")),
            "{from}: {echo:?}"
        );
    }
}

#[tokio::test]
async fn spf_limits_loops_and_dns_failures_give_errors_quickly() {
    let mut zone = Zone::default()
        // Three lookups that find nothing: RFC 7208 4.6.4 allows two.
        .txt(
            "void.test.",
            "v=spf1 a:nx1.void.test a:nx2.void.test a:nx3.void.test -all",
        )
        .txt(
            "twovoid.test.",
            "v=spf1 a:nx1.void.test a:nx2.void.test ip4:127.0.0.1 -all",
        )
        .txt("loop.test.", "v=spf1 include:loop.test -all")
        .txt("two.test.", "v=spf1 -all")
        .txt("two.test.", "v=spf1 +all")
        .txt("syntax.test.", "v=spf1 ip4:not-an-address -all")
        // RFC 7208 5.6: a zero-length prefix is valid and matches every address; a
        // length with a leading zero is not.
        .txt("cidr.test.", "v=spf1 ip4:0.0.0.0/0 -all")
        .txt("badcidr.test.", "v=spf1 ip4:127.0.0.0/08 -all")
        .txt("dead.test.", "v=spf1 include:x.servfail.test -all")
        .txt("slow.test.", "v=spf1 a:x.hang.test -all")
        .txt("noinclude.test.", "v=spf1 include:nothing.test -all")
        .txt(
            "huge.test.",
            &format!("v=spf1 {} -all", "ip4:192.0.2.1 ".repeat(300)),
        );
    // Eleven includes, each with a record: over the limit of ten lookups.
    let chain: Vec<String> = (0..11)
        .map(|i| format!("include:c{i}.chain.test"))
        .collect();
    zone = zone.txt("chain.test.", &format!("v=spf1 {} -all", chain.join(" ")));
    for i in 0..11 {
        zone = zone.txt(&format!("c{i}.chain.test."), "v=spf1 ip4:192.0.2.1 -all");
    }
    let dns = zone.start().await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, &echo_plugin()).await;
    let cases = [
        ("a@void.test", "permerror"),
        ("a@twovoid.test", "pass"),
        ("a@loop.test", "permerror"),
        ("a@two.test", "permerror"),
        ("a@syntax.test", "permerror"),
        ("a@cidr.test", "pass"),
        ("a@badcidr.test", "permerror"),
        ("a@dead.test", "temperror"),
        ("a@slow.test", "temperror"),
        ("a@noinclude.test", "permerror"),
        ("a@chain.test", "permerror"),
        ("a@huge.test", "fail"),
    ];
    for (i, (from, _)) in cases.iter().enumerate() {
        let started = Instant::now();
        let reply = send(
            &s,
            "client.test",
            from,
            &plain("x@x.test", &format!("case {i}")),
        )
        .await;
        assert!(reply.starts_with("250"), "{from}: {reply}");
        // The timeout is 3 s: a check never waits longer than that for DNS.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{from}: {:?}",
            started.elapsed()
        );
    }
    let got = sink.wait_for(cases.len()).await;
    for (i, (from, expected)) in cases.iter().enumerate() {
        let fields = delivered_fields(&got, &format!("Subject: case {i}\r\n"));
        let results = field(&fields, "Authentication-Results");
        let domain = from.split('@').nth(1).unwrap();
        assert!(
            results[0].contains(&format!("spf={expected} smtp.mailfrom={domain}")),
            "{from}: {}",
            results[0]
        );
    }
}

/// DMARC: relaxed and strict alignment, the organizational domain's record with sp=,
/// pct=0, quarantine (held), allow_domains, and a From domain without a record.
#[tokio::test]
async fn dmarc_alignment_policies_and_the_policy_plugin() {
    let dns = Zone::default()
        .txt("bounce.org.test.", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.org.test.", "v=DMARC1; p=none; sp=reject")
        .txt("bounce.strict.test.", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.strict.test.", "v=DMARC1; p=reject; aspf=s")
        .txt("_dmarc.quar.test.", "v=DMARC1; p=quarantine")
        .txt("_dmarc.sampled.test.", "v=DMARC1; p=reject; pct=0")
        .txt("_dmarc.partner.test.", "v=DMARC1; p=reject")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(
        &dns,
        &sink,
        &echo_and_dmarc("allow_domains = [\"partner.test\"]\n"),
    )
    .await;
    let cases = [
        // Relaxed SPF alignment: MAIL FROM bounce.org.test, From org.test (p=none).
        ("x@bounce.org.test", "a@org.test", "relaxed", "250"),
        // A subdomain without a record gets the organizational domain's sp=reject.
        ("x@nospf.test", "a@news.org.test", "sub", "550 5.7.1"),
        // Strict SPF alignment: bounce.strict.test is not strict.test.
        (
            "x@bounce.strict.test",
            "a@strict.test",
            "strict",
            "550 5.7.1",
        ),
        // pct=0: reject becomes quarantine (RFC 7489 6.6.4): held, not refused.
        ("x@nospf.test", "a@sampled.test", "sampled", "250"),
        ("x@nospf.test", "a@quar.test", "quarantine", "250"),
        // Allowlisted: tagged, delivered.
        ("x@nospf.test", "a@partner.test", "allowed", "250"),
        ("x@nospf.test", "a@nodmarc.test", "none", "250"),
    ];
    for (mail_from, from, subject, expected) in cases {
        let r = send(&s, "c.test", mail_from, &plain(from, subject)).await;
        assert!(r.starts_with(expected), "{subject}: {r}");
    }
    let got = sink.wait_for(3).await;
    let find = |subject: &str| delivered_fields(&got, &format!("Subject: {subject}\r\n"));
    let relaxed = find("relaxed");
    let echo = field(&relaxed, "X-Echo-Auth")[0];
    assert!(
        echo.contains("dmarc=pass from=org.test policy=none") && echo.contains("aligned=spf"),
        "{echo}"
    );
    let allowed = find("allowed");
    assert_eq!(
        field(&allowed, "X-DMARC-Policy")[0],
        "fail; from=partner.test; policy=reject; disposition=reject; action=allowed"
    );
    let none = find("none");
    assert!(
        field(&none, "Authentication-Results")[0].contains("dmarc=none header.from=nodmarc.test")
    );
    assert!(field(&none, "X-DMARC-Policy").is_empty());
    // The two quarantined messages are held in the spool.
    common::eventually("only the two held messages stay in the spool", || {
        s.spool().list().len() == 2
    })
    .await;
    assert_eq!(sink.count(), 3);
}

/// Authentication-Results claiming our name are removed from received mail; others stay.
#[tokio::test]
async fn forged_authentication_results_are_removed() {
    let dns = Zone::default().start().await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, "").await;
    let content = b"Authentication-Results: mx.test; dkim=pass header.d=bank.test; dmarc=pass\r\n\
Authentication-Results: upstream.test; spf=pass\r\n\
From: a@bank.test\r\nSubject: forged\r\n\r\nPay now.\r\n";
    let r = send(&s, "c.test", "a@nospf.test", content).await;
    assert!(r.starts_with("250"), "{r}");
    let got = sink.wait_for(1).await;
    let fields = header_of(&got[0].text());
    let results = field(&fields, "Authentication-Results");
    assert_eq!(results.len(), 2, "{results:?}");
    assert!(results[0].starts_with("mx.test;") && results[0].contains("dkim=none"));
    assert_eq!(results[1], "upstream.test; spf=pass");
}

/// What a forger tries against DMARC: a header line without a colon first (mail-auth would
/// see no header section), two From domains, a signature with rsa-sha1 (RFC 8301), a flood
/// of ARC fields; and an IPv4 client seen as ::ffff:a.b.c.d.
#[tokio::test]
async fn dmarc_is_not_dodged_by_malformed_or_doubled_from() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = outside_key("rsa", &dir.path().join("rsa.key"));
    let dns = Zone::default()
        .txt("_dmarc.bank.test.", "v=DMARC1; p=reject")
        .txt("_dmarc.xn--bnk-qla.test.", "v=DMARC1; p=reject")
        .txt("s1._domainkey.bank.test.", &rsa)
        .txt("ok.test.", "v=spf1 ip4:127.0.0.1 -all")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&dns, &sink, &echo_and_dmarc("")).await;
    let colonless = b"Not a header line\r\nFrom: ceo@bank.test\r\nSubject: pay\r\n\r\nx\r\n";
    let r = send(&s, "c.test", "x@ok.test", colonless).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    let two = b"From: me@ok.test\r\nFrom: ceo@bank.test\r\nSubject: pay\r\n\r\nx\r\n";
    let r = send(&s, "c.test", "x@ok.test", two).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    let list = b"From: me@ok.test, ceo@bank.test\r\nSubject: pay\r\n\r\nx\r\n";
    let r = send(&s, "c.test", "x@ok.test", list).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // Names our resolver cannot ask for (a HELO or a selector with '+') are permanent
    // errors, not temporary ones that would let DMARC say "temperror".
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO x+y.bank.test", "250").await;
    let r = c
        .send_mail(
            "",
            &["rcpt@example.test"],
            "From: ceo@bank.test\r\nSubject: pay\r\n\r\nx",
        )
        .await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    let bad_selector = "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=bank.test; s=x+y; h=from; \
         bh=s14J+iztnrytnRYzb7lhFG/jS/vrxWJnnahfijFMnco=; b=AAAA\r\n\
         From: ceo@bank.test\r\nSubject: pay\r\n\r\nx\r\n";
    let r = send(&s, "c.test", "x@ok.test", bad_selector.as_bytes()).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // An internationalized From domain is checked under its ASCII name.
    let idn = "From: ceo@b\u{e4}nk.test\r\nSubject: pay\r\n\r\nx\r\n";
    let r = send(&s, "c.test", "x@ok.test", idn.as_bytes()).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // More From domains than anyone sends: refused, whatever the order.
    let many: Vec<String> = (0..11).map(|i| format!("a@d{i}.test")).collect();
    let crowd = format!(
        "From: {}, ceo@bank.test\r\nSubject: pay\r\n\r\nx\r\n",
        many.join(", ")
    );
    let r = send(&s, "c.test", "x@ok.test", crowd.as_bytes()).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // rsa-sha1 by the domain's own key: not a valid signature (RFC 8301 3.1).
    let key = dir.path().join("rsa.key").display().to_string();
    let sha1 = dkim_tool(
        &["sign", "s1", "bank.test", &key, "rsa-sha1"],
        &plain("ceo@bank.test", "sha1"),
    );
    let r = send(&s, "c.test", "x@nospf.test", &sha1).await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    // 400 ARC-Message-Signature fields (a chain has at most 50): no lookups for them, the
    // chain fails.
    let before = dns.queries.load(std::sync::atomic::Ordering::SeqCst);
    let mut flood = String::new();
    for i in 0..400 {
        flood.push_str(&format!(
            "ARC-Message-Signature: i=1; a=rsa-sha256; d=d{i}.flood.test; s=s; h=from; bh=x; b=x\r\n"
        ));
    }
    flood.push_str("From: me@ok.test\r\nSubject: flood\r\n\r\nx\r\n");
    let started = Instant::now();
    let r = send(&s, "c.test", "x@ok.test", flood.as_bytes()).await;
    assert!(r.starts_with("250"), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let asked = dns.queries.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(asked < 20, "{asked} DNS queries for one message");
    let got = sink.wait_for(1).await;
    let fields = header_of(&got[0].text());
    let echo = field(&fields, "X-Echo-Auth")[0];
    assert!(echo.contains("arc=fail/400"), "{echo}");
    // A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1: still IPv4 for SPF.
    let verifier = std::sync::Arc::new(wasmtp::mailauth::Verifier::new(
        wasmtp::dns::Dns::new(&[dns.addr]).unwrap(),
        "mx.test",
        Duration::from_secs(3),
    ));
    let mapped: std::net::IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    let check = verifier.spf_mail_from(mapped, "c.test", "a@ok.test").await;
    assert_eq!(check.status, wasmtp::mailauth::AuthStatus::Pass);
}
