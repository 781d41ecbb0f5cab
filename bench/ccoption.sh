#!/usr/bin/env bash
# QMK's cc-option probe with and without the worker's memo (oven/src/worker/ccoption.rs): raw
# `qmk compile -j 2` of each keymap.json in the tree, 3 runs per mode alternating (off, on, off,
# ...), each after removing the keymap's object directory. Prints per run the wall, user and
# system seconds of the whole build (the build's children included) and the firmware's sha256;
# with strace on PATH, one more run per mode counts the probe compiles (a compiler run with
# -Wl,--unresolved-symbols=ignore-all -o /dev/null).
#
#   OVEN_QMK_HOME=~/qmk_firmware bench/ccoption.sh [bench/keymaps/dz60.json ...]
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OVEN_QMK_HOME:?set OVEN_QMK_HOME to a writable qmk_firmware tree}"
command -v qmk >/dev/null || { echo "qmk is not on PATH" >&2; exit 2; }
[ $# -gt 0 ] || set -- bench/keymaps/dz60.json
cargo build -q -p oven-tests --example ccoption_definition
memo="cc-option=$(target/debug/examples/ccoption_definition)"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
build() { # <keymap.json> <off|on> <command prefix...>
  local file=$1 mode=$2
  shift 2
  local extra=()
  [ "$mode" = on ] && extra=(-e "$memo")
  (cd "$OVEN_QMK_HOME" && QMK_HOME=$OVEN_QMK_HOME "$@" qmk compile -j 2 -e SKIP_GIT=yes \
    -e SKIP_VERSION=yes "${extra[@]}" "$file" >"$logs/build.log" 2>&1) ||
    { tail -30 "$logs/build.log"; exit 1; }
}
for file in "$@"; do
  file=$(realpath "$file")
  kb=$(jq -r .keyboard "$file")
  km=$(jq -r .keymap "$file")
  target=${kb//\//_}_$km
  for i in 1 2 3; do
    for mode in off on; do
      rm -rf "$OVEN_QMK_HOME/.build/obj_$target"
      build "$file" "$mode" /usr/bin/time -o "$logs/time" -f '%e %U %S'
      read -r wall user sys <"$logs/time"
      fw=
      for ext in hex bin uf2; do
        [ -f "$OVEN_QMK_HOME/.build/$target.$ext" ] && fw=$OVEN_QMK_HOME/.build/$target.$ext && break
      done
      printf '%-36s %-3s run %s  wall %6.2f s  user %6.2f s  sys %5.2f s  cpu %6.2f s  %s  load %s\n' \
        "$kb" "$mode" "$i" "$wall" "$user" "$sys" "$(echo "$user + $sys" | bc)" \
        "$(sha256sum "$fw" | cut -c1-16)" "$(cut -d' ' -f1 /proc/loadavg)"
    done
  done
  if command -v strace >/dev/null; then
    for mode in off on; do
      rm -rf "$OVEN_QMK_HOME/.build/obj_$target"
      build "$file" "$mode" strace -f -qq -s 4096 -e trace=execve -e signal=none -o "$logs/trace"
      n=$(grep -E 'execve\("[^"]*-gcc", \[' "$logs/trace" |
        grep -c 'unresolved-symbols=ignore-all", "-o", "/dev/null"' || true)
      printf '%-36s %-3s probes %s\n' "$kb" "$mode" "$n"
    done
  fi
done
