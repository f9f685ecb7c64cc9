//! kill -9 at any moment after a 250 loses nothing: the binary is killed while sessions are
//! sending, restarted, and every acknowledged message reaches the next hop.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{Client, Process};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn kill_9_after_250_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let hop = common::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.path().join("wasmtp.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n[spool]\npath = \"spool\"\n\
             [accept]\ndomains = [\"example.test\"]\n[delivery]\nretry = [\"1s\"]\n\
             [[route]]\ndomain = \"*\"\nto = \"smtp:127.0.0.1:{hop}\"\ntls = \"none\"\n"
        ),
    )
    .unwrap();
    // Phase 1: the next hop is down, so everything acknowledged is only in the spool.
    let server = Process::serve(&config, dir.path(), addr).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let acked = acked.clone();
        senders.spawn(async move {
            let mut c = Client::connect(addr).await;
            c.cmd("EHLO load.test", "250").await;
            for n in 0.. {
                let token = format!("w{worker}n{n}");
                // The server may die at any moment: stop at the first broken exchange.
                let sent = tokio::spawn(async move {
                    let reply = c
                        .send_mail(
                            "s@load.test",
                            &["u@example.test"],
                            &format!("Subject: {token}\r\n\r\nbody"),
                        )
                        .await;
                    (c, token, reply)
                })
                .await;
                let Ok((client, token, reply)) = sent else {
                    return;
                };
                assert!(reply.starts_with("250"), "{reply}");
                acked.lock().unwrap().insert(token);
                c = client;
            }
        });
    }
    common::eventually("40 acknowledged messages", || {
        acked.lock().unwrap().len() >= 40
    })
    .await;
    server.signal("KILL");
    assert_eq!(server.wait().await, None, "not killed by a signal");
    while senders.join_next().await.is_some() {}
    let acked = acked.lock().unwrap().clone();
    // Phase 2: the next hop comes up, the server restarts and recovers its spool.
    let sink = Sink::start_on(&format!("127.0.0.1:{hop}"), SinkOptions::default()).await;
    let _server = Process::serve(&config, dir.path(), addr).await;
    common::eventually("every acknowledged message at the next hop", || {
        let got: BTreeSet<String> = sink
            .messages
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| {
                Some(
                    m.text()
                        .split("Subject: ")
                        .nth(1)?
                        .split("\r\n")
                        .next()?
                        .to_string(),
                )
            })
            .collect();
        acked.is_subset(&got)
    })
    .await;
}
