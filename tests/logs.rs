//! The logs, from the binary as an operator runs it: `WASMTP_LOG_FORMAT=json` writes one
//! JSON object a line, each line of a session with its session id (and, from DATA, its
//! queue id), each line of a delivery with the queue id; a transaction ends with one
//! summary line (client, HELO, envelope, size, queue id, results, reply, duration) and a
//! delivered recipient's line names the route as configured, the next hop, the delay and
//! the attempt. The text format has the
//! same, without Rust's `Debug` forms.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{Client, Process};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;

/// Runs the gateway in `dir` with `format` (`json` or text), one accepted and one
/// refused transaction, until the accepted one is delivered; the log it wrote.
async fn run(dir: &Path, format: Option<&str>) -> (String, Sink) {
    let sink = Sink::start(SinkOptions::default()).await;
    let port = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n[spool]\npath = \"spool\"\n\
             [accept]\ndomains = [\"example.test\"]\n[authentication]\nverify = false\n\
             [limits]\nmessage_size = \"1KiB\"\n{}",
            sink.config_route("*", "none")
        ),
    )
    .unwrap();
    let log = dir.join("server.log");
    let mut command = std::process::Command::new(common::BIN);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir)
        .env("WASMTP_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    if let Some(format) = format {
        command.env("WASMTP_LOG_FORMAT", format);
    }
    let server = Process {
        child: command.spawn().unwrap(),
        addr,
    };
    server.wait_ready().await;
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO client.test", "250").await;
    let ok = c
        .send_mail(
            "a@sender.test",
            &["u@example.test"],
            "Subject: logged\r\n\r\nx",
        )
        .await;
    assert!(ok.starts_with("250"), "{ok}");
    let big = format!("Subject: big\r\n\r\n{}", "x".repeat(2048));
    let refused = c
        .send_mail("b@sender.test", &["v@example.test"], &big)
        .await;
    assert!(refused.starts_with("552"), "{refused}");
    c.cmd("QUIT", "221").await;
    sink.wait_for(1).await;
    common::eventually("the delivery logged", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("delivered"))
    })
    .await;
    server.signal("TERM");
    server.wait().await;
    (std::fs::read_to_string(&log).unwrap(), sink)
}

/// The span named `name` a JSON line belongs to.
fn span<'a>(line: &'a Value, name: &str) -> &'a Value {
    let spans = line["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("no spans: {line}"));
    spans
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} span: {line}"))
}

#[tokio::test]
async fn json_lines_with_session_and_queue_ids_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let (log, sink) = run(dir.path(), Some("json")).await;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summaries: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "transaction")
        .collect();
    assert_eq!(summaries.len(), 2, "{log}");
    let (ok, refused) = (summaries[0], summaries[1]);
    let f = &ok["fields"];
    assert_eq!(f["outcome"], "accepted");
    assert_eq!(f["from"], "a@sender.test");
    assert_eq!(f["to"], "u@example.test");
    assert_eq!(f["helo"], "client.test");
    assert!(f["reply"].as_str().unwrap().starts_with("250 2.0.0"), "{f}");
    assert!(
        f["size"].as_u64().unwrap() > 0 && f["duration_ms"].is_u64(),
        "{f}"
    );
    let queue_id = f["queue_id"].as_str().unwrap().to_string();
    assert!(!queue_id.is_empty(), "{f}");
    assert_eq!(refused["fields"]["outcome"], "refused");
    assert!(
        refused["fields"]["reply"]
            .as_str()
            .unwrap()
            .starts_with("552")
    );
    // The session's id and client on its lines, and the queue id from DATA on.
    let session = span(ok, "session")["session"]
        .as_str()
        .expect("a session id");
    assert_eq!(span(refused, "session")["session"], session);
    let client = span(ok, "session")["client"].as_str().unwrap();
    assert!(client.starts_with("127.0.0.1:"), "{ok}");
    assert_eq!(span(ok, "transaction")["queue_id"], queue_id.as_str());
    // The delivery's lines carry the queue id; the route is written as configured.
    let delivered = lines
        .iter()
        .find(|l| l["fields"]["message"] == "delivered")
        .expect("a delivered line");
    assert_eq!(span(delivered, "delivery")["queue_id"], queue_id.as_str());
    let target = sink.smtp_target();
    assert_eq!(delivered["fields"]["route"], target.as_str());
    // Like Postfix's status line: the next hop that answered, the delay, the attempt.
    assert_eq!(delivered["fields"]["relay"], "127.0.0.1");
    assert!(delivered["fields"]["delay_s"].is_i64(), "{delivered}");
    assert_eq!(delivered["fields"]["attempt"], 1);
}

#[tokio::test]
async fn text_lines_without_debug_forms() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = run(dir.path(), None).await;
    let summary = log
        .lines()
        .find(|l| l.contains(" transaction ") || l.ends_with(" transaction"))
        .unwrap_or_else(|| panic!("no summary line in {log}"));
    assert!(
        summary.contains("outcome=\"accepted\"") || summary.contains("outcome=accepted"),
        "{summary}"
    );
    assert!(log.contains("route=smtp:127.0.0.1:"), "{log}");
    assert!(!log.contains("Smtp(") && !log.contains("Maildir("), "{log}");
}
