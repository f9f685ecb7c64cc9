//! Plugins through real sessions: the bundled policy plugins, every verdict and change, and
//! misbehaving guests that must cost one reply while other sessions go on.

mod common;
use common::dns::TestDns;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};
use std::sync::atomic::Ordering;

/// A `[[plugin]]`; plugins that are not bundled get the kv capability (the test guest
/// counts connections in it) unless `extra` says otherwise.
fn plugin(name: &str, path: &str, extra: &str, config: &str) -> String {
    let grant = if path.starts_with("bundled:") || extra.contains("capabilities") {
        ""
    } else {
        "capabilities = [\"kv\"]\n"
    };
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{path}\"\n{grant}{extra}\n[plugin.config]\n{config}\n"
    )
}

const ACCEPT: &str = "[accept]\ndomains = [\"example.test\"]\n";

fn faults(s: &TestServer) -> u64 {
    s.server.metrics.faults()
}

#[tokio::test]
async fn misbehaving_guests_cost_one_reply_each() {
    // Each counted by its kind.
    let kinds = [
        ("panic", "trap"),
        ("loop", "deadline"),
        ("memory", "memory"),
        ("bad-reply", "bad_reply"),
    ];
    for (mode, kind) in kinds {
        let s = TestServer::start(&format!(
            "{ACCEPT}{}",
            plugin(
                "mb",
                &common::guest("misbehave"),
                "timeout = \"300ms\"\nmemory = \"16MiB\"\ncapabilities = []",
                &format!("mode = \"{mode}\"")
            )
        ))
        .await;
        let mut c = Client::connect(s.addr()).await;
        c.cmd("EHLO c", "250").await;
        // Another session, busy at the same time, never notices.
        let addr = s.addr();
        let bystander = tokio::spawn(async move {
            let mut b = Client::connect(addr).await;
            for _ in 0..5 {
                b.cmd("NOOP", "250").await;
            }
            b.cmd("EHLO bystander", "250").await;
        });
        c.cmd("MAIL FROM:<a@b.test>", "451 4.3.0").await;
        // The instance was dropped; the next call gets a fresh one (and fails again).
        c.cmd("MAIL FROM:<a@b.test>", "451 4.3.0").await;
        c.cmd("NOOP", "250").await;
        bystander.await.unwrap();
        assert_eq!(faults(&s), 2, "{mode}");
        assert_eq!(s.server.metrics.faults_of("mb", kind), 2, "{mode}");
        // Its connect hook asked for kv, which it is not granted (twice: both sessions):
        // refused and counted, and the hook went on.
        assert_eq!(s.server.metrics.faults_of("mb", "capability"), 2, "{mode}");
    }
}

#[tokio::test]
async fn on_error_continue_and_reject() {
    for (on_error, expect) in [("continue", "250"), ("reject", "554 5.3.0")] {
        let s = TestServer::start(&format!(
            "{ACCEPT}{}",
            plugin(
                "mb",
                &common::guest("misbehave"),
                &format!("on_error = \"{on_error}\""),
                "mode = \"panic\""
            )
        ))
        .await;
        let mut c = Client::connect(s.addr()).await;
        c.cmd("EHLO c", "250").await;
        c.cmd("MAIL FROM:<a@b.test>", expect).await;
    }
}

