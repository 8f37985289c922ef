#!/usr/bin/env bash
# Builds the JavaScript example plugins into plugins/target/js/NAME.wasm with
# componentize-js (pinned), installed from npm into plugins/target/ on first
# use. Each plugin is a directory with an `app.js` (an ES module exporting
# `run`, made with the SDK in sdk/js, which the build puts beside it). A plugin
# is rebuilt only when its sources, the SDK or the WIT world changed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
version=0.23.0
tools="$root/plugins/target/toolchains/componentize-js-$version"
out="$root/plugins/target/js"
if [ ! -f "$tools/node_modules/@bytecodealliance/componentize-js/package.json" ]; then
  echo "installing componentize-js $version into $tools" >&2
  mkdir -p "$tools"
  (cd "$tools" && npm install --silent --no-audit --no-fund --no-save \
    "@bytecodealliance/componentize-js@$version" >/dev/null)
fi
cat > "$tools/build.mjs" <<'JS'
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
const [source, wit, out] = process.argv.slice(2);
// No wasi:http imports: an action reaches the network only through grants.
const { component } = await componentize({
  sourcePath: source, witPath: wit, worldName: "action",
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
JS
mkdir -p "$out"
for dir in "$here"/*/; do
  name=$(basename "$dir")
  [ -f "$dir/app.js" ] || continue
  wasm="$out/$name.wasm"
  if [ -f "$wasm" ] && [ -z "$(find "$dir" "$root/sdk/js" "$root/wit" -newer "$wasm" -type f -print -quit)" ]; then
    continue
  fi
  echo "building $name (JavaScript)" >&2
  stage="$root/plugins/target/js-build/$name"
  rm -rf "$stage" && mkdir -p "$stage"
  cp -R "$dir"/. "$stage"/
  cp "$root/sdk/js/ward-sdk.js" "$stage/"
  (cd "$stage" && node "$tools/build.mjs" app.js "$root/wit" "$wasm.part")
  mv "$wasm.part" "$wasm"
done
