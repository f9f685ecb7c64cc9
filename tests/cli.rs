//! The command line as an operator uses it: check-config, hash-password, the embedded
//! default, and SIGTERM handling.

mod common;
use common::{BIN, Client, Process};
use std::process::Command;

/// Runs `check-config` on a bad file: asserts exit 1 and returns standard error.
fn check_config_fails(path: &std::path::Path) -> String {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A plugin built for wasmtp:plugin@0.1.0 is named as such, with the way out; a DKIM key
/// that is missing or not a key, a required route's missing trust anchors, `proxy_from`
/// without `proxy_protocol`, and a zero verification timeout, are each a problem.
#[test]
fn check_config_names_old_plugins_and_bad_dkim_keys() {
    let dir = tempfile::tempdir().unwrap();
    let old =
        wat::parse_str(r#"(component (import "wasmtp:plugin/log@0.1.0" (instance)))"#).unwrap();
    std::fs::write(dir.path().join("old.wasm"), old).unwrap();
    std::fs::write(
        dir.path().join("notakey.pem"),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\nproxy_from = [\"10.0.0.0/8\"]\n\
             [authentication]\ntimeout = \"0s\"\n\
             [[route]]\ndomain = \"partner.test\"\nto = \"smtp:mx.partner.test:25\"\n\
             tls = \"required\"\nca = \"{0}/no-such-ca.pem\"\n\
             [[dkim]]\ndomain = \"example.test\"\nselector = \"s1\"\nprivate_key = \"{0}/missing.pem\"\n\
             [[dkim]]\ndomain = \"example.test\"\nselector = \"s2\"\nprivate_key = \"{0}/notakey.pem\"\n\
             [[plugin]]\nname = \"old\"\npath = \"{0}/old.wasm\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let err = check_config_fails(&config);
    assert!(err.contains("authentication.timeout"), "{err}");
    assert!(
        err.contains("listen[0].proxy_from: set without proxy_protocol"),
        "{err}"
    );
    let config_text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        config_text
            .replace("timeout = \"0s\"", "timeout = \"5s\"")
            .replace("proxy_from = [\"10.0.0.0/8\"]\n", ""),
    )
    .unwrap();
    let err = check_config_fails(&config);
    for expected in [
        "plugin[0] (old): built for wasmtp:plugin@0.1.0; this server speaks wasmtp:plugin@0.2.3",
        "Migrating plugins",
        "dkim[0].private_key",
        "dkim[1].private_key",
        "no private key",
        "route[0].ca",
        "no-such-ca.pem",
    ] {
        assert!(err.contains(expected), "{expected} missing from {err}");
    }
}

#[test]
fn check_config_lists_every_problem_with_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "hostname = \"bad host\"\n[[listen]]\naddress = \"127.0.0.1:0\"\nmode = \"submission\"\n\
         [limits]\nrecipients = 0\n[[route]]\ndomain = \"x.test\"\nto = \"smtp:nohost\"\n",
    )
    .unwrap();
    let err = check_config_fails(&bad);
    // serde stops at the first type error...
    assert!(
        err.contains("route[0].to") && err.contains("HOST:PORT"),
        "{err}"
    );
    std::fs::write(
        &bad,
        "hostname = \"bad host\"\n[[listen]]\naddress = \"127.0.0.1:0\"\nmode = \"submission\"\n\
         [limits]\nrecipients = 0\n[[plugin]]\nname = \"p\"\npath = \"missing.wasm\"\n",
    )
    .unwrap();
    let err = check_config_fails(&bad);
    // ...then every semantic problem is listed at once.
    for key in [
        "hostname",
        "listen[0].mode",
        "limits.recipients",
        "plugin[0].path",
    ] {
        assert!(err.contains(key), "{key} missing from {err}");
    }
    std::fs::write(&bad, "hostname = \"a.test\"\nunknown_key = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown_key"));
    // The embedded default is valid.
    let out = Command::new(BIN)
        .arg("check-config")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hash_password_prints_a_verifiable_argon2id_hash() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let config = format!(
        "hostname = \"a.test\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n[[user]]\nname = \"u\"\npassword_hash = \"{}\"\n",
        hash.trim()
    );
    assert!(wasmtp::config::Config::parse("t", &config).is_ok());
    // Nothing on stdin: a clear error, exit 1.
    let out = Command::new(BIN)
        .arg("hash-password")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn serve_refuses_a_bad_config_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmessage_size = \"ten\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("message_size"));
}

