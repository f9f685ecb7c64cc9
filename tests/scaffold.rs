//! `wasmtp plugin new`: a project of each language is written, built with the one command
//! it prints (with the toolchains `tests/run.sh` installs: the wasm32-wasip2 target, npm's
//! componentize-js, PyPI's componentize-py, Debian's clang and wasi-libc with wit-bindgen
//! and jco), and passes `wasmtp plugin test` as it is: every sender goes on, and one from
//! the configured domain is refused.

mod common;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn wasmtp(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// The MAIL step's verdict and reply, of the plugin at `wasm` (in `dir`) for `from`.
fn mail_step(dir: &Path, wasm: &str, from: &str) -> (String, String) {
    let args = [
        "plugin",
        "test",
        wasm,
        "--from",
        from,
        "--to",
        "b@example.net",
        "--json",
    ];
    let (ok, out, err) = wasmtp(dir, &args);
    assert!(ok, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["hooks"], serde_json::json!(["mail"]), "{report}");
    let step = &report["steps"][0];
    assert!(
        step["step"].as_str().unwrap().starts_with("mail"),
        "{report}"
    );
    let reply = step["reply"].as_str().unwrap_or("").to_string();
    (step["verdict"].as_str().unwrap().to_string(), reply)
}

/// Writes a project, runs the build command it printed, and tries what that built.
fn scaffold(lang: &str) {
    let root = tempfile::tempdir().unwrap();
    let name = format!("my-{lang}-policy");
    let (ok, out, err) = wasmtp(root.path(), &["plugin", "new", &name, "--lang", lang]);
    assert!(ok, "{err}");
    let line = |prefix: &str| {
        let found = out.lines().find_map(|l| l.strip_prefix(prefix));
        found
            .unwrap_or_else(|| panic!("no {prefix:?} in {out}"))
            .trim()
            .to_string()
    };
    let build = line("build it:");
    let test = line("try it:");
    let mut cmd = Command::new("sh");
    cmd.current_dir(root.path()).args(["-c", &build]);
    if lang == "rust" {
        // One target directory for every run, so a rerun builds only the plugin.
        let target = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/scaffold");
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let built = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "{build}: {stderr}");
    // The printed try command, whose component path is relative to the project.
    let wasm = test
        .split_whitespace()
        .nth(3)
        .expect("wasmtp plugin test WASM ...");
    let project = root.path().join(&name);
    let wasm = match lang {
        "rust" => format!(
            "{}/../target/scaffold/{}",
            env!("CARGO_MANIFEST_DIR"),
            wasm.trim_start_matches("target/")
        ),
        _ => wasm.to_string(),
    };
    let (verdict, _) = mail_step(&project, &wasm, "a@example.com");
    assert_eq!(verdict, "continue", "{lang}");
    let (verdict, reply) = mail_step(&project, &wasm, "x@Blocked.Invalid");
    assert_eq!(verdict, "refuse", "{lang}");
    assert!(reply.starts_with("550 5.7.1"), "{lang}: {reply}");
    // A project is never written over.
    let (ok, _, err) = wasmtp(root.path(), &["plugin", "new", &name, "--lang", lang]);
    assert!(!ok && err.contains("exists and is not empty"), "{err}");
}

#[test]
fn a_rust_scaffold_builds_and_passes() {
    scaffold("rust");
}

#[test]
fn a_javascript_scaffold_builds_and_passes() {
    scaffold("js");
}

#[test]
fn a_python_scaffold_builds_and_passes() {
    scaffold("python");
}

#[test]
fn a_c_scaffold_builds_and_passes() {
    scaffold("c");
}

#[test]
fn bad_names_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let (ok, _, err) = wasmtp(root.path(), &["plugin", "new", "../escape", "--lang", "js"]);
    assert!(!ok && err.contains("plugin name"), "{err}");
    assert!(!root.path().join("../escape").exists());
}
