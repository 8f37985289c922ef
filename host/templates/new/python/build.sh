#!/usr/bin/env bash
# Builds dist/{{name}}.wasm with componentize-py {{componentize_py}} (installed
# from PyPI into .toolchain/ on first use).
set -euo pipefail
cd "$(dirname "$0")"
venv=.toolchain/componentize-py-{{componentize_py}}
if [ ! -x "$venv/bin/componentize-py" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py=={{componentize_py}}"
fi
mkdir -p dist
# The module is run at build time: an error in it (syntax, a failed import)
# stops the build with Python's message, without componentize-py's backtrace.
RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 "$venv/bin/componentize-py" -d wit -w action componentize -p . app -o "dist/{{name}}.wasm" >/dev/null
echo "built dist/{{name}}.wasm: ward run dist/{{name}}.wasm --input '{\"name\":\"Ada\"}'"
