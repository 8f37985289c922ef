#!/usr/bin/env bash
# The web page's end-to-end tests (tests/web/e2e.mjs) in headless Chromium:
# installs Debian's chromium, nodejs and npm (apt, as root or through sudo)
# and playwright-core (npm, pinned by package-lock.json) when missing, then runs
# them against target/debug/ward (WARD_BIN overrides). Screenshots go to
# target/web-screenshots/. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Debian packages through apt-get, as root or through sudo; a clear error
# otherwise. Tries the package lists as they are first, then updates them.
apt_install() {
  local apt
  if [ "$(id -u)" = 0 ]; then
    apt=(apt-get)
  elif command -v sudo >/dev/null; then
    apt=(sudo apt-get)
  else
    echo "$* missing and cannot be installed (not root, no sudo): apt-get install $*" >&2
    exit 1
  fi
  "${apt[@]}" install -y --no-install-recommends "$@" || {
    "${apt[@]}" update
    "${apt[@]}" install -y --no-install-recommends "$@"
  }
}

chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi
if [ ! -d tests/web/node_modules/playwright-core ]; then
  (cd tests/web && npm ci --no-audit --no-fund)
fi
bin=${WARD_BIN:-target/debug/ward}
if [ ! -x "$bin" ]; then
  cargo build -p ward --bin ward
fi
WARD_BIN=$(realpath "$bin") CHROMIUM="$chromium" node tests/web/e2e.mjs
