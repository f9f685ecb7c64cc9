#!/usr/bin/env bash
# Builds helo-check.wasm from helo_check.c against the WIT in ../../wit.
# Needs: Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32 (apt-get install ...),
#        wit-bindgen (cargo install wit-bindgen-cli --version 0.46.0 --locked),
#        jco for the WASI preview1 reactor adapter (npm install in ../js-plugin installs it).
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-helo-check.wasm}"
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
wit-bindgen c ../../wit --world plugin --out-dir "$gen" >/dev/null
# A reactor: no main; the host calls the exports.
clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wall -Werror \
    -I "$gen" helo_check.c "$gen/plugin.c" "$gen/plugin_component_type.o" -o "$gen/core.wasm"
jco="../js-plugin/node_modules/.bin/jco"
[ -x "$jco" ] || (cd ../js-plugin && npm install --no-audit --no-fund >/dev/null)
"$jco" new "$gen/core.wasm" --wasi-reactor -o "$out" >/dev/null
echo "built $out"
