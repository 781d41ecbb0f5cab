#!/usr/bin/env bash
# The baseline for bench/e2e-real.sh: raw `qmk compile -j 2` of the same keymap.json files in
# the tree itself, three runs in a row after removing the keymap's object directory (run 1 is
# cold, like the worker's first job). Prints each run, the median, and the load average.
#
#   OVEN_QMK_HOME=~/qmk_firmware bench/raw-qmk.sh [bench/keymaps/dz60.json ...]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OVEN_QMK_HOME:?set OVEN_QMK_HOME to a qmk_firmware tree}"
command -v qmk >/dev/null || { echo "qmk is not on PATH" >&2; exit 2; }
[ $# -gt 0 ] || set -- bench/keymaps/dz60.json bench/keymaps/planck_rev6.json
logs=$(mktemp -d)
for file in "$@"; do
  file=$(realpath "$file")
  kb=$(jq -r .keyboard "$file")
  km=$(jq -r .keymap "$file")
  rm -rf "$OVEN_QMK_HOME/.build/obj_${kb//\//_}_$km"
  times=()
  for i in 1 2 3; do
    t0=$(date +%s.%N)
    (cd "$OVEN_QMK_HOME" && QMK_HOME=$OVEN_QMK_HOME qmk compile -j 2 "$file" >"$logs/$i.log" 2>&1) ||
      { tail -30 "$logs/$i.log"; exit 1; }
    t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')
    times+=("$t")
    printf '%-48s %9s s   load %s\n' "raw $kb run $i" "$t" "$(cut -d' ' -f1 /proc/loadavg)"
  done
  printf '%-48s %9s s\n' "raw $kb median of 3" \
    "$(printf '%s\n' "${times[@]}" | sort -n | sed -n 2p)"
done
rm -rf "$logs"
