//! `wasmtp queue` against a running server: list (text and JSON), hold, flush, release,
//! remove, with a next hop that comes up during the test.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{BIN, Client, Process};
use std::path::Path;
use std::process::Command;

fn queue(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ids(config: &Path) -> Vec<String> {
    let (_, out, _) = queue(config, &["list"]);
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
    common::eventually("three deferred messages", || {
        let (_, out, _) = queue(&config, &["list"]);
        out.lines().count() == 3
            && out
                .lines()
                .all(|l| l.contains(" deferred (451 4.4.4 connect to"))
    })
    .await;
    let listed = ids(&config);
    let (code, json, _) = queue(&config, &["list", "--json"]);
    assert_eq!(code, 0);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["sender"], "s@c.test");
    assert_eq!(first["recipients"][0]["state"], "deferred");
    assert!(first["size"].as_u64().unwrap() > 0);

    // Hold the first, remove the third, then bring the next hop up and flush.
    assert_eq!(queue(&config, &["hold", &listed[0]]).0, 0);
    assert!(
        queue(&config, &["list"])
            .1
            .lines()
            .next()
            .unwrap()
            .contains("held")
    );
    assert_eq!(queue(&config, &["remove", &listed[2]]).0, 0);
    let sink = Sink::start_on(&format!("127.0.0.1:{hop}"), SinkOptions::default()).await;
    let (code, out, _) = queue(&config, &["flush"]);
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
    common::eventually("only the held one left", || {
        ids(&config) == vec![listed[0].clone()]
    })
    .await;

    // Release: it goes out too; the removed one never does.
    assert_eq!(queue(&config, &["release", &listed[0]]).0, 0);
    sink.wait_for(2).await;
    common::eventually("an empty queue", || ids(&config).is_empty()).await;
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
    let (code, _, err) = queue(&config, &["remove", "NOSUCHID"]);
    assert_eq!(code, 1);
    assert!(err.contains("no message NOSUCHID in the queue"), "{err}");
    let (code, _, err) = queue(&config, &["hold", "../etc"]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a queue id"), "{err}");
}
