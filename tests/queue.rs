//! `wasmtp queue` against a running server: list (text and JSON), hold, flush, release,
//! remove, with a next hop that comes up during the test.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{Client, Process, queue_cli};
use std::path::Path;

async fn ids(config: &Path) -> Vec<String> {
    let (_, out, _) = queue_cli(config, &["list"]).await;
    out.lines()
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn list_hold_flush_release_remove() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let hop = common::free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n[spool]\npath = \"{}/spool\"\n\
             [accept]\ndomains = [\"example.test\", \"other.test\"]\n[delivery]\nretry = [\"1h\"]\n\
             [[route]]\ndomain = \"*\"\nto = \"smtp:127.0.0.1:{hop}\"\ntls = \"none\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let _server = Process::serve(&config, dir.path(), addr).await;
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO c", "250").await;
    for (rcpt, subject) in [
        ("a@example.test", "first"),
        ("b@other.test", "second"),
        ("c@example.test", "third"),
    ] {
        let reply = c
            .send_mail("s@c.test", &[rcpt], &format!("Subject: {subject}\r\n\r\nx"))
            .await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    // The next hop is down: all three are deferred with the connection error.
    common::eventually_async("three deferred messages", || async {
        let (_, out, _) = queue_cli(&config, &["list"]).await;
        out.lines().count() == 3
            && out
                .lines()
                .all(|l| l.contains(" deferred (451 4.4.4 connect to"))
    })
    .await;
    let listed = ids(&config).await;
    let (code, json, _) = queue_cli(&config, &["list", "--json"]).await;
    assert_eq!(code, 0);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["sender"], "s@c.test");
    assert_eq!(first["recipients"][0]["state"], "deferred");
    assert!(first["size"].as_u64().unwrap() > 0);

    // Hold the first, remove the third, then bring the next hop up and flush.
    assert_eq!(queue_cli(&config, &["hold", &listed[0]]).await.0, 0);
    assert!(
        queue_cli(&config, &["list"])
            .await
            .1
            .lines()
            .next()
            .unwrap()
            .contains("held")
    );
    assert_eq!(queue_cli(&config, &["remove", &listed[2]]).await.0, 0);
    let sink = Sink::start_on(&format!("127.0.0.1:{hop}"), SinkOptions::default()).await;
    let (code, out, _) = queue_cli(&config, &["flush"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "flush requested for 1 message(s)\n")
    );
    let got = sink.wait_for(1).await;
    assert!(
        got[0].text().contains("Subject: second"),
        "{}",
        got[0].text()
    );
    common::eventually_async("only the held one left", || async {
        ids(&config).await == vec![listed[0].clone()]
    })
    .await;

    // Release: it goes out too; the removed one never does.
    assert_eq!(queue_cli(&config, &["release", &listed[0]]).await.0, 0);
    sink.wait_for(2).await;
    common::eventually_async("an empty queue", || async { ids(&config).await.is_empty() }).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let subjects: Vec<String> = sink
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.text())
        .collect();
    assert_eq!(subjects.len(), 2);
    assert!(!subjects.iter().any(|t| t.contains("Subject: third")));

    // Errors are one clear line and exit 1.
    let (code, _, err) = queue_cli(&config, &["remove", "NOSUCHID"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no message NOSUCHID in the queue"), "{err}");
    let (code, _, err) = queue_cli(&config, &["hold", "../etc"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("is not a queue id"), "{err}");
}