#[tokio::test]
async fn huge_header_change_is_a_fault() {
    let s = TestServer::start(&format!(
        "{ACCEPT}{}",
        plugin(
            "mb",
            &common::guest("misbehave"),
            "",
            "mode = \"huge-header\""
        )
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let reply = c
        .send_mail("a@b.test", &["u@example.test"], "Subject: x\r\n\r\nbody")
        .await;
    assert!(reply.starts_with("451 4.3.0"), "{reply}");
    assert!(s.spool_ids().is_empty());
}

#[tokio::test]
async fn every_verdict_and_change() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "{ACCEPT}{}{}",
        sink.config_route("*", "none"),
        plugin("mb", &common::guest("misbehave"), "", "mode = \"policy\"")
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO reject.test", "550 5.7.1 HELO refused by plugin")
        .await;
    c.cmd("MAIL FROM:<a@b.test>", "503").await;
    c.cmd("EHLO ok.test", "250").await;
    c.cmd("VRFY alice", "502 5.5.1 no VRFY for alice").await;
    c.cmd("MAIL FROM:<tempfail@b.test>", "451 4.7.1").await;
    c.cmd("MAIL FROM:<a@b.test>", "250").await;
    c.cmd("RCPT TO:<u@example.test>", "250").await;
    c.cmd(
        "RCPT TO:<blocked@example.test>",
        "550 5.1.1 blocked@example.test blocked by plugin after 1 accepted",
    )
    .await;
    c.cmd("RCPT TO:<removed@example.test>", "250").await;
    c.cmd("DATA", "354").await;
    c.send(b"Subject: normal\r\nX-Remove-Me: secret\r\n\r\nhello body\r\n.\r\n")
        .await;
    assert!(c.reply().await.starts_with("250"));
    let got = sink.wait_for(1).await;
    let text = got[0].text();
    assert!(text.contains("X-Misbehave: calls="), "{text}");
    assert!(text.contains("body=hello body"), "{text}");
    assert!(!text.contains("X-Remove-Me"), "{text}");
    let rcpts = got[0].rcpts.join(" ");
    assert!(
        rcpts.contains("added@example.test") && !rcpts.contains("removed@"),
        "{rcpts}"
    );
    // Data verdicts.
    for (subject, expect) in [
        ("reject me", "554 5.7.0"),
        ("discard me", "250"),
        ("quarantine me", "250"),
    ] {
        let reply = c
            .send_mail(
                "a@b.test",
                &["u@example.test"],
                &format!("Subject: {subject}\r\n\r\nx"),
            )
            .await;
        assert!(reply.starts_with(expect), "{subject}: {reply}");
    }
    // Only the quarantined message stays, held, with its reason.
    common::eventually("one held message", || s.spool_ids().len() == 1).await;
    let spool = s.spool();
    let (_, state) = spool.load_envelope(&spool.list()[0]).unwrap();
    assert!(
        state.held
            && state
                .hold_reason
                .as_deref()
                .unwrap_or("")
                .contains("looks odd"),
        "{state:?}"
    );
    assert_eq!(sink.count(), 1);
    // A disconnect verdict: 421 and the connection closes.
    let mut d = Client::connect(s.addr()).await;
    d.cmd("EHLO bye.test", "421 4.7.0 go away").await;
    assert!(d.closed().await);
    assert_eq!(faults(&s), 0);
}

#[tokio::test]
async fn bundled_size_limit_and_vrfy_guard() {
    let s = TestServer::start(&format!(
        "{ACCEPT}{}{}",
        plugin("guard", "bundled:vrfy-expn-guard", "", ""),
        plugin("size", "bundled:size-limit", "", "max_size = \"1KiB\"")
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("VRFY root", "502 5.5.1").await;
    c.cmd("EXPN all", "502 5.5.1").await;
    c.cmd("MAIL FROM:<a@b.test> SIZE=5000", "552 5.3.4").await;
    let reply = c
        .send_mail(
            "a@b.test",
            &["u@example.test"],
            &format!("Subject: big\r\n\r\n{}", "x".repeat(3000)),
        )
        .await;
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    let reply = c
        .send_mail("a@b.test", &["u@example.test"], "Subject: small\r\n\r\nx")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
}

#[tokio::test]
async fn bundled_greylist_defers_then_passes() {
    let s = TestServer::start(&format!(
        "{ACCEPT}{}",
        // The plugin keeps whole seconds: with 2s, a retry right after the first try is
        // early even when a second boundary falls between them.
        plugin("grey", "bundled:greylist", "", "delay = \"2s\"")
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<a@b.test>", "250").await;
    c.cmd("RCPT TO:<u@example.test>", "451 4.7.1").await;
    c.cmd("RCPT TO:<u@example.test>", "451 4.7.1").await;
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    c.cmd("RCPT TO:<u@example.test>", "250").await;
    // Another triplet is still new.
    c.cmd("RCPT TO:<v@example.test>", "451 4.7.1").await;
}

#[tokio::test]
async fn bundled_rate_limit_counts_across_sessions() {
    let s = TestServer::start(&format!(
        "{ACCEPT}{}",
        plugin(
            "rate",
            "bundled:rate-limit",
            "",
            "max_messages = 2\nwindow = \"1h\""
        )
    ))
    .await;
    for expect in ["250", "250", "451 4.7.0"] {
        let mut c = Client::connect(s.addr()).await;
        c.cmd("EHLO c", "250").await;
        c.cmd("MAIL FROM:<a@b.test>", expect).await;
    }
}

#[tokio::test]
async fn bundled_spam_score_with_a_dnsbl() {
    // 127.0.0.1 is listed in bl.test; the DNS server is ours, on loopback.
    let dns = TestDns::start(&[("1.0.0.127.bl.test.", "127.0.0.2".parse().unwrap())]).await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "{ACCEPT}[dns]\nnameservers = [\"{}\"]\n{}{}",
        dns.addr,
        sink.config_route("*", "none"),
        plugin(
            "spam",
            "bundled:spam-score",
            "",
            "dnsbl = [\"bl.test\", \"clean.test\"]\ndnsbl_score = 4.0\nreject_above = 6.0"
        )
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    // Listed (4.0) plus two missing headers (2.0): 6.0, not above 6.0.
    let reply = c
        .send_mail("a@b.test", &["u@example.test"], "Subject: hello\r\n\r\nhi")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let text = sink.wait_for(1).await[0].text();
    assert!(text.contains("X-Spam-Score: 6.0"), "{text}");
    assert!(
        text.contains("DNSBL(bl.test)") && !text.contains("DNSBL(clean.test)"),
        "{text}"
    );
    // One spam word more tips it over.
    let reply = c
        .send_mail(
            "a@b.test",
            &["u@example.test"],
            "Subject: hello\r\n\r\nbitcoin",
        )
        .await;
    assert!(reply.starts_with("550 5.7.1"), "{reply}");
    // Both zones were asked (later answers may come from the resolver's cache).
    assert!(dns.queries.load(Ordering::SeqCst) >= 2);
    // Two lookups a message, each timed.
    let calls = r#"wasmtp_plugin_host_call_seconds_count{plugin="spam",call="dns"}"#;
    assert_eq!(s.metric(calls), 4.0);
}

#[tokio::test]
async fn compiled_plugins_are_cached_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "hostname = \"mx.test\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n[spool]\npath = \"{}/spool\"\n{}",
        dir.path().display(),
        plugin("guard", "bundled:vrfy-expn-guard", "", "")
    );
    let first = wasmtp::server::Server::start(wasmtp::config::Config::parse("t", &config).unwrap())
        .await
        .unwrap();
    first.shutdown(std::time::Duration::from_secs(5)).await;
    let cache = dir.path().join("spool/plugin-cache");
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let modified = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    let second =
        wasmtp::server::Server::start(wasmtp::config::Config::parse("t", &config).unwrap())
            .await
            .unwrap();
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        modified,
        "recompiled"
    );
    let mut c = Client::connect(second.listen_addrs[0]).await;
    c.cmd("VRFY x", "502").await;
}

#[test]
fn check_config_names_the_failing_plugin() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.wasm"), b"\0asm not really").unwrap();
    for (path, config, expect) in [
        (
            common::guest("misbehave"),
            "mode = \"bad-config\"",
            "init refused its config: mode bad-config is refused on purpose",
        ),
        (common::guest("misbehave"), "mode = \"slow-init\"", "init"),
        (
            dir.path().join("junk.wasm").display().to_string(),
            "",
            "not a valid plugin component",
        ),
    ] {
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            format!(
                "hostname = \"mx.test\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n[spool]\npath = \"{}/spool\"\n{}",
                dir.path().display(),
                plugin("bad", &path, "timeout = \"300ms\"", config)
            ),
        )
        .unwrap();
        let out = std::process::Command::new(common::BIN)
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("plugin[0] (bad)") && err.contains(expect),
            "{expect}: {err}"
        );
    }
}

