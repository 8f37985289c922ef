#!/usr/bin/env bash
# Builds Ward and its example plugins, then starts `ward serve` on the embedded
# default (SQLite and media in ~/.local/share/ward), with the example plugins
# registered (Rust, Python and JavaScript) and an example task `hello` ready.
# Installs the wasm32-wasip2 target when missing. Extra arguments go to `ward`.
set -euo pipefail
cd "$(dirname "$0")"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
(cd plugins && cargo build --release --locked)
# The Python and JavaScript examples: each script installs its toolchain into
# plugins/target on first use and rebuilds only what changed.
plugins/python/build.sh || echo "warning: the Python examples were not built" >&2
plugins/js/build.sh || echo "warning: the JavaScript examples were not built" >&2
cargo build --release --locked -p ward

if [ $# -gt 0 ]; then
  exec ./target/release/ward "$@"
fi
exec ./target/release/ward serve
