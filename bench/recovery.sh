#!/usr/bin/env bash
# Issue 11's scenario on a real qmk_firmware tree: `oven serve`, three jobs submitted, the
# server killed with SIGKILL while the first one compiles, then `oven serve` started again on
# the same data directory. Prints how long after the restart each job finished; the
# interrupted one must be done within OVEN_RECOVERY_LIMIT seconds (default 60).
#
#   OVEN_QMK_HOME=~/qmk_firmware bench/recovery.sh      # `qmk` must be on PATH
#
# Optional: OVEN_BIN (default target/release/oven, built if missing), OVEN_RECOVERY_KEYBOARD
# (default dz60: bench/keymaps/<name>.json, submitted under three keymap names so that no
# result comes from the cache), OVEN_RECOVERY_KILL_AFTER (seconds of compiling before the
# kill, default 5), OVEN_E2E_KEEP=1 keeps the data dir and the server log.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
: "${OVEN_QMK_HOME:?set OVEN_QMK_HOME to a qmk_firmware tree}"
command -v qmk >/dev/null || { echo "qmk is not on PATH" >&2; exit 2; }
for tool in curl jq python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done
oven=${OVEN_BIN:-$root/target/release/oven}
[ -x "$oven" ] || cargo build -q --release -p oven --bin oven
limit=${OVEN_RECOVERY_LIMIT:-60}
kill_after=${OVEN_RECOVERY_KILL_AFTER:-5}
keymap=$root/bench/keymaps/${OVEN_RECOVERY_KEYBOARD:-dz60}.json

data=$(mktemp -d)
log=$data/serve.log
server=
start() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  api=http://127.0.0.1:$port
  "$oven" serve --listen "127.0.0.1:$port" --data-dir "$data/oven" --qmk-home "$OVEN_QMK_HOME" \
    >>"$log" 2>&1 &
  server=$!
  for _ in $(seq 300); do
    curl -fs "$api/v1/healthcheck" >/dev/null && return
    sleep 0.1
  done
  echo "oven serve did not start" >&2
  exit 1
}
cleanup() {
  [ -z "$server" ] || kill "$server" 2>/dev/null || true
  if [ -n "${OVEN_E2E_KEEP:-}" ]; then echo "kept $data"; else rm -rf "$data"; fi
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", b - a}'; }
status() { curl -fsS "$api/v1/compile/$1" | jq -r .status; }

start
echo "oven serve ($oven) on $api, tree $OVEN_QMK_HOME, nproc $(nproc)"
ids=()
for name in recovery_a recovery_b recovery_c; do
  ids+=("$(jq --arg km "$name" '.keymap = $km' "$keymap" |
    curl -fsS -H 'Content-Type: application/json' --data-binary @- "$api/v1/compile" |
    jq -er .job_id)")
done
echo "submitted ${ids[*]}"
# The first job starts once the worker has its base source archive (minutes on a fresh data
# directory); then let it compile a while.
t0=$(now)
until [ "$(status "${ids[0]}")" = running ]; do sleep 0.2; done
echo "first job running after $(secs "$t0" "$(now)") s; killing the server in ${kill_after} s"
sleep "$kill_after"
kill -9 "$server"
wait "$server" 2>/dev/null || true
echo "killed (SIGKILL) while the first job was $(
  # The status as the dead server left it in its database.
  python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select state from jobs where id=?", (sys.argv[2],)).fetchone()[0])' \
    "$data/oven/oven.sqlite3" "${ids[0]}")"

restart=$(now)
start
declare -A done_at=()
n_done=0
while [ "$n_done" -lt 3 ]; do
  for id in "${ids[@]}"; do
    [ -n "${done_at[$id]:-}" ] && continue
    case $(status "$id") in
      finished | failed)
        done_at[$id]=$(secs "$restart" "$(now)")
        n_done=$((n_done + 1))
        ;;
    esac
  done
  [ "$(secs "$restart" "$(now)" | cut -d. -f1)" -lt 900 ] || { echo "jobs not done in 900 s" >&2; exit 1; }
  sleep 0.2
done
for i in 0 1 2; do
  id=${ids[$i]}
  r=$(curl -fsS "$api/v1/compile/$id")
  printf '  job %d %s: %s %s s after the restart (returncode %s, compile %s s)\n' "$((i + 1))" "$id" \
    "$(jq -r .status <<<"$r")" "${done_at[$id]}" "$(jq -r .result.returncode <<<"$r")" \
    "$(jq -r '.result.compile_seconds // "-"' <<<"$r")"
done
first=${done_at[${ids[0]}]}
awk -v t="$first" -v l="$limit" 'BEGIN {exit !(t <= l)}' ||
  { echo "FAIL: the interrupted job took ${first} s after the restart (limit ${limit} s)" >&2; exit 1; }
echo "ok: the interrupted job finished ${first} s after the restart (limit ${limit} s)"
