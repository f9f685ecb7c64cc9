//! examples/systemd/wasmtp.service as an operator installs it: its `ExecStart` line, as
//! written but for the binary's and the config's paths, starts the gateway (no systemd
//! needed); its `ExecReload` command reloads it without dropping a session; its
//! `KillSignal` stops it with exit 0; and where `systemd-analyze` exists, every key of the
//! unit (the hardening ones above all) is read without a complaint.

mod common;
use common::{BIN, Client, Process};

const UNIT: &str = include_str!("../examples/systemd/wasmtp.service");

/// The words of the unit's `key=` line.
fn line(key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    let found = UNIT.lines().find_map(|l| l.strip_prefix(&prefix));
    let value = found.unwrap_or_else(|| panic!("no {key}= in the unit"));
    value.split_whitespace().map(String::from).collect()
}

#[tokio::test]
async fn the_units_commands_start_reload_and_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let config = dir.path().join("wasmtp.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n[spool]\npath = \"spool\"\n\
             [accept]\ndomains = [\"example.test\"]\n"
        ),
    )
    .unwrap();
    let mut start = line("ExecStart");
    assert_eq!(start[0], "/usr/local/bin/wasmtp", "{start:?}");
    let at = start
        .iter()
        .position(|w| w == "--config")
        .expect("--config");
    assert_eq!(start[at + 1], "/etc/wasmtp/wasmtp.toml");
    start[0] = BIN.into();
    start[at + 1] = config.display().to_string();
    let child = std::process::Command::new(&start[0])
        .args(&start[1..])
        .current_dir(dir.path())
        .env("WASMTP_LOG", "error")
        .spawn()
        .unwrap();
    let server = Process { child, addr };
    server.wait_ready().await;
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO c", "250").await;

    // ExecReload, with the server's pid for $MAINPID: the session goes on.
    let reload: Vec<String> = line("ExecReload")
        .into_iter()
        .map(|w| w.replace("$MAINPID", &server.child.id().to_string()))
        .collect();
    let status = std::process::Command::new(&reload[0])
        .args(&reload[1..])
        .status()
        .unwrap();
    assert!(status.success(), "{reload:?}");
    c.cmd("NOOP", "250").await;
    let reply = c
        .send_mail("a@b.test", &["u@example.test"], "Subject: x\r\n\r\nx")
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("QUIT", "221").await;
    Client::connect(addr).await.cmd("QUIT", "221").await;

    let signal = line("KillSignal");
    server.signal(signal[0].trim_start_matches("SIG"));
    assert_eq!(server.wait().await, Some(0), "stopped by {signal:?}");
}

#[test]
fn systemd_reads_every_key_of_the_unit() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("no systemd-analyze here: the unit's keys are not checked");
        return;
    };
    assert!(out.status.success());
    // Verified where the binary it names exists.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("wasmtp.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/wasmtp", BIN)).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("wasmtp.service"))
        .collect();
    assert!(out.status.success() && complaints.is_empty(), "{stderr}");
}
