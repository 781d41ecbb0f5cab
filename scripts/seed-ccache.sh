#!/usr/bin/env bash
# Seeds a compiler cache for Oven's builds: builds one keymap of each listed keyboard through
# `oven serve` itself (same overlay, build name, flags and ccache settings as every job), with
# CACHE_DIR as ccache's second-level (file) storage, written through, and the keyboards'
# folders in CACHE_DIR/oven-keyboards.txt. Oven reads it read-only when OVEN_CCACHE_SEED names
# it (oven/src/worker/build.rs, ccache_env), so a fresh worker's first build of a seeded
# keyboard hits it for every unit that does not depend on the keymap; builds of other keyboards
# do not use ccache (a miss costs more than no cache).
# Only those keyboards: ccache hits need the same command line, and every QMK unit is compiled
# with its keyboard's flags (another keyboard on the same MCU hits nothing).
#
#   scripts/seed-ccache.sh TREE KEYBOARD_LIST CACHE_DIR [KEYMAPS_DIR]
#
#   TREE           the qmk_firmware tree the image/worker builds in (read-only is fine)
#   KEYBOARD_LIST  a file, one keyboard per line (`#` comments allowed), e.g.
#                  scripts/seed-keyboards.txt
#   CACHE_DIR      where the cache goes (created; an existing cache is added to)
#   KEYMAPS_DIR    optional: keymap.json files to take each keyboard's keymap from (the
#                  Configurator's bundled public/keymaps/); otherwise the tree's
#                  keyboards/<kb>/keymaps/default/keymap.json, else a one-layer keymap
#                  of KC_NO made from the keyboard's layout (`qmk info`).
#
# Needs: ccache, qmk and the toolchains on PATH; `oven` on PATH or OVEN_BIN. Prints the cache
# statistics and its size. Keyboards that do not build are reported and skipped.
#
# In the compile image (functions/compile/Dockerfile), after the tree, the toolchains, ccache
# and the oven binary are in place:
#   RUN scripts/seed-ccache.sh /qmk_firmware scripts/seed-keyboards.txt /opt/oven/ccache \
#       && rm -rf /tmp/oven-seed-*
#   ENV OVEN_CCACHE_SEED=/opt/oven/ccache
set -euo pipefail
[ $# -ge 3 ] || { sed -n '2,20p' "$0"; exit 2; }
tree=$(realpath "$1")
list=$2
cache=$(mkdir -p "$3" && realpath "$3")
keymaps=${4:-}
oven=${OVEN_BIN:-$(command -v oven || true)}
[ -x "$oven" ] || { echo "oven not found: put it on PATH or set OVEN_BIN" >&2; exit 2; }
command -v ccache >/dev/null || { echo "ccache is not on PATH: builds would not use it" >&2; exit 2; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/oven-seed-XXXXXX")
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$scratch"; }
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
OVEN_LOG=warn OVEN_CCACHE_SEED=$cache OVEN_CCACHE_SEED_WRITE=1 "$oven" serve --listen "127.0.0.1:$port" --data-dir "$scratch/data" --qmk-home "$tree" \
  >"$scratch/serve.log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 300); do curl -sf "$url/v1" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "$url/v1" >/dev/null || { cat "$scratch/serve.log" >&2; exit 1; }

keymap_of() { # keymap_of KB -> path of a keymap.json for it, or nothing
  local kb=$1 f
  if [ -n "$keymaps" ]; then
    f=$(grep -rl --include='*.json' "\"keyboard\": *\"$kb\"" "$keymaps" 2>/dev/null | head -1 || true)
    [ -n "$f" ] && { echo "$f"; return; }
  fi
  f="$tree/keyboards/$kb/keymaps/default/keymap.json"
  [ -f "$f" ] && { echo "$f"; return; }
  # No JSON keymap: one made from the keyboard's layout (`qmk info`), every key KC_NO. What the
  # keys are does not matter: only the units that do not depend on the keymap are kept.
  # (`qmk c2json --no-cpp` of the C default keymap was tried: it keeps layer names such as
  # MO(_FN), which a JSON keymap cannot define, and misses keymaps in a parent folder.)
  if (cd "$tree" && QMK_HOME=$tree qmk info -kb "$kb" -f json 2>/dev/null) | python3 -c '
import json, sys
kb, out = sys.argv[1], sys.argv[2]
layouts = json.load(sys.stdin).get("layouts") or {}
if not layouts:
    sys.exit(1)
name = "LAYOUT" if "LAYOUT" in layouts else next(iter(layouts))
keys = ["KC_NO"] * len(layouts[name]["layout"])
json.dump({"version": 1, "keyboard": kb, "keymap": "oven_seed", "layout": name, "layers": [keys]}, open(out, "w"))
' "$kb" "$scratch/$$.json"; then
    echo "$scratch/$$.json"
  fi
}

ok=0 failed=0
while read -r kb _; do
  case "$kb" in ''|'#'*) continue ;; esac
  f=$(keymap_of "$kb")
  if [ -z "$f" ]; then echo "skip $kb: no keymap found" >&2; failed=$((failed + 1)); continue; fi
  t0=$(date +%s.%N)
  id=$(curl -sf -X POST -H 'Content-Type: application/json' --data-binary @"$f" "$url/v1/compile" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])') || {
    echo "skip $kb: refused by the API" >&2; failed=$((failed + 1)); continue; }
  while :; do
    doc=$(curl -sf "$url/v1/compile/$id")
    state=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(d["status"], (d.get("result") or {}).get("returncode"))' "$doc")
    folder=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]).get("result") or {}; print(r.get("keyboard_folder") or r.get("keyboard") or "")' "$doc")
    case "$state" in finished*|failed*) break ;; esac
    sleep 0.2
  done
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  if [ "$state" = "finished 0" ]; then
    ok=$((ok + 1)); echo "seeded $kb ($secs s)"
    # The keyboards builds use the seed for (oven/src/worker/build.rs, SEED_KEYBOARDS).
    grep -qxF "$folder" "$cache/oven-keyboards.txt" 2>/dev/null || echo "$folder" >>"$cache/oven-keyboards.txt"
  else
    failed=$((failed + 1)); echo "skip $kb: build failed ($state); the end of its log:" >&2
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]).get("result") or {}; print(r.get("output", "")[-1500:])' "$doc" |
      sed 's/^/    /' >&2
  fi
done <"$list"

echo "keyboards seeded: $ok, skipped: $failed"
worker_dir=$scratch/data/work
CCACHE_DIR=$worker_dir/ccache ccache --show-stats | sed -n '1,16p'
echo "cache size: $(du -sh "$cache" | cut -f1) ($(du -sb "$cache" | cut -f1) bytes, $(find "$cache" -type f | wc -l) files)"
