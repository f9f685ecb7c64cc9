#!/usr/bin/env bash
# Runs every test: installs the wasm32-wasip2 target, builds the JavaScript and Python
# example plugins once (examples/build.sh), then the whole Cargo workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
# Every platform's crates, so the nested wasm32 plugin build (host/build.rs) finds them.
cargo fetch --locked
examples/build.sh
cargo test --workspace --locked
