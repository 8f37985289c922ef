#!/usr/bin/env bash
# Runs Ward's whole test suite: formatting, lints, the plugins' own tests,
# the host's unit and end-to-end tests (which run the built plugins), the
# API fuzzed from its OpenAPI document, the web page in headless Chromium,
# and a short run of each fuzz target.
# Installs the wasm32-wasip2 target and builds plugins/ first. Exits non-zero
# on any failure.
#
# Lints run inside the builds the tests need rather than in a `cargo clippy`
# of their own: clippy-driver compiles the local crates (RUSTC_WORKSPACE_WRAPPER,
# with `-D warnings` handed over in CLIPPY_ARGS exactly as `cargo clippy`
# does), so nothing is compiled twice, and a lint fails the build.
set -euo pipefail
cd "$(dirname "$0")"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
host=$(rustc -vV | sed -n 's/^host: //p')
clippy=$(rustup which clippy-driver) || {
  echo "clippy is not installed: rustup component add clippy" >&2
  exit 1
}
export RUSTC_WORKSPACE_WRAPPER="$clippy"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
# Incremental state costs time on a cold build and disk on every one (it
# grew to 26 GB here over a day of runs, and a CI run out of disk fails):
# off unless the caller asks for it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Each stage says when it starts, so a slow CI run shows where time went.
stage() { echo "== $* (at ${SECONDS}s)"; }

stage "formatting"
cargo fmt --all -- --check
(cd plugins && cargo fmt --all -- --check)

stage "plugins: build (wasm32-wasip2) and test ($host), linted as they compile"
(cd plugins && cargo build --release --locked && cargo test --locked --target "$host")

stage "plugins in Python: build (componentize-py, installed from PyPI on first use)"
plugins/python/build.sh

stage "plugins in JavaScript: build (componentize-js, installed from npm on first use)"
plugins/js/build.sh

stage "host: build every target, linted as it compiles"
cargo test --locked --workspace --all-targets --no-run

stage "host: unit and end-to-end tests"
cargo test --locked --workspace

stage "API: schemathesis against the served OpenAPI (50 examples per operation, no 5xx, schema-conformant)"
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi
PATH="$PWD/$venv/bin:$PATH" MAX_EXAMPLES=50 tests/schemathesis.sh

stage "web page: end to end in headless Chromium (chromium and playwright-core installed on first use)"
tests/web/run.sh

stage "fuzz: each target for ${FUZZ_SECONDS:-10}s (cargo-fuzz, installed on first use; a crash fails the run)"
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" fuzz/run.sh

echo "== all passed in ${SECONDS}s"
