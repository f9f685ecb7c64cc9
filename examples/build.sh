#!/usr/bin/env bash
# Builds the non-Rust example plugins into target/examples/, installing their toolchains
# when missing: componentize-py (PyPI) and componentize-js (npm). Skips a plugin whose
# sources are older than its .wasm, so repeated runs are cheap.
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

if ! fresh "$out/js-plugin.wasm" "$root/examples/js-plugin/plugin.js" "$root/examples/js-plugin/build.mjs" "$root/wit"; then
  (cd "$root/examples/js-plugin" && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && node build.mjs "$out/js-plugin.wasm")
fi
