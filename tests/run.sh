#!/usr/bin/env bash
# Runs every test: installs the wasm32-wasip2 target, Debian's dkimpy, rspamd, redis-server and
# haproxy, builds the JavaScript, Python and C example plugins once (examples/build.sh),
# then the whole Cargo workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2
# need CHECK WHO PACKAGE...: the Debian packages a test file needs, installed with apt-get
# (as root) when CHECK fails.
updated=
need() {
  local check="$1" who="$2"
  shift 2
  if ! eval "$check" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      [ -n "$updated" ] || { apt-get update -qq; updated=1; }
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
      echo "$who needs: apt-get install $*" >&2
      exit 1
    fi
  fi
}
# The outside DKIM and ARC signer and verifier, dkimpy with PyNaCl and authres; the real Rspamd, Redis and
# HAProxy the tests start their own instances of.
need '/usr/bin/python3 -c "import dkim, nacl, authres"' "tests/mailauth.rs, tests/dkim.rs and tests/arc_seal.rs" python3-dkim python3-nacl python3-authres openssl
need '/usr/bin/python3 -c "import prometheus_client"' tests/metrics.rs python3-prometheus-client
need 'command -v rspamd' tests/rspamd.rs rspamd
need 'command -v redis-server' tests/redis.rs redis-server
need 'command -v haproxy' tests/proxy.rs haproxy
# Every platform's crates, so the nested wasm32 plugin build (host/build.rs) finds them.
cargo fetch --locked
examples/build.sh
cargo test --workspace --locked
