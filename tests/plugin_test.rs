//! `wasmtp plugin test` for a plugin's own CI: `--json` (each hook's verdict, reply and
//! changes as JSON), `--kv` (the plugin's state to start from) and `--config` (a server
//! config's resolver: the host checks SPF, DKIM, ARC and DMARC against a DNS server the
//! test starts, and the plugin sees the real results).

mod common;
use common::dns::Zone;
use serde_json::Value;
use std::process::Command;

fn plugin_test(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(common::BIN)
        .current_dir(dir)
        .args(["plugin", "test"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn json_report_of_verdicts_and_changes() {
    let dir = tempfile::tempdir().unwrap();
    let message = dir.path().join("m.eml");
    std::fs::write(&message, "Subject: FREE MONEY NOW!!!\n\nclick here\n").unwrap();
    let config = dir.path().join("spam.toml");
    std::fs::write(&config, "reject_above = 1.0\n").unwrap();
    let (m, c) = (message.to_str().unwrap(), config.to_str().unwrap());
    let out = plugin_test(
        dir.path(),
        &[
            "bundled:spam-score",
            "--plugin-config",
            c,
            "--message",
            m,
            "--from",
            "a@b.test",
            "--to",
            "u@example.test",
            "--json",
        ],
    );
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["hooks"], serde_json::json!(["data"]));
    let step = &report["steps"][0];
    assert_eq!(step["step"], "data (39 octets)");
    assert_eq!(step["verdict"], "refuse");
    assert!(
        step["reply"].as_str().unwrap().starts_with("550 5.7.1"),
        "{step}"
    );
    let changes: Vec<&str> = step["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        changes
            .iter()
            .any(|c| c.starts_with("add header X-Spam-Status: Yes")),
        "{changes:?}"
    );
}

#[test]
fn kv_seeds_the_plugins_state() {
    let dir = tempfile::tempdir().unwrap();
    let kv = dir.path().join("kv.json");
    std::fs::write(&kv, r#"{"helos": "41"}"#).unwrap();
    let guest = common::guest("misbehave");
    let args = [
        "--helo", "kv.test", "--from", "a@b.test", "--to", "x@y.test", "--kv",
    ];
    let out = plugin_test(
        dir.path(),
        &[&[guest.as_str()][..], &args, &[kv.to_str().unwrap()]].concat(),
    );
    // The guest increments the count it is given and refuses with it.
    assert!(
        out.contains("helo kv.test: refuse: 550 5.7.1 kv: 42"),
        "{out}"
    );
}

#[tokio::test]
async fn config_gives_the_plugin_real_authentication_results() {
    let dns = Zone::default()
        .txt("sender.test.", "v=spf1 ip4:192.0.2.1 -all")
        .txt("helo.test.", "v=spf1 ip4:192.0.2.1 -all")
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wasmtp.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n\
             [spool]\npath = \"spool\"\n[dns]\nnameservers = [\"{}\"]\n\
             [authentication]\ntimeout = \"3s\"\n",
            dns.addr
        ),
    )
    .unwrap();
    let plugin_config = dir.path().join("echo.toml");
    std::fs::write(&plugin_config, "mode = \"echo-auth\"\n").unwrap();
    let guest = common::guest("misbehave");
    let dir_path = dir.path().to_path_buf();
    let (config, plugin_config) = (
        config.display().to_string(),
        plugin_config.display().to_string(),
    );
    let out = tokio::task::spawn_blocking(move || {
        plugin_test(
            &dir_path,
            &[
                &guest,
                "--plugin-config",
                &plugin_config,
                "--config",
                &config,
                "--client-ip",
                "192.0.2.1",
                "--helo",
                "helo.test",
                "--from",
                "a@sender.test",
                "--to",
                "u@example.test",
            ],
        )
    })
    .await
    .unwrap();
    // What the plugin was given at MAIL and at data, as it echoes it.
    assert!(
        out.contains("add header X-Echo-Auth: mail=pass/pass:sender.test; spf=pass;"),
        "{out}"
    );
    assert!(dns.queries.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}
