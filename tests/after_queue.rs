//! `[[plugin]] mode = "after-queue"`: the data hook runs on the spooled message after the
//! 250 and before delivery. A slow scan holds no session; its verdicts (deliver with the
//! changes, quarantine, discard, reject with a report, tempfail and scan again) apply to
//! the queued message; its outcome survives kill -9 and nothing is delivered twice.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{Client, Process, TestServer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const ACCEPT: &str = "[accept]\ndomains = [\"example.test\"]\n";

/// The misbehave guest taking `scan_ms` at data, after the queue unless `mode` says.
fn scanner(mode: &str, scan_ms: u64, extra: &str) -> String {
    format!(
        "[[plugin]]\nname = \"scan\"\npath = \"{}\"\nmode = \"{mode}\"\n{extra}\n\
         [plugin.config]\nscan_ms = {scan_ms}\n",
        common::guest("misbehave")
    )
}

fn message(subject: &str) -> String {
    format!("Subject: {subject}\r\nX-Remove-Me: yes\r\n\r\nbody of {subject}\r\n")
}

/// Sends `n` messages on one session; how long the slowest 250 took.
async fn send_timed(addr: SocketAddr, n: usize) -> Duration {
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO c.test", "250").await;
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let started = Instant::now();
        let reply = c
            .send_mail("a@b.test", &["u@example.test"], &message(&format!("m{i}")))
            .await;
        assert!(reply.starts_with("250"), "{reply}");
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

#[tokio::test]
async fn a_slow_scan_after_the_queue_does_not_hold_the_250() {
    let sink = Sink::start(SinkOptions::default()).await;
    let route = sink.config_route("*", "none");
    // Before the queue, a 3 s data hook holds each 250 for 3 s.
    let before = TestServer::start(&format!(
        "{ACCEPT}{route}{}",
        scanner("before-queue", 3000, "timeout = \"10s\"")
    ))
    .await;
    assert!(send_timed(before.addr(), 1).await >= Duration::from_secs(3));
    sink.wait_for(1).await;
    // After it, the 250s come at once, and delivery waits for each scan.
    let after = TestServer::start(&format!(
        "{ACCEPT}{route}{}",
        scanner("after-queue", 3000, "")
    ))
    .await;
    let started = Instant::now();
    let slowest = send_timed(after.addr(), 5).await;
    assert!(slowest < Duration::from_secs(2), "slowest 250: {slowest:?}");
    assert_eq!(sink.count(), 1, "delivered before its scan ended");
    let got = sink.wait_for(6).await;
    assert!(started.elapsed() >= Duration::from_secs(3));
    for m in &got[1..] {
        let text = m.text();
        // The scan's changes: its field added, X-Remove-Me gone, a recipient added.
        assert!(text.contains("X-Misbehave: calls=1 size="), "{text}");
        assert!(!text.contains("X-Remove-Me"), "{text}");
    }
    let added = got[1..]
        .iter()
        .filter(|m| m.rcpts.iter().any(|r| r.contains("added@example.test")))
        .count();
    assert_eq!(added, 5);
}

#[tokio::test]
async fn verdicts_after_the_queue_apply_to_the_queued_message() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "{ACCEPT}{}[delivery]\nretry = [\"1s\"]\n{}",
        sink.config_route("*", "none"),
        scanner("after-queue", 0, "")
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c.test", "250").await;
    // Every verdict is given after the 250.
    for subject in [
        "reject me",
        "discard me",
        "quarantine me",
        "tempfail me",
        "fine",
    ] {
        let reply = c
            .send_mail("sender@b.test", &["u@example.test"], &message(subject))
            .await;
        assert!(reply.starts_with("250"), "{subject}: {reply}");
    }
    // "fine" is delivered with the changes, and the refusal comes back to the sender.
    common::eventually("the message and the report", || sink.count() >= 2).await;
    let got = sink.messages.lock().unwrap().clone();
    let delivered: Vec<_> = got.iter().filter(|m| !m.mail.contains("<>")).collect();
    assert_eq!(delivered.len(), 1, "{got:?}");
    assert!(delivered[0].text().contains("Subject: fine"));
    let reports = sink.reports();
    assert_eq!(reports.len(), 1);
    let report = reports[0].text();
    assert_eq!(reports[0].rcpts, ["RCPT TO:<sender@b.test>"]);
    assert!(report.contains("Status: 5.7.0"), "{report}");
    assert!(report.contains("content refused by plugin"), "{report}");
    // Quarantined: held with its reason; tempfail: deferred, scanned again, still queued.
    // A spool attached once is a snapshot: look again each time.
    common::eventually("two messages left, one held", || s.spool_ids().len() == 2).await;
    common::eventually("the deferred scan tried twice", || s.deferrals() >= 2).await;
    let spool = s.spool();
    let mut states: Vec<_> = spool
        .list()
        .iter()
        .map(|id| spool.load_envelope(id).unwrap().1)
        .collect();
    states.sort_by_key(|s| s.held);
    let (deferred, held) = (&states[0], &states[1]);
    assert!(held.held && held.scan.is_none(), "{held:?}");
    assert!(
        held.hold_reason
            .as_deref()
            .unwrap_or("")
            .contains("looks odd"),
        "{held:?}"
    );
    assert!(!deferred.held && deferred.scan.is_some(), "{deferred:?}");
    let reply = deferred.recipients[0].reply().unwrap().to_string();
    assert_eq!(reply, "451 4.7.1 scan deferred by plugin");
    assert_eq!(sink.count(), 2);
}

