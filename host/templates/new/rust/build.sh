#!/usr/bin/env bash
# Builds dist/{{name}}.wasm (installs the wasm32-wasip2 target if missing).
set -euo pipefail
cd "$(dirname "$0")"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2
mkdir -p dist
cp "target/wasm32-wasip2/release/{{crate}}.wasm" "dist/{{name}}.wasm"
echo "built dist/{{name}}.wasm: ward run dist/{{name}}.wasm --input '{\"name\":\"Ada\"}'"
