//! kill -9 at any moment after a 250 loses nothing: the binary is killed while sessions are
//! sending (and, in the second test, while it delivers and reclaims spool segments),
//! restarted, and every acknowledged message reaches the next hop.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{Client, Process};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Sends from 8 sessions until the server dies; what was acknowledged goes into `acked`.
async fn load_until_killed(
    server: Process,
    addr: SocketAddr,
    acked: &Arc<Mutex<BTreeSet<String>>>,
    round: u32,
) {
    let before = acked.lock().unwrap().len();
    let mut senders = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let acked = acked.clone();
        senders.spawn(async move {
            let mut c = Client::connect(addr).await;
            c.cmd("EHLO load.test", "250").await;
            for n in 0.. {
                let token = format!("r{round}w{worker}n{n}");
                // The server may die at any moment: stop at the first broken exchange.
                let sent = tokio::spawn(async move {
                    let reply = c
                        .send_mail(
                            "s@load.test",
                            &["u@example.test"],
                            &format!("Subject: {token}\r\n\r\n{}\r\n", "body ".repeat(200)),
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
    common::eventually("40 more acknowledged messages", || {
        acked.lock().unwrap().len() >= before + 40
    })
    .await;
    server.signal("KILL");
    assert_eq!(server.wait().await, None, "not killed by a signal");
    while senders.join_next().await.is_some() {}
}

fn config(dir: &Path, addr: SocketAddr, hop: u16) -> PathBuf {
    let config = dir.join("wasmtp.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n\
             [spool]\npath = \"spool\"\nsegment_size = \"64KiB\"\n\
             [accept]\ndomains = [\"example.test\"]\n[delivery]\nretry = [\"1s\"]\n\
             [[route]]\ndomain = \"*\"\nto = \"smtp:127.0.0.1:{hop}\"\ntls = \"none\"\n"
        ),
    )
    .unwrap();
    config
}

/// Every acknowledged message reaches the sink (at least once: a delivery the crash cut
/// short before it was recorded is repeated).
async fn every_acknowledged_arrives(sink: &Sink, acked: &Arc<Mutex<BTreeSet<String>>>) {
    let acked = acked.lock().unwrap().clone();
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

/// A directory with the config, the server's address, and the next hop's port.
fn setup() -> (tempfile::TempDir, PathBuf, SocketAddr, u16) {
    let dir = tempfile::tempdir().unwrap();
    let hop = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let config = config(dir.path(), addr, hop);
    (dir, config, addr, hop)
}

#[tokio::test]
async fn kill_9_after_250_loses_nothing() {
    let (dir, config, addr, hop) = setup();
    // Phase 1: the next hop is down, so everything acknowledged is only in the spool.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let server = Process::serve(&config, dir.path(), addr).await;
    load_until_killed(server, addr, &acked, 0).await;
    // Phase 2: the next hop comes up, the server restarts and recovers its spool.
    let sink = Sink::start_on(&format!("127.0.0.1:{hop}"), SinkOptions::default()).await;
    let _server = Process::serve(&config, dir.path(), addr).await;
    every_acknowledged_arrives(&sink, &acked).await;
}

#[tokio::test]
async fn kill_9_while_delivering_and_reclaiming_loses_nothing() {
    // The next hop is up: messages are delivered, marked done, their segments (64 KiB)
    // rotated and removed while the server is killed, three times over.
    let (dir, config, addr, hop) = setup();
    let sink = Sink::start_on(&format!("127.0.0.1:{hop}"), SinkOptions::default()).await;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    for round in 0..3 {
        let server = Process::serve(&config, dir.path(), addr).await;
        load_until_killed(server, addr, &acked, round).await;
    }
    let _server = Process::serve(&config, dir.path(), addr).await;
    every_acknowledged_arrives(&sink, &acked).await;
    common::eventually("the spool emptied", || {
        wasmtp::spool::Spool::attach(&dir.path().join("spool"))
            .unwrap()
            .list()
            .is_empty()
    })
    .await;
    let segments = std::fs::read_dir(dir.path().join("spool/log"))
        .unwrap()
        .count();
    assert!(segments < 20, "{segments} segments left");
}