#[tokio::test]
async fn plugins_run_in_config_order_and_accept_ends_the_chain() {
    // The guard (reply = 252) accepts VRFY, so misbehave, which would refuse it, is not asked.
    let accept_first = TestServer::start(&format!(
        "{}{}",
        plugin("guard", "bundled:vrfy-expn-guard", "", "reply = 252"),
        plugin("mb", &common::guest("misbehave"), "", "mode = \"policy\"")
    ))
    .await;
    let mut c = Client::connect(accept_first.addr()).await;
    c.cmd("VRFY alice", "252 2.5.0").await;
    // In the other order the refusal comes first.
    let refuse_first = TestServer::start(&format!(
        "{}{}",
        plugin("mb", &common::guest("misbehave"), "", "mode = \"policy\""),
        plugin("guard", "bundled:vrfy-expn-guard", "", "reply = 252")
    ))
    .await;
    let mut c = Client::connect(refuse_first.addr()).await;
    c.cmd("VRFY alice", "502 5.5.1 no VRFY for alice").await;
}

/// A component built against the frozen 0.2.0 contract (tests/guests/contract-0-2-0, no SDK)
/// loads into this 0.2.2 server and works: its helo verdict and its data change both apply.
#[tokio::test]
async fn components_of_the_0_2_0_contract_keep_loading() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "{ACCEPT}{}{}",
        sink.config_route("*", "none"),
        plugin(
            "old",
            &common::guest("contract_0_2_0"),
            "capabilities = [\"kv\"]",
            ""
        )
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO old.test", "550 5.7.1 refused by a 0.2.0 plugin")
        .await;
    // Its kv calls reach the same store as 0.2.2's `store`.
    c.cmd("EHLO count.test", "550 5.7.1 count 1").await;
    c.cmd("EHLO count.test", "550 5.7.1 count 2").await;
    c.cmd("EHLO new.test", "250").await;
    let reply = c
        .send_mail("a@b.test", &["u@example.test"], "Subject: hi\r\n\r\nhello")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let text = sink.wait_for(1).await[0].text();
    assert!(text.contains("X-Contract: 0.2.0 size="), "{text}");
}
