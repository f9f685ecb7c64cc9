//! Plugins that spin, flood the log, ask for absurd changes, reach for capabilities they
//! were not granted, or whose compiled code was tampered with: each costs only itself.

mod common;
use common::sink::{Sink, SinkOptions};
use common::{Client, Process, TestServer};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const ACCEPT: &str = "[accept]\ndomains = [\"example.test\"]\n";

fn misbehave(mode: &str, extra: &str) -> String {
    format!(
        "[[plugin]]\nname = \"mb\"\npath = \"{}\"\n{extra}\n[plugin.config]\nmode = \"{mode}\"\n",
        common::guest("misbehave")
    )
}

fn faults(s: &TestServer) -> u64 {
    s.server.metrics.faults()
}

/// A config file for the binary with `extra`, on a free port.
fn config_file(dir: &std::path::Path, extra: &str) -> (std::path::PathBuf, SocketAddr) {
    let port = common::free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n[spool]\npath = \"spool\"\n{ACCEPT}{extra}"
        ),
    )
    .unwrap();
    (config, addr)
}

/// The binary serving `extra` (on the server's own runtime, as in production).
async fn serve(dir: &std::path::Path, extra: &str) -> Process {
    let (config, addr) = config_file(dir, extra);
    Process::serve(&config, dir, addr).await
}

#[tokio::test]
async fn spinning_plugins_yield_to_other_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        &misbehave("loop", "capabilities = [\"kv\"]\ntimeout = \"3s\""),
    )
    .await;
    let mut spinners = Vec::new();
    for _ in 0..4 {
        let mut c = Client::connect(server.addr).await;
        c.cmd("EHLO c", "250").await;
        c.send(b"MAIL FROM:<a@b.test>\r\n").await;
        spinners.push(c);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Four guests spin on every worker; a new client is greeted at once all the same.
    let started = Instant::now();
    let mut c = Client::connect_raw(server.addr).await;
    let greeting = c.reply().await;
    assert!(greeting.starts_with("220"), "{greeting}");
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "greeting took {:?}",
        started.elapsed()
    );
    // The spinners are stopped at their deadline.
    for mut c in spinners {
        assert!(c.reply().await.starts_with("451 4.3.0"));
    }
}

