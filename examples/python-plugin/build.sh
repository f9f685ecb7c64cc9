#!/usr/bin/env bash
# Builds python-plugin.wasm from app.py against the WIT in ../../wit.
# Needs: pip install componentize-py==0.25.1
set -euo pipefail
cd "$(dirname "$0")"
out="${1:-python-plugin.wasm}"
componentize-py -d ../../wit -w plugin componentize app -o "$out"
echo "built $out"
