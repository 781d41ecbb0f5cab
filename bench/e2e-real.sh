#!/usr/bin/env bash
# End to end on a real qmk_firmware tree, through `oven serve` and its HTTP API, as a browser
# would: POST a Configurator keymap.json, poll the status until the job is done, download the
# firmware, the GPL source archive and the keymap, and check each. Prints every timing.
#
#   OVEN_QMK_HOME=~/qmk_firmware bench/e2e-real.sh          # `qmk` must be on PATH
#
# Per keyboard (dz60 = AVR, .hex; planck/rev6 = ARM, .bin), on one server (so the second
# keyboard finds the base source archive made for the first):
#   first job      the keymap on a cold worker (fresh data dir: no warm objects, no ccache;
#                  the first job of all also zips the tree into the base source archive)
#   identical      the same keymap.json again (result cache)
#   second keymap  another keymap.json for the same keyboard (warm objects)
#   one key        the first keymap with one key changed (warm objects, same layout)
# and, with OVEN_E2E_RAW=1, the raw `qmk compile -j 2` of the same keymap.json in the tree
# itself, three times in a row after removing its object directory (median of 3).
#
# Optional: OVEN_BIN (default target/release/oven, built if missing), OVEN_E2E_KEYBOARDS
# (default "dz60 planck_rev6": names of bench/keymaps/<name>.json and <name>_b.json),
# OVEN_E2E_KEEP=1 keeps the data dir and the server log.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
: "${OVEN_QMK_HOME:?set OVEN_QMK_HOME to a qmk_firmware tree}"
command -v qmk >/dev/null || { echo "qmk is not on PATH" >&2; exit 2; }
for tool in curl jq unzip python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done

oven=${OVEN_BIN:-$root/target/release/oven}
if [ ! -x "$oven" ]; then
  cargo build -q --release -p oven --bin oven
fi

data=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
api=http://127.0.0.1:$port
log=$data/serve.log
"$oven" serve --listen "127.0.0.1:$port" --data-dir "$data/oven" --qmk-home "$OVEN_QMK_HOME" \
  >"$log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [ -n "${OVEN_E2E_KEEP:-}" ]; then echo "kept $data"; else rm -rf "$data"; fi
}
trap cleanup EXIT
for _ in $(seq 100); do
  curl -fs "$api/v1/healthcheck" >/dev/null && break
  sleep 0.1
