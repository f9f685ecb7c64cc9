#!/usr/bin/env bash
# Runs every test: installs the wasm32-wasip2 target and Debian's dkimpy, builds the
# JavaScript, Python and C example plugins once (examples/build.sh), then the whole Cargo
# workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
# The outside DKIM signer and verifier of tests/mailauth.rs and tests/dkim.rs: dkimpy and PyNaCl, from Debian.
if ! /usr/bin/python3 -c "import dkim, nacl" 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dkim python3-nacl openssl >/dev/null
  else
    echo "tests/mailauth.rs and tests/dkim.rs need: apt-get install python3-dkim python3-nacl openssl" >&2
    exit 1
  fi
fi
# Every platform's crates, so the nested wasm32 plugin build (host/build.rs) finds them.
cargo fetch --locked
examples/build.sh
cargo test --workspace --locked