#[tokio::test]
async fn a_hundred_thousand_recipient_changes_are_bounded() {
    let sink = Sink::start(SinkOptions::default()).await;
    let s = TestServer::start(&format!(
        "{ACCEPT}[limits]\nrecipients = 50\n{}{}",
        sink.config_route("*", "none"),
        misbehave(
            "many-changes",
            "capabilities = [\"kv\"]\ntimeout = \"5s\"\nmemory = \"256MiB\""
        )
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO c", "250").await;
    let started = Instant::now();
    let reply = c
        .send_mail("a@b.test", &["u@example.test"], "Subject: many\r\n\r\nx")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let got = sink.wait_for(1).await;
    // Added recipients count against limits.recipients.
    let rcpts: usize = sink
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.rcpts.len())
        .sum();
    assert_eq!(rcpts, 50, "{}", got[0].mail);
}

#[tokio::test]
async fn capabilities_are_granted_per_plugin() {
    // Without kv, a call on 0.2.0's `kv` traps: a fault, answered per on_error.
    let old = |grant: &str| {
        format!(
            "{ACCEPT}[[plugin]]\nname = \"old\"\npath = \"{}\"\n{grant}on_error = \"continue\"\n",
            common::guest("contract_0_2_0")
        )
    };
    let s = TestServer::start(&old("capabilities = []\n")).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO count.test", "250").await;
    assert_eq!(faults(&s), 1);
    let s = TestServer::start(&old("capabilities = [\"kv\"]\n")).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO count.test", "550 5.7.1 count 1").await;
    assert_eq!(faults(&s), 0);
    // On 0.2.2's `store` (the SDK's kv) the guest reads `denied` and goes on: no fault.
    let s = TestServer::start(&format!("{ACCEPT}{}", misbehave("kv", "capabilities = []"))).await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO kv.test", "550 5.7.1 kv: denied").await;
    assert_eq!(faults(&s), 0);
    let s = TestServer::start(&format!(
        "{ACCEPT}{}",
        misbehave("kv", "capabilities = [\"kv\"]")
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO kv.test", "550 5.7.1 kv: 1").await;
    // A plugin declaring dns (the SDK's section) without the grant is refused at start.
    let dir = tempfile::tempdir().unwrap();
    let toml = common::base_config(
        dir.path(),
        &format!(
            "{ACCEPT}[[plugin]]\nname = \"spam\"\npath = \"{}\"\n\
             [plugin.config]\ndnsbl = [\"bl.test\"]\n",
            common::guest("spam_score")
        ),
    );
    let config = wasmtp::config::Config::parse("test", &toml).unwrap();
    let err = match wasmtp::server::Server::start(config).await {
        Ok(_) => panic!("started without the dns grant"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("plugin[0] (spam): needs the dns capability that its config does not grant"),
        "{err}"
    );
}

#[tokio::test]
async fn a_log_flood_is_rate_limited_and_cannot_forge_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (config, addr) = config_file(
        dir.path(),
        &misbehave("log-flood", "capabilities = [\"kv\"]\ntimeout = \"1s\""),
    );
    let log = dir.path().join("server.log");
    let child = std::process::Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .env("WASMTP_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Process { child, addr };
    server.wait_ready().await;
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO c", "250").await;
    c.cmd("MAIL FROM:<a@b.test>", "451 4.3.0").await;
    server.signal("TERM");
    server.wait().await;
    let text = std::fs::read_to_string(&log).unwrap();
    let flood = text
        .lines()
        .filter(|l| l.contains("flood") || l.contains("printed"))
        .count();
    assert!((1..=200).contains(&flood), "{flood} plugin lines logged");
    assert!(text.contains("dropped"), "no report of dropped lines");
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "a plugin forged a log line"
    );
    assert!(text.len() < 1 << 20, "{} octets of log", text.len());
}

#[tokio::test]
async fn tampered_compiled_code_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        wasmtp::config::Config::parse(
            "t",
            &common::base_config(
                dir.path(),
                "[[plugin]]\nname = \"guard\"\npath = \"bundled:vrfy-expn-guard\"\n",
            ),
        )
        .unwrap()
    };
    let first = wasmtp::server::Server::start(config()).await.unwrap();
    first.shutdown(Duration::from_secs(5)).await;
    let cache = dir.path().join("spool/plugin-cache");
    let file = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // Someone who can write the cache directory plants other code under the same name.
    let mut planted = std::fs::read(&file).unwrap();
    let last = planted.len() - 1;
    planted[last] ^= 0xFF;
    std::fs::write(&file, &planted).unwrap();
    let second = wasmtp::server::Server::start(config()).await.unwrap();
    assert_ne!(std::fs::read(&file).unwrap(), planted, "planted code kept");
    let mut c = Client::connect(second.listen_addrs[0]).await;
    c.cmd("VRFY x", "502").await;
    // The key that signs the cache is outside it, and private.
    use std::os::unix::fs::PermissionsExt;
    let key = std::fs::metadata(dir.path().join("spool/plugin-cache.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o077, 0);
    let dir_mode = std::fs::metadata(&cache).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o022, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_greylist_flood_does_not_slow_other_sessions() {
    let s = TestServer::start(&format!(
        "{ACCEPT}[limits]\nerror_delay = \"0s\"\nerror_limit = 1000000\n\
         [[plugin]]\nname = \"greylist\"\npath = \"bundled:greylist\"\nkv_max_keys = 20000\n"
    ))
    .await;
    let addr = s.addr();
    let flood = tokio::spawn(async move {
        let mut c = Client::connect(addr).await;
        c.cmd("EHLO flood", "250").await;
        for t in 0..1000 {
            let mut batch = String::from("MAIL FROM:<f@flood.test>\r\n");
            for r in 0..100 {
                batch.push_str(&format!("RCPT TO:<u{t}x{r}@example.test>\r\n"));
            }
            batch.push_str("RSET\r\n");
            c.send(batch.as_bytes()).await;
            for _ in 0..102 {
                c.reply().await;
            }
        }
    });
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO other", "250").await;
    c.cmd("MAIL FROM:<o@other.test>", "250").await;
    let mut worst = Duration::ZERO;
    let mut n = 0;
    while !flood.is_finished() {
        let started = Instant::now();
        c.cmd(&format!("RCPT TO:<v{n}@example.test>"), "451").await;
        worst = worst.max(started.elapsed());
        n += 1;
        if n % 90 == 0 {
            c.cmd("RSET", "250").await;
            c.cmd("MAIL FROM:<o@other.test>", "250").await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flood.await.unwrap();
    assert!(n > 10, "the flood was over too soon to measure ({n})");
    assert!(worst < Duration::from_millis(100), "a reply took {worst:?}");
    // The namespace stayed within its quota.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let kv = std::fs::read_to_string(s.dir.path().join("spool/kv.json")).unwrap();
    let keys = kv.matches("greylist\\u0000").count();
    assert!((1..=20_000).contains(&keys), "{keys} keys");
}
