#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis (every check: no
# server error, responses that match the document's schemas, status codes and headers, schema-
# valid requests accepted, schema-invalid ones refused, `Allow` on OPTIONS, ...). Runs a debug
# `oven serve` with its worker on a temporary data directory, building with the fakeqmk fixture
# (a real avr-gcc build behind qmk's interface), so submitted jobs finish and the links from
# POST /v1/compile to the status and download routes have real jobs behind them.
#
#   scripts/api-fuzz.sh                 # what scripts/test.sh runs
#   OVEN_FUZZ_EXAMPLES=200 OVEN_FUZZ_SEED=random scripts/api-fuzz.sh   # a longer, new run
#
# Needs schemathesis in the venv (scripts/test.sh installs it). Bounded: at most
# OVEN_FUZZ_TIMEOUT seconds (default 420) for schemathesis itself.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=${XDG_CACHE_HOME:-$HOME/.cache}/oven/venv
examples=${OVEN_FUZZ_EXAMPLES:-15}
# A fixed seed: CI runs the same cases every time; OVEN_FUZZ_SEED=random explores.
seed=${OVEN_FUZZ_SEED:-20260101}

cargo build -q --locked -p oven --bin oven
oven=${CARGO_TARGET_DIR:-$root/target}/debug/oven
data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
OVEN_QMK_BIN=$root/tests/fixtures/fakeqmk/bin/qmk "$oven" serve \
  --listen "127.0.0.1:$port" --data-dir "$data/oven" \
  --qmk-home "$root/tests/fixtures/fakeqmk/qmk_firmware" >"$data/serve.log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/v1/healthcheck" >/dev/null && break
  sleep 0.1
done

seed_args=()
[ "$seed" = random ] || seed_args=(--seed "$seed")
status=0
timeout "${OVEN_FUZZ_TIMEOUT:-420}" "$venv/bin/schemathesis" \
  --config-file "$root/scripts/schemathesis.toml" run \
  "http://127.0.0.1:$port/v1/openapi.json" \
  --checks all --max-examples "$examples" "${seed_args[@]}" \
  --generation-database none --workers 2 --no-color || status=$?
if [ "$status" != 0 ]; then
  echo "schemathesis failed (exit $status); the server's log:" >&2
  tail -n 50 "$data/serve.log" >&2
fi
exit "$status"
