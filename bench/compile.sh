#!/usr/bin/env bash
# Compile worker benchmark: end-to-end job time against the raw build command, side by side.
#
#   bench/compile.sh            # on the fakeqmk fixture (tests/fixtures/fakeqmk), always
#   OVEN_QMK_HOME=~/qmk_firmware bench/compile.sh   # also on a real tree (qmk on PATH)
#
# For each tree: the raw `qmk compile -j 2` of three keymap variants (median of 3; each run is a
# new keymap for an already built keyboard), the worker's job time for the same variants (median
# of 3, after one cold job), an identical resubmission (result cache), and the per-job cost of
# composing the GPL source archive (median of 5). Another keyboard: OVEN_BENCH_KEYMAP=<keymap.json>.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cargo build -q --release -p oven-tests --example compile_bench
bench_bin=$root/target/release/examples/compile_bench

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

bench_tree() {
  local name=$1 home=$2 qmk=$3 keymap=$4 raw_env=${5:-}
  local work; work=$(mktemp -d)
  echo "== $name ($home)"
  "$bench_bin" "$home" "$qmk" "$keymap" "$work/variants" | tee "$work/worker.txt"

  # The raw command on the same keymaps, in a private build directory (fixture) or the tree.
  local times=()
  for i in 0 1 2; do
    local t0 t1
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086 # raw_env is a list of VAR=value words
    (cd "$home" && env QMK_HOME="$home" ${raw_env//@WORK@/$work} "$qmk" compile -j 2 "$work/variants/variant$i.json" >"$work/raw$i.log" 2>&1)
    t1=$(date +%s.%N)
    times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')")
  done
  local raw; raw=$(printf '%s\n' "${times[@]}" | median)
  local worker; worker=$(awk '$1=="worker_new_keymap_median" {print $2}' "$work/worker.txt")
  printf '%-44s %8s s\n' "raw qmk compile -j 2, new keymap (median of 3)" "$raw"
  printf '%-44s %8s s\n' "worker job, new keymap (median of 3)" "$worker"
  printf '%-44s %8s\n' "ratio worker/raw" "$(awk -v w="$worker" -v r="$raw" 'BEGIN {printf "%.2f", w / r}')"
  rm -rf "$work"
}

fixture=$root/tests/fixtures/fakeqmk
cat >"${TMPDIR:-/tmp}/oven-bench-fixture.json" <<'JSON'
{"version": 1, "keyboard": "fakekb", "keymap": "bench", "layout": "LAYOUT_ortho_2x2",
 "layers": [["KC_A", "KC_B", "MO(1)", "KC_D"], ["KC_1", "KC_2", "KC_3", "KC_4"]]}
JSON
# The fixture tree is in the repository: its raw builds go to a scratch BUILD_DIR.
bench_tree fakeqmk "$fixture/qmk_firmware" "$fixture/bin/qmk" "${TMPDIR:-/tmp}/oven-bench-fixture.json" "BUILD_DIR=@WORK@/rawbuild"

if [ -n "${OVEN_QMK_HOME:-}" ]; then
  kb_json=${OVEN_BENCH_KEYMAP:-$root/bench/compile-dz60.json}
  bench_tree real "$OVEN_QMK_HOME" "$(command -v qmk)" "$kb_json"
fi
