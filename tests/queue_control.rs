//! The queue has one writer: `wasmtp queue` asks the running server, which applies each
//! change in the message's own task. No duplicate deliveries whatever the order of
//! hold/release/flush, `release` only releases held mail, and an ETRN storm is one run.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{Client, TestServer, queue_cli};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A config file that points `wasmtp queue` at the test server's spool.
fn cli_config(s: &TestServer) -> PathBuf {
    let path = s.dir.path().join("cli.toml");
    std::fs::write(
        &path,
        format!(
            "[spool]\npath = \"{}\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n",
            s.dir.path().join("spool").display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn hold_release_flush_deliver_exactly_once() {
    let hop = common::free_port();
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n[delivery]\nretry = [\"1h\"]\n\
         [[route]]\ndomain = \"*\"\nto = \"smtp:127.0.0.1:{hop}\"\ntls = \"none\"\n"
    ))
    .await;
    let cli = cli_config(&s);
    s.send_one(&["u@example.test"], "once").await;
    common::eventually("a deferral", || s.deferrals() > 0).await;
    let id = s.spool_ids().pop().unwrap();
    let sink = Sink::start_on(&format!("127.0.0.1:{hop}"), SinkOptions::default()).await;
    // Not held: release refuses, and does not start a second delivery.
    let (code, _, err) = queue_cli(&cli, &["release", &id]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not held"), "{err}");
    assert_eq!(queue_cli(&cli, &["hold", &id]).await.0, 0);
    let (_, list, _) = queue_cli(&cli, &["list"]).await;
    assert!(list.contains("held"), "{list}");
    let (code, out, err) = queue_cli(&cli, &["release", &id]).await;
    assert_eq!(
        (code, out.trim()),
        (0, format!("released {id}").as_str()),
        "{err}"
    );
    assert_eq!(queue_cli(&cli, &["flush"]).await.0, 0);
    sink.wait_for(1).await;
    common::eventually("an empty queue", || s.spool_ids().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sink.count(), 1, "delivered twice");
    // Gone: every command says so.
    let (code, _, err) = queue_cli(&cli, &["hold", &id]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no message"), "{err}");
}

#[tokio::test]
async fn an_etrn_storm_is_one_queue_run() {
    // A next hop that is always busy, counting the attempts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hop = listener.local_addr().unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    let _busy = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = tcp.write_all(b"421 4.3.2 busy\r\n").await;
        }
    });
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n[relay]\nnetworks = [\"127.0.0.1\"]\n\
         [delivery]\nretry = [\"1h\"]\n\
         [[route]]\ndomain = \"*\"\nto = \"smtp:{hop}\"\ntls = \"none\"\n"
    ))
    .await;
    let mut c = s.send_one(&["u@example.test"], "storm").await;
    common::eventually("a deferral", || s.deferrals() > 0).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    c.send("ETRN example.test\r\n".repeat(3000).as_bytes())
        .await;
    for _ in 0..3000 {
        let reply = c.reply().await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = attempts.load(Ordering::SeqCst);
    assert!(n <= 2, "{n} delivery attempts for one message");
    // A later ETRN is a new run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.cmd("ETRN example.test", "250").await;
    common::eventually("one more attempt", || {
        attempts.load(Ordering::SeqCst) == n + 1
    })
    .await;
}

#[tokio::test]
async fn one_server_per_spool() {
    let s = TestServer::start("").await;
    let config =
        wasmtp::config::Config::parse("second", &common::base_config(s.dir.path(), "")).unwrap();
    let Err(e) = wasmtp::server::Server::start(config).await else {
        panic!("a second server started on the same spool");
    };
    assert!(e.to_string().contains("another wasmtp server"), "{e}");
    let _ = Client::connect(s.addr()).await;
}

#[tokio::test]
async fn quarantined_mail_is_released_by_the_running_server() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n{}\
         [[plugin]]\nname = \"mb\"\npath = \"{}/misbehave.wasm\"\ncapabilities = [\"kv\"]\n\
         [plugin.config]\nmode = \"policy\"\n",
        sink.config_route("*", "none"),
        env!("WASMTP_PLUGIN_DIR")
    ))
    .await;
    let cli = cli_config(&s);
    s.send_one(&["u@example.test"], "quarantine me").await;
    let id = s.spool_ids().pop().unwrap();
    let (_, list, _) = queue_cli(&cli, &["list"]).await;
    assert!(list.contains("[held: looks odd]"), "{list}");
    let (code, out, err) = queue_cli(&cli, &["release", &id]).await;
    assert_eq!(code, 0, "{out}{err}");
    sink.wait_for(1).await;
    common::eventually("an empty queue", || s.spool_ids().is_empty()).await;
}
