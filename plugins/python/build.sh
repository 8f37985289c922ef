#!/usr/bin/env bash
# Builds the Python example plugins into plugins/target/python/NAME.wasm with
# componentize-py (pinned), installed from PyPI into plugins/target/ on first
# use. Each plugin is a directory with an `app.py` whose action uses the SDK in
# sdk/python. A plugin is rebuilt only when its sources, the SDK or the WIT
# world changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
version=0.25.1
venv="$root/plugins/target/toolchains/componentize-py-$version"
out="$root/plugins/target/python"
if [ ! -x "$venv/bin/componentize-py" ]; then
  echo "installing componentize-py $version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version"
fi
mkdir -p "$out"
for dir in "$here"/*/; do
  name=$(basename "$dir")
  [ -f "$dir/app.py" ] || continue
  wasm="$out/$name.wasm"
  if [ -f "$wasm" ] && [ -z "$(find "$dir" "$root/sdk/python" "$root/wit" -newer "$wasm" -type f -print -quit)" ]; then
    continue
  fi
  echo "building $name (Python)" >&2
  "$venv/bin/componentize-py" -d "$root/wit" -w action componentize \
    -p "$root/sdk/python" -p "$dir" app -o "$wasm.part" >/dev/null
  mv "$wasm.part" "$wasm"
done
