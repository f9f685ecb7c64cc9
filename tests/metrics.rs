//! `/metrics` and `/healthz` over real HTTP after real traffic: the exposition parsed by
//! the Prometheus project's own OpenMetrics parser (python3-prometheus-client), and each
//! family checked: connections and open sessions by listener, transactions by outcome and
//! reply class, message sizes, authentication results, plugin calls, verdicts and faults
//! by plugin, hook and kind, live instances and host calls by plugin, delivery attempts by
//! route and outcome, connections new and reused, deferrals by reason, spool syncs.

mod common;
use common::auth::PYTHON;
use common::dns::Zone;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer};
use serde_json::Value;
use std::net::SocketAddr;

async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// The exposition as the real parser reads it.
fn parse(text: &str) -> Value {
    use std::io::Write;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/common/openmetrics.py"
    );
    let mut child = std::process::Command::new(PYTHON)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (apt-get install python3-prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the parser refused it: {err}\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of `family`'s sample `name` whose labels include `labels`.
fn sample(m: &Value, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = m[family]["samples"]
        .as_array()
        .unwrap_or_else(|| panic!("no {family}"));
    samples
        .iter()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][k].as_str() == Some(v)))
        .and_then(|s| s[2].as_f64())
        .unwrap_or_else(|| panic!("no {name} {labels:?} in {}", m[family]))
}

