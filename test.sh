#!/usr/bin/env bash
# Runs Ward's whole test suite: formatting, lints, the plugins' own tests,
# and the host's unit and end-to-end tests (which run the built plugins).
# Installs the wasm32-wasip2 target and builds plugins/ first. Exits non-zero
# on any failure.
set -euo pipefail
cd "$(dirname "$0")"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
host=$(rustc -vV | sed -n 's/^host: //p')

echo "== plugins: build (wasm32-wasip2) and test ($host)"
(cd plugins && cargo build --release --locked && cargo test --locked --target "$host")

echo "== formatting and lints"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)
cargo clippy --locked --workspace --all-targets -- -D warnings
(cd plugins && cargo clippy --locked --release -- -D warnings)

echo "== host: unit and end-to-end tests"
cargo test --locked --workspace
