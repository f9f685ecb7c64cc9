//! `bundled:rspamd` against a real Rspamd (Debian's package) started by the test: GTUBE is
//! refused with Rspamd's message, clean mail passes with the X-Spam fields, the test
//! patterns drive `add header` and `rewrite subject`, a stopped Rspamd gives the `on_error`
//! answer, a URL outside `http_allow` is refused to the guest, and after the queue GTUBE
//! bounces with a report and never reaches the next hop.

mod common;
use common::rspamd::{GTUBE, Rspamd};
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};

/// A gateway relaying to `sink` with the rspamd plugin; `extra` goes in its `[[plugin]]`.
async fn gateway(rspamd: &Rspamd, sink: &Sink, extra: &str) -> TestServer {
    TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n{}\
         [[plugin]]\nname = \"rspamd\"\npath = \"bundled:rspamd\"\ntimeout = \"10s\"\n{extra}\n\
         [plugin.config]\nurl = \"http://{}\"\ntimeout = \"5s\"\n",
        sink.config_route("*", "none"),
        rspamd.addr
    ))
    .await
}

/// Rspamd, a sink, and a gateway between them with `extra` in its `[[plugin]]`.
async fn start(extra: &str) -> (Rspamd, Sink, TestServer) {
    let rspamd = Rspamd::start().await;
    let sink = Sink::start(SinkOptions::default()).await;
    let s = gateway(&rspamd, &sink, extra).await;
    (rspamd, sink, s)
}

fn message(subject: &str, body: &str) -> String {
    format!(
        "From: Alice <alice@sender.example>\r\nTo: Bob <bob@example.test>\r\nSubject: {subject}\r\n\
         Date: Wed, 02 Dec 2026 12:00:00 +0000\r\nMessage-ID: <{subject}@sender.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nX-Spam-Score: -100.00\r\n\r\n{body}\r\n"
    )
}

/// A text part long enough for Rspamd to look for the pattern in.
fn with_pattern(pattern: &str) -> String {
    format!("This message carries a test pattern.\r\n\r\n{pattern}\r\n")
}

async fn send(s: &TestServer, content: &str) -> String {
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO client.example", "250").await;
    c.send_mail("alice@sender.example", &["bob@example.test"], content)
        .await
}

/// Sends a message with the GTUBE variant starting with `first`, which must be accepted;
/// the text of the `n`th message at the sink.
async fn delivered(s: &TestServer, sink: &Sink, subject: &str, first: char, n: usize) -> String {
    let pattern = format!("{first}{}", &GTUBE[1..]);
    let reply = send(s, &message(subject, &with_pattern(&pattern))).await;
    assert!(reply.starts_with("250"), "{reply}");
    sink.wait_for(n).await[n - 1].text()
}

#[tokio::test]
async fn gtube_is_refused_and_clean_mail_passes_with_the_spam_fields() {
    let (_rspamd, sink, s) = start("").await;

    let reply = send(&s, &message("gtube", &with_pattern(GTUBE))).await;
    assert_eq!(reply, "550 5.7.1 Gtube pattern");

    let reply = send(&s, &message("clean", "Hello Bob,\r\n\r\nJust checking in about the meeting tomorrow at ten. Let me know if that\r\nstill works for you.\r\n\r\nRegards,\r\nAlice")).await;
    assert!(reply.starts_with("250"), "{reply}");
    let text = sink.wait_for(1).await[0].text();
    assert!(text.contains("\r\nX-Spam-Status: No, score="), "{text}");
    assert!(text.contains("action=no action"), "{text}");
    assert!(text.contains("\r\nX-Spam-Score: "), "{text}");
    // The sender's own X-Spam-Score is not passed on.
    assert!(!text.contains("X-Spam-Score: -100.00"), "{text}");
    // Each scan one HTTP call, timed by plugin and capability.
    let calls = r#"wasmtp_plugin_host_call_seconds_count{plugin="rspamd",call="http"}"#;
    assert_eq!(s.metric(calls), 2.0);

    // The test patterns for `add header` and `rewrite subject` (enable_test_patterns).
    let text = delivered(&s, &sink, "marked", 'Y', 2).await;
    assert!(text.contains("\r\nX-Spam: Yes\r\n"), "{text}");
    assert!(text.contains("\r\nX-Spam-Status: Yes, score="), "{text}");
    let text = delivered(&s, &sink, "rewritten", 'Z', 3).await;
    assert!(
        text.contains("\r\nSubject: *** SPAM *** rewritten\r\n"),
        "{text}"
    );
    assert!(!text.contains("\r\nSubject: rewritten\r\n"), "{text}");
}

