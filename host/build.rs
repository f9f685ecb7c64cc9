//! Builds the plugins (and the test guests) for wasm32-wasip2 with a nested cargo into
//! `target/plugins`, so host builds of any profile share one plugin build. The bundled
//! plugins are embedded in the binary (`bundled:NAME` in configs, used by the embedded
//! default); tests find the test guests through `WASMTP_PLUGIN_DIR`.

use std::path::PathBuf;
use std::process::Command;

/// Plugins embedded in the binary.
const BUNDLED: &[&str] = &[
    "vrfy-expn-guard",
    "size-limit",
    "spam-score",
    "greylist",
    "rate-limit",
    "dmarc-policy",
    "rspamd",
];
/// Guests built only for the tests.
const TEST_GUESTS: &[&str] = &["misbehave", "http-probe", "contract-0-2-0"];

/// A fresh rustup toolchain lacks wasm32-wasip2; add it rather than fail the first build.
fn ensure_wasm_target() {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
    else {
        return; // no rustup: the plugin build below says what is missing
    };
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        return;
    }
    println!("cargo:warning=installing the wasm32-wasip2 target (rustup target add wasm32-wasip2)");
    let _ = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status();
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.parent().expect("host/ is inside the workspace");
    for dir in ["wit", "sdk", "plugins", "tests/guests"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    ensure_wasm_target();
    let target_dir = root.join("target").join("plugins");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for p in BUNDLED.iter().chain(TEST_GUESTS) {
        cmd.args(["-p", p]);
    }
    // Flags meant for the host build must not leak into the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    // WebAssembly SIMD (wasmtime runs it natively): byte scans in the plugins (memchr,
    // ASCII case folding of a body) go 16 octets at a time.
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    let status = cmd.status().expect("cannot run cargo to build the plugins");
    assert!(
        status.success(),
        "building the plugins for wasm32-wasip2 failed; is the target installed? (rustup target add wasm32-wasip2)"
    );
    let wasm_dir = target_dir.join("wasm32-wasip2").join("release");
    let mut out = String::from(
        "/// (name, wasm) of every bundled plugin.\n\
         pub static PLUGINS: &[(&str, &[u8])] = &[\n",
    );
    for p in BUNDLED {
        let file = wasm_dir.join(format!("{}.wasm", p.replace('-', "_")));
        out.push_str(&format!("    ({p:?}, include_bytes!({file:?})),\n"));
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out_dir.join("bundled_plugins.rs"), out).expect("write bundled_plugins.rs");
    println!("cargo:rustc-env=WASMTP_PLUGIN_DIR={}", wasm_dir.display());
}
