#!/usr/bin/env bash
# Runs every test: installs the wasm32-wasip2 target, Debian's dkimpy and rspamd, builds the
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
# The real Rspamd of tests/rspamd.rs, from Debian (the tests start their own instance).
if ! command -v rspamd >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rspamd >/dev/null
  else
    echo "tests/rspamd.rs needs: apt-get install rspamd" >&2
    exit 1
  fi
fi
# Every platform's crates, so the nested wasm32 plugin build (host/build.rs) finds them.
cargo fetch --locked
examples/build.sh
cargo test --workspace --locked
