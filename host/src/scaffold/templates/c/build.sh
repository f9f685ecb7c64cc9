#!/usr/bin/env bash
# Builds {{wasm}} from policy.c against the WIT in wit/.
# Needs: clang, lld, wasi-libc, libclang-rt-dev-wasm32 (Debian: apt-get install ...),
#        wit-bindgen (cargo install wit-bindgen-cli --version 0.46.0 --locked),
#        Node's npx, for jco's WASI preview1 reactor adapter.
set -euo pipefail
cd "$(dirname "$0")"
gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
wit-bindgen c wit --world plugin --out-dir "$gen" >/dev/null
# A reactor: no main; the host calls the exports.
clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -O2 -Wall -Werror \
    -I "$gen" policy.c "$gen/plugin.c" "$gen/plugin_component_type.o" -o "$gen/core.wasm"
npx --yes @bytecodealliance/jco@1.35.0 new "$gen/core.wasm" --wasi-reactor -o {{wasm}} >/dev/null
echo "built {{wasm}}"