#[tokio::test]
async fn every_family_after_real_traffic() {
    let dns = Zone::default()
        .txt("sender.test.", "v=spf1 ip4:127.0.0.1 -all")
        .start()
        .await;
    let sink = Sink::start(SinkOptions::default()).await;
    // A hop that takes no connection: what is routed there is deferred.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let plugins = format!(
        "[[plugin]]\nname = \"policy\"\npath = \"{0}\"\ncapabilities = [\"kv\"]\n\
         [[plugin]]\nname = \"broken\"\npath = \"{0}\"\non_error = \"continue\"\n\
         [plugin.config]\nmode = \"bad-reply\"\n",
        common::guest("misbehave")
    );
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\", \"dead.test\"]\n[dns]\nnameservers = [\"{}\"]\n\
         [authentication]\nverify = true\ntimeout = \"3s\"\n[metrics]\naddress = \"127.0.0.1:0\"\n\
         [[route]]\ndomain = \"dead.test\"\nto = \"smtp:{dead}\"\ntls = \"none\"\n{}{plugins}",
        dns.addr,
        sink.config_route("*", "none"),
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO client.sender.test", "250").await;
    // Delivered; refused at data by the policy plugin; a recipient it refuses.
    let ok = c
        .send_mail(
            "a@sender.test",
            &["u@example.test"],
            "Subject: fine\r\n\r\nx",
        )
        .await;
    assert!(ok.starts_with("250"), "{ok}");
    let refused = c
        .send_mail(
            "a@sender.test",
            &["u@example.test"],
            "Subject: reject me\r\n\r\nx",
        )
        .await;
    assert!(refused.starts_with("554"), "{refused}");
    let held = c
        .send_mail(
            "a@sender.test",
            &["u@example.test"],
            "Subject: quarantine me\r\n\r\nx",
        )
        .await;
    assert!(held.starts_with("250"), "{held}");
    c.cmd("MAIL FROM:<a@sender.test>", "250").await;
    c.cmd("RCPT TO:<blocked@example.test>", "550").await;
    sink.wait_for(1).await;
    // The policy plugin adds a recipient at data: two delivered.
    common::eventually("the deliveries", || s.deliveries() == 2).await;
    c.cmd("RSET", "250").await;
    // The next goes on the connection the first left idle.
    let again = c
        .send_mail(
            "a@sender.test",
            &["u@example.test"],
            "Subject: again\r\n\r\nx",
        )
        .await;
    assert!(again.starts_with("250"), "{again}");
    common::eventually("the deliveries", || s.deliveries() == 4).await;
    let dead_letter = c
        .send_mail("a@sender.test", &["u@dead.test"], "Subject: dead\r\n\r\nx")
        .await;
    assert!(dead_letter.starts_with("250"), "{dead_letter}");
    // Its recipient at dead.test is deferred, the one the policy plugin adds delivered.
    common::eventually("the deferral", || s.deferrals() >= 1).await;
    common::eventually("the deliveries", || s.deliveries() == 5).await;

    let addr = s.server.metrics_addr.expect("metrics bound");
    let (head, body) = get(addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    let m = parse(&body);
    let listener = s.addr().to_string();
    let l = ("listener", listener.as_str());
    assert_eq!(m["wasmtp_connections"]["type"], "counter");
    assert_eq!(
        sample(
            &m,
            "wasmtp_connections",
            "wasmtp_connections_total",
            &[l, ("outcome", "accepted")]
        ),
        1.0
    );
    // The session is still open.
    assert_eq!(m["wasmtp_open_connections"]["type"], "gauge");
    assert_eq!(
        sample(
            &m,
            "wasmtp_open_connections",
            "wasmtp_open_connections",
            &[l]
        ),
        1.0
    );
    let tx = "wasmtp_transactions_total";
    assert_eq!(
        sample(
            &m,
            "wasmtp_transactions",
            tx,
            &[("outcome", "accepted"), ("class", "2xx")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &m,
            "wasmtp_transactions",
            tx,
            &[("outcome", "refused"), ("class", "5xx")]
        ),
        1.0
    );
    let held = [("outcome", "held"), ("class", "2xx")];
    assert_eq!(sample(&m, "wasmtp_transactions", tx, &held), 1.0);
    assert_eq!(
        sample(
            &m,
            "wasmtp_recipients_refused",
            "wasmtp_recipients_refused_total",
            &[]
        ),
        1.0
    );
    assert_eq!(m["wasmtp_message_size_bytes"]["type"], "histogram");
    assert_eq!(
        sample(
            &m,
            "wasmtp_message_size_bytes",
            "wasmtp_message_size_bytes_count",
            &[]
        ),
        3.0
    );
    let auth = "wasmtp_auth_results_total";
    assert_eq!(
        sample(
            &m,
            "wasmtp_auth_results",
            auth,
            &[("method", "spf"), ("result", "pass")]
        ),
        5.0
    );
    assert_eq!(
        sample(
            &m,
            "wasmtp_auth_results",
            auth,
            &[("method", "dmarc"), ("result", "none")]
        ),
        5.0
    );
    // The policy plugin at MAIL six times; the broken one's bad reply is a fault, answered
    // per on_error.
    let calls = "wasmtp_plugin_call_seconds_count";
    let mail = [("plugin", "policy"), ("hook", "mail")];
    assert_eq!(m["wasmtp_plugin_call_seconds"]["type"], "histogram");
    assert_eq!(sample(&m, "wasmtp_plugin_call_seconds", calls, &mail), 6.0);
    let verdicts = "wasmtp_plugin_verdicts_total";
    let refused = [
        ("plugin", "policy"),
        ("hook", "data"),
        ("verdict", "refuse"),
    ];
    assert_eq!(
        sample(&m, "wasmtp_plugin_verdicts", verdicts, &refused),
        1.0
    );
    let faults = [("plugin", "broken"), ("kind", "bad_reply")];
    assert_eq!(
        sample(
            &m,
            "wasmtp_plugin_faults",
            "wasmtp_plugin_faults_total",
            &faults
        ),
        5.0
    );
    // Five in a row switched it off: the sixth MAIL did not call it.
    let opened = "wasmtp_plugin_breaker_opened";
    let broken = [("plugin", "broken")];
    let total = "wasmtp_plugin_breaker_opened_total";
    assert_eq!(sample(&m, opened, total, &broken), 1.0);
    // The policy plugin's instance lives with the session; its connect hook called kv once.
    let instances = "wasmtp_plugin_instances";
    assert_eq!(m[instances]["type"], "gauge");
    let policy = [("plugin", "policy")];
    assert_eq!(sample(&m, instances, instances, &policy), 1.0);
    let host_calls = "wasmtp_plugin_host_call_seconds";
    assert_eq!(m[host_calls]["type"], "histogram");
    let kv = [("plugin", "policy"), ("call", "kv")];
    let count = "wasmtp_plugin_host_call_seconds_count";
    assert_eq!(sample(&m, host_calls, count, &kv), 1.0);
    let target = sink.smtp_target();
    let attempts = [("route", target.as_str()), ("outcome", "delivered")];
    let name = "wasmtp_delivery_attempts_total";
    assert_eq!(sample(&m, "wasmtp_delivery_attempts", name, &attempts), 5.0);
    // The later messages went on the connection the first one opened.
    let conns = "wasmtp_delivery_connections";
    let total = "wasmtp_delivery_connections_total";
    assert_eq!(sample(&m, conns, total, &[("reused", "false")]), 1.0);
    assert_eq!(sample(&m, conns, total, &[("reused", "true")]), 2.0);
    let deferrals = [("reason", "connection")];
    let total = "wasmtp_deferrals_total";
    assert!(sample(&m, "wasmtp_deferrals", total, &deferrals) >= 1.0);
    // Each accepted message was made durable by a sync (a group may hold several).
    let sync = "wasmtp_spool_sync_seconds";
    assert_eq!(m[sync]["type"], "histogram");
    assert!(sample(&m, sync, "wasmtp_spool_sync_seconds_count", &[]) >= 1.0);
    let records = "wasmtp_spool_sync_records";
    assert!(sample(&m, records, "wasmtp_spool_sync_records_sum", &[]) >= 3.0);

    // The quarantined message waits in the queue, held.
    let queue = "wasmtp_queue_messages";
    assert_eq!(m[queue]["type"], "gauge");
    assert_eq!(sample(&m, queue, queue, &[("state", "held")]), 1.0);
    assert_eq!(sample(&m, queue, queue, &[("state", "delivering")]), 0.0);
    let oldest = "wasmtp_queue_oldest_seconds";
    assert!(sample(&m, oldest, oldest, &[]) >= 0.0);

    let (head, body) = get(addr, "/healthz").await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert_eq!(body, "ok\n");
    // The session's instances go with it.
    c.cmd("QUIT", "221").await;
    drop(c);
    for _ in 0..100 {
        let m = parse(&get(addr, "/metrics").await.1);
        if sample(&m, instances, instances, &policy) == 0.0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the policy plugin's instance outlived its session");
}

#[tokio::test]
async fn healthz_says_503_when_the_spool_cannot_take_mail() {
    // More free space asked for than any disk has: the spool takes no message.
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "hostname = \"mx.test\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
         [spool]\npath = \"{}/spool\"\nmin_free = \"1000000GiB\"\n\
         [authentication]\nverify = false\n[metrics]\naddress = \"127.0.0.1:0\"\n",
        dir.path().display()
    );
    let config = wasmtp::config::Config::parse("t", &toml).unwrap();
    let server = wasmtp::server::Server::start(config).await.unwrap();
    let addr = server.metrics_addr.expect("metrics bound");
    let (head, body) = get(addr, "/healthz").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(body, "unhealthy\n");
    let (head, _) = get(addr, "/nothing").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}