done

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
load() { cut -d' ' -f1 /proc/loadavg; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
row() { printf '%-48s %9s s   load %s\n' "$1" "$2" "$(load)"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# Submits $1 (a keymap.json), polls every 0.1 s; prints the job id and writes the time to
# $data/elapsed (the caller runs it in a subshell).
submit_and_wait() {
  local file=$1 t0 t1 id status
  t0=$(now)
  id=$(curl -fsS -H 'Content-Type: application/json' --data-binary @"$file" "$api/v1/compile" |
    jq -er 'select(.enqueued == true) | .job_id') || fail "POST $file"
  while :; do
    status=$(curl -fsS "$api/v1/compile/$id" | jq -r .status)
    case $status in
      finished | failed) break ;;
    esac
    sleep 0.1
  done
  t1=$(now)
  secs "$t0" "$t1" >"$data/elapsed"
  [ "$status" = finished ] || fail "job $id for $file: $status"
  echo "$id"
}

# Checks the job's result and its three downloads.
check_job() {
  local id=$1 file=$2 ext=$3 kb_dir=$4 dir=$data/dl/$id
  mkdir -p "$dir"
  curl -fsS "$api/v1/compile/$id" >"$dir/status.json"
  local rc fw
  rc=$(jq -r .result.returncode "$dir/status.json")
  [ "$rc" = 0 ] || fail "job $id: returncode $rc: $(jq -r .result.output "$dir/status.json" | tail -20)"
  fw=$(jq -r .result.firmware_filename "$dir/status.json")
  local kb km
  kb=$(jq -r .keyboard "$file")
  km=$(jq -r .keymap "$file")
  [ "$fw" = "${kb//\//_}_$km.$ext" ] || fail "job $id: firmware_filename $fw"
  curl -fsSL "$api/v1/compile/$id/download" -o "$dir/$fw"
  if [ "$ext" = hex ]; then
    python3 - "$dir/$fw" <<'PY' || fail "job $id: $fw is not valid Intel HEX"
import sys
lines = open(sys.argv[1]).read().split()
assert lines and lines[-1] == ":00000001FF", "no end record"
for l in lines:
    b = bytes.fromhex(l[1:])
    assert l[0] == ":" and len(b) == b[0] + 5 and sum(b) % 256 == 0, l
PY
  else
    # An ARM image starts with its vector table: initial stack pointer in RAM, reset in flash.
    python3 - "$dir/$fw" <<'PY' || fail "job $id: $fw does not start with a Cortex-M vector table"
import struct, sys
d = open(sys.argv[1], "rb").read()
sp, reset = struct.unpack("<II", d[:8])
assert len(d) > 1024 and sp >> 28 == 2 and reset & 1 and reset >> 28 == 0, (hex(sp), hex(reset))
PY
  fi
  curl -fsSL "$api/v1/compile/$id/keymap" -o "$dir/keymap.json"
  [ "$(jq -S . "$dir/keymap.json")" = "$(jq -S . "$file")" ] || fail "job $id: /keymap differs"
  local src
  src=$(jq -r .result.source_archive "$dir/status.json")
  curl -fsSL "$api/v1/compile/$id/source" -o "$dir/$src"
  unzip -tq "$dir/$src" >/dev/null || fail "job $id: unzip -t $src"
  unzip -Z1 "$dir/$src" >"$dir/list"
  local want
  for want in "$(jq -r .result.keymap_archive "$dir/status.json")" "$fw" quantum/quantum.h \
    "keyboards/$kb_dir/" Makefile; do
    grep -q "^$want" "$dir/list" || fail "job $id: $src lacks $want"
  done
  [ "$(unzip -p "$dir/$src" "$fw" | cmp - "$dir/$fw" && echo same)" = same ] ||
    fail "job $id: firmware in the archive differs from /download"
  printf '  ok: %s (%s bytes), %s (%s bytes, %s entries), keymap\n' "$fw" \
    "$(stat -c %s "$dir/$fw")" "$src" "$(stat -c %s "$dir/$src")" "$(wc -l <"$dir/list")"
}

# The job's own numbers from its result: compile (the build command) and queue wait.
job_detail() {
  jq -r '"  compile_seconds \(.result.compile_seconds // "-")  queue_seconds \(.result.queue_seconds // "-")  cached \(.result.cached // false)"' \
    "$data/dl/$1/status.json"
}

echo "oven serve on $api, tree $OVEN_QMK_HOME ($(git -C "$OVEN_QMK_HOME" rev-parse --short HEAD 2>/dev/null || echo '?')), nproc $(nproc)"
for name in ${OVEN_E2E_KEYBOARDS:-dz60 planck_rev6}; do
  a=$root/bench/keymaps/$name.json
  b=$root/bench/keymaps/${name}_b.json
  kb=$(jq -r .keyboard "$a")
  case $kb in dz60) ext=hex ;; *) ext=bin ;; esac
  echo "== $kb"
  id=$(submit_and_wait "$a"); row "first job (cold worker)" "$(cat "$data/elapsed")"; check_job "$id" "$a" "$ext" "$kb"; job_detail "$id"
  id=$(submit_and_wait "$a"); row "identical resubmission" "$(cat "$data/elapsed")"; check_job "$id" "$a" "$ext" "$kb"; job_detail "$id"
  id=$(submit_and_wait "$b"); row "second keymap, warm worker" "$(cat "$data/elapsed")"; check_job "$id" "$b" "$ext" "$kb"; job_detail "$id"
  one=$data/${name}_onekey.json
  jq '.layers[0][1] = "KC_F13"' "$a" >"$one"
  id=$(submit_and_wait "$one"); row "first keymap, one key changed" "$(cat "$data/elapsed")"; check_job "$id" "$one" "$ext" "$kb"; job_detail "$id"

  if [ -n "${OVEN_E2E_RAW:-}" ]; then
    km=$(jq -r .keymap "$a")
    rm -rf "$OVEN_QMK_HOME/.build/obj_${kb//\//_}_$km"
    times=()
    for i in 1 2 3; do
      t0=$(now)
      (cd "$OVEN_QMK_HOME" && QMK_HOME=$OVEN_QMK_HOME qmk compile -j 2 "$a" >"$data/raw-$name-$i.log" 2>&1) ||
        fail "raw qmk compile of $a, see $data/raw-$name-$i.log"
      t=$(secs "$t0" "$(now)")
      times+=("$t")
      row "raw qmk compile -j 2, run $i" "$t"
    done
    row "raw qmk compile -j 2, median of 3" "$(printf '%s\n' "${times[@]}" | median)"
  fi
done
echo "== source archive"
plain_log=$(sed 's/\x1b\[[0-9;]*m//g' "$log")
grep -o 'base source archive ready.*' <<<"$plain_log" | sed 's/^/  /' || true
base_zip=$(find "$data/oven/artifacts/sources" -name '*.zip' -printf '%s\n' 2>/dev/null | head -1)
echo "  base archive bytes ${base_zip:-?}"
composed=$(grep -o 'source archive composed.*' <<<"$plain_log" | grep -o 'seconds=[0-9.e-]*' | cut -d= -f2)
echo "  per job (s): $(echo $composed)"
row "source archive per job (median of $(wc -w <<<"$composed"))" "$(tr ' ' '\n' <<<"$composed" | grep . | median)"
