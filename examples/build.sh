#!/usr/bin/env bash
# Builds the non-Rust example plugins into target/examples/, installing their toolchains
# when missing: componentize-py (PyPI), componentize-js and jco (npm), and for C Debian's
# clang/lld/wasi-libc (apt-get, as root) plus wit-bindgen (cargo install). Skips a plugin
# whose sources are older than its .wasm, so repeated runs are cheap.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/target/examples"
mkdir -p "$out"

fresh() { # fresh OUTPUT SOURCES...: true when OUTPUT is newer than every source
  local target="$1"; shift
  [ -f "$target" ] || return 1
  [ -z "$(find "$@" -newer "$target" -type f 2>/dev/null | head -n 1)" ]
}

if ! fresh "$out/python-plugin.wasm" "$root/examples/python-plugin/app.py" "$root/wit"; then
  command -v componentize-py >/dev/null || python3 -m pip install --quiet componentize-py==0.25.1
  "$root/examples/python-plugin/build.sh" "$out/python-plugin.wasm"
fi

for js in plugin:js-plugin rspamd:js-rspamd; do # SOURCE:OUTPUT
  src="$root/examples/js-plugin/${js%%:*}.js" wasm="$out/${js##*:}.wasm"
  if ! fresh "$wasm" "$src" "$root/examples/js-plugin/build.mjs" "$root/examples/js-plugin/package-lock.json" "$root/wit"; then
    (cd "$root/examples/js-plugin" && { [ node_modules/.package-lock.json -nt package-lock.json ] || npm ci --no-audit --no-fund; } && node build.mjs "$wasm" "$src")
  fi
done

if ! fresh "$out/c-plugin.wasm" "$root/examples/c-plugin/helo_check.c" "$root/examples/c-plugin/build.sh" "$root/wit"; then
  if ! command -v clang >/dev/null || [ ! -f /usr/lib/wasm32-wasi/libc.a ] || ! command -v wasm-ld >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang lld wasi-libc libclang-rt-dev-wasm32 >/dev/null
    else
      echo "the C example needs: apt-get install clang lld wasi-libc libclang-rt-dev-wasm32" >&2
      exit 1
    fi
  fi
  command -v wit-bindgen >/dev/null || cargo install --quiet wit-bindgen-cli --version 0.46.0 --locked
  "$root/examples/c-plugin/build.sh" "$out/c-plugin.wasm"
fi
