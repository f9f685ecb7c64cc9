//! Trying and containing plugins through a real socket: `shadow = true` runs a plugin and
//! counts its verdicts (and faults) without applying any; the crash-loop breaker switches a
//! plugin that faults `breaker_faults` times in a row at a hook off for `breaker_cooldown`
//! (its `on_error` answers without a call), then tries one call.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};
use std::time::Duration;
use wasmtp::metrics::{Plugin, PluginVerdict};

const ACCEPT: &str = "[accept]\ndomains = [\"example.test\"]\n";

fn plugin(name: &str, extra: &str) -> String {
    format!(
        "[[plugin]]\nname = \"{name}\"\npath = \"{}\"\n{extra}\n",
        common::guest("misbehave")
    )
}

#[tokio::test]
async fn a_shadow_plugin_is_counted_not_obeyed() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "{ACCEPT}{}{}{}",
        sink.config_route("*", "none"),
        plugin("judge", "shadow = true"),
        plugin(
            "crasher",
            "shadow = true\n[plugin.config]\nmode = \"panic\""
        ),
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c.test", "250").await;
    // The judge refuses it and the crasher panics at MAIL: neither is applied.
    let reply = c
        .send_mail(
            "a@b.test",
            &["u@example.test"],
            "Subject: reject me\r\n\r\nx",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(1).await;
    // Nor are the judge's changes (its field, its added recipient).
    assert!(!got[0].text().contains("X-Misbehave"), "{}", got[0].text());
    assert_eq!(got[0].rcpts.len(), 1, "{:?}", got[0].rcpts);
    let refused = PluginVerdict {
        plugin: "judge".into(),
        hook: "data",
        verdict: "refuse",
        shadow: true,
    };
    let m = &s.server.metrics;
    assert_eq!(m.plugin_verdicts_total.get_or_create(&refused).get(), 1);
    assert_eq!(m.faults(), 1, "the crasher's fault, counted");
}

/// A session of its own (a session's errors slow its later replies) up to MAIL: the
/// greeting when it is not 220 (the connect hook's answer), else MAIL's reply.
async fn mail(s: &TestServer) -> String {
    let mut c = Client::connect_raw(s.addr()).await;
    let greeting = c.reply().await;
    if !greeting.starts_with("220") {
        return greeting;
    }
    c.cmd("EHLO c.test", "250").await;
    c.send(b"MAIL FROM:<a@b.test>\r\n").await;
    c.reply().await
}

#[tokio::test]
async fn the_breaker_switches_a_crashing_plugin_off_then_tries_again() {
    let s = TestServer::start(&format!(
        "{ACCEPT}{}",
        plugin(
            "crasher",
            "breaker_faults = 3\nbreaker_cooldown = \"1s\"\n[plugin.config]\nmode = \"panic\""
        ),
    ))
    .await;
    let m = &s.server.metrics;
    // Three faults in a row at MAIL, each answered per on_error (tempfail).
    for n in 1..=3 {
        assert!(mail(&s).await.starts_with("451 4.3.0"));
        assert_eq!(m.faults(), n);
    }
    let opened = Plugin {
        plugin: "crasher".into(),
    };
    assert_eq!(
        m.plugin_breaker_opened_total.get_or_create(&opened).get(),
        1
    );
    // Switched off: on_error answers without a call, from the connect hook on.
    for _ in 0..3 {
        assert!(mail(&s).await.starts_with("451 4.3.0"));
    }
    assert_eq!(m.faults(), 3, "no call while switched off");
    // After the cooldown one call is tried: the connect hook's, which works, so the
    // plugin is back; MAIL faults again, and three in a row switch it off again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for n in 4..=6 {
        assert!(mail(&s).await.starts_with("451 4.3.0"));
        assert_eq!(m.faults(), n);
    }
    assert_eq!(
        m.plugin_breaker_opened_total.get_or_create(&opened).get(),
        2
    );
    let greeting = mail(&s).await;
    assert!(greeting.starts_with("451 4.3.0"), "{greeting}");
    assert_eq!(m.faults(), 6, "no call while switched off");
}