#[tokio::test]
async fn a_header_section_near_the_limit_is_scanned_whole() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "{ACCEPT}{}{}",
        sink.config_route("*", "none"),
        scanner("after-queue", 0, "")
    ))
    .await;
    // A header section a little under the limit, so that it and our fields on top are
    // past it; the field the plugin removes is its last.
    let limit = 1 << 20;
    let mut header = String::from("Subject: big header\r\n");
    let tail = "X-Remove-Me: yes\r\n\r\n";
    while header.len() + tail.len() + 2000 < limit {
        header.push_str(&format!("X-Pad: {}\r\n", "p".repeat(990)));
    }
    let last = limit - 10 - header.len() - tail.len() - "X-Pad: \r\n".len();
    header.push_str(&format!("X-Pad: {}\r\n{tail}", "p".repeat(last)));
    assert_eq!(header.len(), limit - 10);
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c.test", "250").await;
    let reply = c
        .send_mail(
            "a@b.test",
            &["u@example.test"],
            &format!("{header}the body"),
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    let got = sink.wait_for(1).await;
    let text = got[0].text();
    assert!(!text.contains("X-Remove-Me"), "the last field stayed");
    assert!(text.contains("X-Misbehave: calls="), "not scanned");
    assert!(
        text.contains("body=the body"),
        "the plugin's body is not the message's"
    );
    assert!(text.ends_with("\r\n\r\nthe body\r\n"), "the body moved");
}

fn config(dir: &Path, addr: SocketAddr, hop: SocketAddr, scan_ms: u64) -> std::path::PathBuf {
    let config = dir.join("wasmtp.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n[spool]\npath = \"spool\"\n\
             {ACCEPT}[authentication]\nverify = false\n\
             [[route]]\ndomain = \"*\"\nto = \"smtp:{hop}\"\ntls = \"none\"\n{}",
            scanner("after-queue", scan_ms, "concurrency = 16")
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn kill_9_with_a_hundred_waiting_for_their_scan_delivers_each_once() {
    let sink = Sink::start(SinkOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    // Each scan takes 30 s: 16 are in progress, 84 wait for a slot, none ends.
    let slow = config(dir.path(), addr, sink.addr, 30_000);
    let server = Process::serve(&slow, dir.path(), addr).await;
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO c.test", "250").await;
    for i in 0..100 {
        let reply = c
            .send_mail("a@b.test", &["u@example.test"], &message(&format!("n{i}")))
            .await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    server.signal("KILL");
    assert_eq!(server.wait().await, None, "not killed by a signal");
    assert_eq!(sink.count(), 0, "delivered before its scan");
    // Restarted (with a quick scanner): every message is scanned, then delivered once.
    let quick = config(dir.path(), addr, sink.addr, 0);
    let _server = Process::serve(&quick, dir.path(), addr).await;
    sink.wait_for(100).await;
    common::eventually("the spool emptied", || {
        wasmtp::spool::Spool::attach(&dir.path().join("spool"))
            .unwrap()
            .list()
            .is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in sink.messages.lock().unwrap().iter() {
        let text = m.text();
        assert_eq!(text.matches("X-Misbehave:").count(), 1, "{text}");
        let subject = text.split("Subject: ").nth(1).unwrap().split("\r\n").next();
        *seen.entry(subject.unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(seen.len(), 100);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}