#[tokio::test]
async fn embedded_default_delivers_to_maildir() {
    let dir = tempfile::tempdir().unwrap();
    let addr = "127.0.0.1:2525".parse().unwrap();
    let child = std::process::Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("WASMTP_LOG", "error")
        .spawn()
        .unwrap();
    let server = Process { child, addr };
    server.wait_ready().await;
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO newcomer", "250").await;
    // The bundled plugins are loaded: VRFY/EXPN guard, size limit, spam score.
    c.cmd("VRFY alice", "502 5.5.1").await;
    c.cmd("MAIL FROM:<me@example.org> SIZE=999999999", "552 5.3.4")
        .await;
    let reply = c
        .send_mail(
            "me@example.org",
            &["alice@localhost"],
            "Subject: first\r\n\r\nhello",
        )
        .await;
    assert!(reply.starts_with("250"), "{reply}");
    c.cmd("RCPT TO:<x@example.org>", "503").await;
    c.cmd("MAIL FROM:<me@example.org>", "250").await;
    c.cmd("RCPT TO:<x@example.org>", "550 5.7.1").await;
    let maildir = dir.path().join("data/maildir");
    common::eventually("maildir file", || {
        !common::maildir_files(&maildir, "alice").is_empty()
    })
    .await;
    let text = std::fs::read_to_string(&common::maildir_files(&maildir, "alice")[0]).unwrap();
    assert!(
        text.contains("Subject: first\nhello") || text.contains("Subject: first\n\nhello"),
        "{text}"
    );
    assert!(text.contains("X-Spam-Status: "), "{text}");
    assert!(dir.path().join("data/spool/log").is_dir());
}

#[tokio::test]
async fn sigterm_says_421_to_idle_sessions_and_finishes_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n[spool]\npath = \"spool\"\n[accept]\ndomains = [\"example.test\"]\n[[route]]\ndomain = \"*\"\nto = \"maildir:mail\"\n"),
    )
    .unwrap();
    let server = Process::serve(&config, dir.path(), addr).await;
    let mut idle = Client::connect(addr).await;
    idle.cmd("EHLO idle", "250").await;
    let mut busy = Client::connect(addr).await;
    busy.cmd("EHLO busy", "250").await;
    busy.cmd("MAIL FROM:<a@b.c>", "250").await;
    busy.cmd("RCPT TO:<u@example.test>", "250").await;
    busy.cmd("DATA", "354").await;
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n").await;
    server.signal("TERM");
    let reply = idle.reply().await;
    assert!(reply.starts_with("421 4.3.2"), "{reply}");
    assert!(idle.closed().await);
    // New connections are no longer accepted.
    common::eventually("listener closed", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    busy.send(b"second half\r\n.\r\n").await;
    let reply = busy.reply().await;
    assert!(reply.starts_with("250"), "{reply}");
    let reply = busy.reply().await;
    assert!(reply.starts_with("421 4.3.2"), "{reply}");
    assert_eq!(server.wait().await, Some(0));
}

#[test]
fn plugin_test_runs_hooks_offline() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spam.toml");
    std::fs::write(&config, "reject_above = 1.0\n").unwrap();
    let message = dir.path().join("m.eml");
    std::fs::write(&message, "Subject: FREE MONEY NOW!!!\n\nclick here\n").unwrap();
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["plugin", "test", "bundled:spam-score", "--plugin-config"])
        .arg(&config)
        .arg("--message")
        .arg(&message)
        .args(["--from", "a@b.test", "--to", "u@example.test"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.starts_with("hooks wanted: data\n"), "{report}");
    assert!(
        report.contains("data (39 octets): refuse: 550 5.7.1 Message refused as spam"),
        "{report}"
    );
    assert!(
        report.contains("  add header X-Spam-Status: Yes, score="),
        "{report}"
    );
    // A refusal at HELO ends the run there, as it would end a session.
    let guest = format!("{}/misbehave.wasm", env!("WASMTP_PLUGIN_DIR"));
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "plugin",
            "test",
            &guest,
            "--helo",
            "reject.test",
            "--from",
            "a@b.test",
            "--to",
            "x@y.test",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.ends_with("helo reject.test: refuse: 550 5.7.1 HELO refused by plugin\n"),
        "{report}"
    );
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args([
            "plugin",
            "test",
            "/nonexistent.wasm",
            "--from",
            "a",
            "--to",
            "b",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonexistent.wasm"));
}

#[tokio::test]
async fn sighup_reloads_plugins_and_keeps_the_old_config_when_the_new_one_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = dir.path().join("c.toml");
    let base = format!(
        "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n[spool]\npath = \"spool\"\n[accept]\ndomains = [\"example.test\"]\n"
    );
    std::fs::write(&config, &base).unwrap();
    let server = Process::serve(&config, dir.path(), addr).await;
    let mut before = Client::connect(addr).await;
    before.cmd("VRFY alice", "252").await;
    // Add the VRFY guard and reload.
    std::fs::write(
        &config,
        format!("{base}[[plugin]]\nname = \"guard\"\npath = \"bundled:vrfy-expn-guard\"\n"),
    )
    .unwrap();
    server.signal("HUP");
    common::eventually_async("the guard to answer new sessions", || async move {
        let mut c = Client::connect(addr).await;
        c.send(b"VRFY alice\r\n").await;
        c.reply().await.starts_with("502")
    })
    .await;
    // The session opened before the reload goes on with what it had.
    before.cmd("VRFY alice", "252").await;
    before.cmd("NOOP", "250").await;
    // A bad config is refused; the running one stays.
    std::fs::write(
        &config,
        format!("{base}[[plugin]]\nname = \"gone\"\npath = \"missing.wasm\"\n"),
    )
    .unwrap();
    server.signal("HUP");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut after = Client::connect(addr).await;
    after.cmd("VRFY alice", "502").await;
    server.signal("TERM");
    assert_eq!(server.wait().await, Some(0));
}
