#!/usr/bin/env bash
# Builds the fuzz targets with cargo-fuzz (installed, pinned, when missing; a
# stable toolchain with `-s none`) and runs each for FUZZ_SECONDS (default
# 20) from the committed seeds. A crash fails the run; its input is kept
# under fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
if ! cargo fuzz --version 2>/dev/null | grep -q "0.13.2"; then
  cargo install cargo-fuzz --version 0.13.2 --locked
fi
cargo fuzz build -s none
for target in task_spec template plugin_validator; do
  mkdir -p "fuzz/corpus/$target"
  echo "== fuzz $target (${seconds}s)"
  cargo fuzz run -s none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | grep -E "^(#|Done|stat::number_of_executed_units|stat::peak_rss)|ERROR|panicked|SUMMARY" | tail -6
  [ "${PIPESTATUS[0]}" -eq 0 ]
done
