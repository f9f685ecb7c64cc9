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
fn setup(hop: u16) -> (tempfile::TempDir, PathBuf, SocketAddr, u16) {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let config = config(dir.path(), addr, hop);
    (dir, config, addr, hop)
}

#[tokio::test]
async fn kill_9_after_250_loses_nothing() {
    let (dir, config, addr, hop) = setup(common::free_port());
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
    // The sink is up before its port is in the config: no other socket can take it.
    let sink = Sink::start(SinkOptions::default()).await;
    let (dir, config, addr, _) = setup(sink.addr.port());
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

/// Whether a segment of the spool under `dir` holds `needle`.
fn spool_holds(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir.join("spool/log")).is_ok_and(|entries| {
        entries
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .any(|octets| octets.windows(needle.len()).any(|w| w == needle))
    })
}

/// A message of 2 MiB whose subject is `token` (its body lines number it).
fn big(token: &str) -> String {
    let mut body = format!("Subject: {token}\r\n\r\n");
    for i in 0..32_768 {
        body.push_str(&format!(
            "{token} line {i:06} 0123456789abcdef0123456789abcdef012345\r\n"
        ));
    }
    body
}

#[tokio::test]
async fn kill_9_during_data_delivers_no_partial_message_and_every_acknowledged_one() {
    // The next hop defers everything until it is opened, so the acknowledged messages are
    // in the spool only when the server dies.
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gate = open.clone();
    let sink = Sink::with_rcpt_rule(move |_| {
        (!gate.load(std::sync::atomic::Ordering::SeqCst)).then(|| "451 4.3.0 not yet".into())
    })
    .await;
    let (dir, config, addr, _) = setup(sink.addr.port());
    let server = Process::serve(&config, dir.path(), addr).await;
    for token in ["big0", "big1"] {
        let mut c = Client::connect(addr).await;
        c.cmd("EHLO t", "250").await;
        // send_mail ends the data with CRLF . CRLF: the last line's CRLF is that one.
        let message = big(token);
        let reply = c
            .send_mail(
                "s@load.test",
                &["u@example.test"],
                message.strip_suffix("\r\n").unwrap(),
            )
            .await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    // A third is cut short by the crash: half of it is in the spool's parts.
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO t", "250").await;
    c.cmd("MAIL FROM:<s@load.test>", "250").await;
    c.cmd("RCPT TO:<u@example.test>", "250").await;
    c.cmd("DATA", "354").await;
    let partial = big("partial");
    c.send(&partial.as_bytes()[..partial.len() / 2]).await;
    // Looked for by content, not by the log's size: compaction copies the deferred
    // messages forward and removes their old segments meanwhile, so the size moves both
    // ways. Line 10000 of the 16384 sent is well past the block held in memory.
    common::eventually("half of the third message in the spool", || {
        spool_holds(dir.path(), b"partial line 010000 ")
    })
    .await;
    server.signal("KILL");
    assert_eq!(server.wait().await, None, "not killed by a signal");
    drop(c);
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let _server = Process::serve(&config, dir.path(), addr).await;
    let got = sink.wait_for(2).await;
    for m in &got {
        let text = m.text();
        let subject = text
            .split("Subject: ")
            .nth(1)
            .unwrap()
            .split("\r\n")
            .next()
            .unwrap();
        assert_ne!(subject, "partial", "a message cut short was delivered");
        let want = big(subject);
        let body = want.split_once("\r\n\r\n").unwrap().1;
        assert!(text.ends_with(body), "{subject} changed");
    }
    common::eventually("the spool emptied and its space back", || {
        wasmtp::spool::Spool::attach(&dir.path().join("spool"))
            .unwrap()
            .list()
            .is_empty()
            && common::spool_octets(dir.path()) < 1 << 20
    })
    .await;
    assert_eq!(sink.count(), 2, "{} messages at the sink", sink.count());
}
