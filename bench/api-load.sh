#!/usr/bin/env bash
# Load test of the HTTP API of `oven serve` (release build) on a fresh temp data dir:
#   1. POST /v1/compile (every job durably stored: SQLite synchronous=FULL, one group commit per batch)
#   2. GET  /v1/compile/<id> (status of a queued job)
#   3. GET  /v1/skeletons (a static document: the router's ceiling, no storage involved)
#   4. POST without fsync (hidden --bench-no-fsync), to separate the API cost from the disk
# and the same submit through the generic store-then-enqueue path (two durable writes per
# request) as the baseline, side by side.
#
# Usage: bench/api-load.sh [duration_s=20] [connections=16] [threads=2]
#   OVEN_BIN=path: load that binary instead of building this checkout (to compare two builds
#   side by side on the same machine state).
#   PIN=1: the server on CPU 0 and wrk on the other CPUs (taskset), so that the load generator
#   does not take the server's core: on a 2-core machine wrk's threads and the server's
#   otherwise share both cores, and the tail is the scheduler's time slice, not the server's.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-20}"
CONNS="${2:-16}"
THREADS="${3:-2}"

if ! command -v wrk >/dev/null; then
  (apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null
fi
if [ -n "${OVEN_BIN:-}" ]; then
  BIN=$OVEN_BIN
else
  cargo build --release -p oven --bin oven >&2
  BIN="${CARGO_TARGET_DIR:-target}/release/oven"
fi

SERVER_PIN="" WRK_PIN=""
if [ "${PIN:-0}" = 1 ]; then
  SERVER_PIN="taskset -c 0"
  WRK_PIN="taskset -c 1-$(($(nproc) - 1))"
fi

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # start <name> [extra args]; sets URL
  local name="$1"; shift
  local port; port="$(free_port)"
  RUST_LOG=warn $SERVER_PIN "$BIN" serve --no-worker --listen "127.0.0.1:$port" --data-dir "$TMP/$name" "$@" >"$TMP/$name.log" 2>&1 &
  PIDS+=("$!")
  URL="http://127.0.0.1:$port"
  for _ in $(seq 100); do curl -sf "$URL/v1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "server $name did not start" >&2; cat "$TMP/$name.log" >&2; exit 1
}

BODY='{"keyboard":"clueboard/66/rev3","keymap":"bench","layout":"LAYOUT","version":1,"notes":"","documentation":"bench","layers":[["KC_GRV","KC_1","KC_2","KC_3","KC_4","KC_5","KC_6","KC_7","KC_8","KC_9","KC_0","KC_MINS","KC_EQL","KC_BSPC","KC_TAB","KC_Q","KC_W","KC_E","KC_R","KC_T","KC_Y","KC_U","KC_I","KC_O","KC_P","KC_LBRC","KC_RBRC","KC_BSLS","KC_CAPS","KC_A","KC_S","KC_D","KC_F","KC_G","KC_H","KC_J","KC_K","KC_L","KC_SCLN","KC_QUOT","KC_ENT","KC_LSFT","KC_Z","KC_X","KC_C","KC_V","KC_B","KC_N","KC_M","KC_COMM","KC_DOT","KC_SLSH","KC_RSFT","KC_LCTL","KC_LGUI","KC_LALT","KC_SPC","KC_RALT","MO(1)","LT(2,KC_APP)","KC_RCTL"],["KC_TRNS","KC_F1","KC_F2","KC_F3","KC_F4","KC_F5","KC_F6","KC_F7","KC_F8","KC_F9","KC_F10","KC_F11","KC_F12","KC_DEL","KC_TRNS","KC_TRNS","KC_UP","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_LEFT","KC_DOWN","KC_RGHT","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","KC_TRNS","MT(MOD_LCTL|MOD_LSFT,KC_ESC)","KC_TRNS"]]}'
printf '%s' "$BODY" >"$TMP/body.json"
cat >"$TMP/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$TMP/body.json", "rb"); wrk.body = f:read("*a"); f:close()
done = function(summary, latency, requests)
  io.write(string.format("non2xx=%d\n", summary.errors.status))
end
LUA

run() { # run <label> <url> [lua]
  local label="$1" url="$2" lua="${3:-}"
  local out
  if [ -n "$lua" ]; then
    out="$($WRK_PIN wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency -s "$lua" "$url")"
  else
    out="$($WRK_PIN wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url")"
  fi
  local rps p50 p99 errs
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1=="50%" {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  errs="$(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr '\n' ' ' || true)"
  printf '%-44s %10s req/s   p50 %-9s p99 %-9s %s\n' "$label" "$rps" "$p50" "$p99" "$errs"
}

echo "oven API load: wrk -t$THREADS -c$CONNS -d${DURATION}s, $(nproc) cores${SERVER_PIN:+ (server: $SERVER_PIN, wrk: $WRK_PIN)}, load average $(cut -d' ' -f1-3 /proc/loadavg), $BIN"
start oven
ID="$(curl -sf -X POST -H 'Content-Type: application/json' --data-binary @"$TMP/body.json" "$URL/v1/compile" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')"
run "POST /v1/compile (one write per submit)" "$URL/v1/compile" "$TMP/post.lua"
STORED="$(curl -sf "$URL/v1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["queue_length"])')"
echo "  jobs durably queued after the run: $STORED"
run "GET /v1/compile/<id>" "$URL/v1/compile/$ID"
run "GET /v1/skeletons (static ceiling)" "$URL/v1/skeletons"

start baseline --bench-two-writes
run "baseline: POST, store then enqueue (2 writes)" "$URL/v1/compile" "$TMP/post.lua"

# Where the submit time goes: the same server without fsync (the API's own cost), and the
# disk's fsync latency, which bounds durable submits at about connections / commit latency.
start nofsync --bench-no-fsync
run "POST without fsync (API cost only)" "$URL/v1/compile" "$TMP/post.lua"
SYNC="$(dd if=/dev/zero of="$TMP/fsync.test" bs=4k count=200 oflag=dsync 2>&1 | tail -1)"
echo "disk: 200 x 4 KiB O_DSYNC writes: $SYNC"
