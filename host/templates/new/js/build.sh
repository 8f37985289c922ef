#!/usr/bin/env bash
# Builds dist/{{name}}.wasm with componentize-js {{componentize_js}} (installed
# from npm into .toolchain/ on first use).
set -euo pipefail
cd "$(dirname "$0")"
tools=.toolchain/componentize-js-{{componentize_js}}
if [ ! -f "$tools/node_modules/@bytecodealliance/componentize-js/package.json" ]; then
  mkdir -p "$tools"
  (cd "$tools" && npm install --silent --no-audit --no-fund --no-save \
    "@bytecodealliance/componentize-js@{{componentize_js}}" >/dev/null)
fi
cat > "$tools/build.mjs" <<'JS'
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
const [source, wit, out] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath: source, witPath: wit, worldName: "action",
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
JS
# componentize-js reports a syntax error without its place; node names the line.
node --check app.js
mkdir -p dist
node "$tools/build.mjs" app.js wit "dist/{{name}}.wasm"
echo "built dist/{{name}}.wasm: ward run dist/{{name}}.wasm --input '{\"name\":\"Ada\"}'"