#[tokio::test]
async fn a_stopped_rspamd_gives_the_on_error_answer() {
    let mut rspamd = Rspamd::start().await;
    let sink = Sink::start(SinkOptions::default()).await;
    let tempfail = gateway(&rspamd, &sink, "").await;
    let deliver = gateway(&rspamd, &sink, "on_error = \"continue\"").await;
    rspamd.stop();

    let reply = send(&tempfail, &message("down", "hello")).await;
    assert_eq!(reply, "451 4.3.0 spam scanner unavailable");
    let reply = send(&deliver, &message("down", "hello")).await;
    assert!(reply.starts_with("250"), "{reply}");
    let text = sink.wait_for(1).await[0].text();
    assert!(!text.contains("X-Spam-Status"), "{text}");
}

#[tokio::test]
async fn a_url_outside_http_allow_is_refused_to_the_guest() {
    let (_rspamd, _sink, s) = start("http_allow = [\"http://127.0.0.1:1/\"]").await;
    let reply = send(&s, &message("gtube", &with_pattern(GTUBE))).await;
    assert_eq!(reply, "451 4.3.0 spam scanner unavailable");
    // Counted as a capability fault, and never timed as a call made.
    let refused = r#"wasmtp_plugin_faults_total{plugin="rspamd",kind="capability"}"#;
    assert_eq!(s.metric(refused), 1.0);
    let calls = r#"wasmtp_plugin_host_call_seconds_count{plugin="rspamd",call="http"}"#;
    assert_eq!(s.metric(calls), 0.0);
}

/// The JavaScript example (`examples/js-plugin/rspamd.js`, fetch() through the capability)
/// with Rspamd at `url`, allowed to call `allow`.
async fn js_gateway(url: &str, allow: &str, sink: &Sink) -> TestServer {
    TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n{}\
         [[plugin]]\nname = \"js-rspamd\"\npath = \"{}\"\ntimeout = \"10s\"\nmemory = \"128MiB\"\n\
         capabilities = [\"http\"]\nhttp_allow = [\"{allow}\"]\n\
         [plugin.config]\nurl = \"{url}\"\n",
        sink.config_route("*", "none"),
        common::example("js-rspamd"),
    ))
    .await
}

#[tokio::test]
async fn the_javascript_example_asks_rspamd_with_fetch() {
    let mut rspamd = Rspamd::start().await;
    let sink = Sink::start(SinkOptions::default()).await;
    let url = format!("http://{}", rspamd.addr);
    let s = js_gateway(&url, &url, &sink).await;

    let reply = send(&s, &message("gtube", &with_pattern(GTUBE))).await;
    assert_eq!(reply, "550 5.7.1 Gtube pattern");
    let text = delivered(&s, &sink, "marked", 'Y', 1).await;
    assert!(text.contains("\r\nX-Spam: Yes\r\n"), "{text}");
    assert!(text.contains("\r\nX-Spam-Score: "), "{text}");
    assert!(!text.contains("X-Spam-Score: -100.00"), "{text}");
    // fetch() through the same capability: each scan one HTTP call, timed.
    let calls = r#"wasmtp_plugin_host_call_seconds_count{plugin="js-rspamd",call="http"}"#;
    assert_eq!(s.metric(calls), 2.0);

    // Outside http_allow: the fetch fails in the guest, which answers per on_error.
    let denied = js_gateway(&url, "http://127.0.0.1:1/", &sink).await;
    let reply = send(&denied, &message("gtube", &with_pattern(GTUBE))).await;
    assert_eq!(reply, "451 4.3.0 spam scanner unavailable");

    rspamd.stop();
    let reply = send(&s, &message("down", "hello")).await;
    assert_eq!(reply, "451 4.3.0 spam scanner unavailable");
}

#[tokio::test]
async fn gtube_after_the_queue_bounces_with_a_report_and_never_reaches_the_next_hop() {
    let (_rspamd, sink, s) = start("mode = \"after-queue\"").await;
    // Accepted first: Rspamd is asked after the 250.
    let reply = send(&s, &message("gtube", &with_pattern(GTUBE))).await;
    assert!(reply.starts_with("250"), "{reply}");
    let reply = send(
        &s,
        &message("clean", "Hello Bob,\r\n\r\nSee you at ten.\r\n"),
    )
    .await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(2).await;
    common::eventually("the spool emptied", || s.spool_ids().is_empty()).await;
    let reports = sink.reports();
    assert_eq!(reports.len(), 1, "{got:?}");
    assert_eq!(reports[0].rcpts, ["RCPT TO:<alice@sender.example>"]);
    let report = reports[0].text();
    assert!(report.contains("Status: 5.7.1"), "{report}");
    assert!(report.contains("Gtube pattern"), "{report}");
    let delivered: Vec<String> = sink
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|m| !m.mail.starts_with("MAIL FROM:<>"))
        .map(|m| m.text())
        .collect();
    assert_eq!(delivered.len(), 1);
    assert!(delivered[0].contains("Subject: clean"), "{}", delivered[0]);
    assert!(
        delivered[0].contains("X-Spam-Status: No, score="),
        "{}",
        delivered[0]
    );
}
