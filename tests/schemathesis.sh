#!/usr/bin/env bash
# Fuzzes the HTTP API of a real `ward serve` with schemathesis, from the
# OpenAPI document it serves: no response may be a 5xx, and every response
# must fit its documented schema.
#
# Starts target/debug/ward (built first when missing; WARD_BIN overrides)
# on an ephemeral loopback port with a temporary data dir, registering the
# example plugins when plugins/ was built (WARD_PLUGINS overrides). With
# them, the example task `hello` and one finished execution of it are the
# `{id}` of the task and execution paths, so that those operations are
# fuzzed past their 404. Needs `schemathesis` (pip install schemathesis) and
# curl. MAX_EXAMPLES (default 50) bounds the cases per operation, SEED
# (default 1) fixes the data. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v schemathesis >/dev/null || {
  echo "schemathesis is not installed: pip install schemathesis" >&2
  exit 2
}
bin=${WARD_BIN:-target/debug/ward}
if [ ! -x "$bin" ]; then
  cargo build -p ward --bin ward
fi
bin=$(realpath "$bin")

data=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

plugins=${WARD_PLUGINS:-plugins/target/wasm32-wasip2/release}
if [ ! -d "$plugins" ]; then
  plugins="$data/no-plugins"
  mkdir -p "$plugins"
fi
"$bin" serve --listen 127.0.0.1:0 --data-dir "$data/ward" --plugins "$plugins" \
  >"$data/stdout" 2>"$data/stderr" &
server=$!

base=""
for _ in $(seq 1 1200); do
  base=$(sed -n 's/^Ward is serving on \(http:[^ ]*\).*/\1/p' "$data/stdout")
  [ -n "$base" ] && break
  if ! kill -0 "$server" 2>/dev/null; then
    echo "ward serve exited:" >&2
    cat "$data/stderr" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$base" ]; then
  echo "ward serve did not start within 120 s" >&2
  exit 1
fi
api="$base/api/v1"
token=$(cat "$data/ward/admin.token")
auth="Authorization: Bearer $token"
echo "== schemathesis against $api (with the admin token)"

# Real ids for the `{id}` paths, when the example task exists.
config="$data/schemathesis.toml"
: >"$config"
if curl -fsS -H "$auth" "$api/tasks/hello" >/dev/null 2>&1; then
  execution=$(curl -fsS -H "$auth" -XPOST "$api/tasks/hello/executions" -d '{"input":{"name":"fuzz"}}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  for _ in $(seq 1 300); do
    if curl -fsS -H "$auth" "$api/executions/$execution" |
      grep -Eq '"state":"(SUCCESS|WARNING|FAILED|KILLED)"'; then
      break
    fi
    sleep 0.1
  done
  {
    echo '[[operations]]'
    echo 'include-path-regex = "^/api/v1/tasks/\\{id\\}"'
    echo 'parameters = { "path.id" = "hello" }'
    echo
    echo '[[operations]]'
    echo 'include-path-regex = "^/api/v1/executions/\\{id\\}"'
    echo "parameters = { \"path.id\" = \"$execution\" }"
  } >"$config"
  echo "   with task hello and execution $execution"
fi
# The feed of all events, followed, never ends by design: fuzz its pages.
{
  echo
  echo '[[operations]]'
  echo 'include-path = "/api/v1/events"'
  echo 'parameters = { "query.follow" = "false" }'
} >>"$config"

status=0
# From the data dir: schemathesis keeps its example database in the
# working directory.
(
  cd "$data"
  schemathesis --config-file "$config" run "$api/openapi.json" \
    --checks not_a_server_error,response_schema_conformance \
    --header "$auth" \
    --max-examples "${MAX_EXAMPLES:-50}" \
    --phases examples,coverage,fuzzing \
    --request-timeout 10 \
    --workers 1 \
    --seed "${SEED:-1}" \
    --report-dir "$data/report"
) || status=$?

if ! kill -0 "$server" 2>/dev/null; then
  echo "ward serve died during the run:" >&2
  tail -50 "$data/stderr" >&2
  status=1
fi
exit "$status"
