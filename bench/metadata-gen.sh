#!/usr/bin/env bash
# Benchmark of `metadata-gen build` against `qmk generate-api`, side by side.
#  1. The corpus slice (shared/qmk-data beside the checkout): wall, CPU, peak RSS, and how many
#     files match the stored generate-api reference (its Python run: 20.9 s wall, ~64 MB).
#  2. When OVEN_QMK_HOME names a full qmk_firmware tree: metadata-gen and `qmk generate-api`
#     (run from inside the tree; `qmk` from PATH or $QMK_BIN) on it, plus the number of keyboards
#     whose info.json differ. QMK_API_REFERENCE may name an existing generate-api output
#     (.build/api_data) to skip the slow Python run.
# Usage: bench/metadata-gen.sh   (needs /usr/bin/time and python3)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

cargo build --release -q -p metadata-gen
bin=$repo/target/release/metadata-gen
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

corpus=""
dir=$repo
while [ "$dir" != / ]; do
  if [ -d "$dir/shared/qmk-data/firmware" ]; then corpus=$dir/shared/qmk-data; break; fi
  dir=$(dirname "$dir")
done

# time_it LABEL CMD... : runs CMD under /usr/bin/time -v, prints wall / CPU / peak RSS.
time_it() {
  local label=$1; shift
  /usr/bin/time -v -o "$work/time.txt" "$@" >"$work/cmd.log" 2>&1 || { cat "$work/cmd.log" >&2; return 1; }
  python3 - "$label" "$work/time.txt" <<'PY'
import re, sys
label, path = sys.argv[1], sys.argv[2]
t = open(path).read()
def get(name):
    return re.search(re.escape(name) + r": (.*)", t).group(1).strip()
wall = get("Elapsed (wall clock) time (h:mm:ss or m:ss)")
parts = [float(p) for p in wall.split(":")]
secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
cpu = float(get("User time (seconds)")) + float(get("System time (seconds)"))
rss = int(get("Maximum resident set size (kbytes)")) / 1024
print(f"{label:<28} wall {secs:7.2f} s   cpu {cpu:7.2f} s   peak RSS {rss:6.1f} MB")
PY
}

# compare EXPECTED ACTUAL : files equal (JSON parsed, last_updated aside) and differing keyboards.
compare() {
  python3 - "$1" "$2" <<'PY'
import json, os, sys
ref, out = sys.argv[1], sys.argv[2]
def files(d):
    return {os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs}
R, O = files(ref), files(out)
def load(p):
    v = json.load(open(p, "rb"))
    if isinstance(v, dict):
        v.pop("last_updated", None)
    return v
equal, bad_kb = 0, []
for f in sorted(R & O):
    a, b = os.path.join(ref, f), os.path.join(out, f)
    same = load(a) == load(b) if f.endswith(".json") else open(a, "rb").read() == open(b, "rb").read()
    equal += same
    if not same and f.startswith("v1/keyboards/") and f.endswith("/info.json"):
        bad_kb.append(f[len("v1/keyboards/"):-len("/info.json")])
print(f"files equal {equal}/{len(R)}  (missing {len(R - O)}, extra {len(O - R)})")
print(f"keyboards whose info.json differs: {len(bad_kb)} {' '.join(bad_kb[:20])}{' ...' if len(bad_kb) > 20 else ''}")
PY
}

echo "== slice: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$corpus" ]; then
  time_it "metadata-gen (slice)" "$bin" build --qmk-home "$corpus/firmware" --out "$work/slice"
  echo "qmk generate-api (slice)     wall   20.90 s   cpu   ~20    s   peak RSS   ~64   MB  (recorded in shared/qmk-data/README.md)"
  compare "$corpus/reference" "$work/slice"
else
  echo "corpus shared/qmk-data not found beside the checkout; slice skipped"
fi

if [ -n "${OVEN_QMK_HOME:-}" ] && [ -d "${OVEN_QMK_HOME}/keyboards" ]; then
  home=$(cd "$OVEN_QMK_HOME" && pwd)
  echo "== full tree: $home ($(find "$home/keyboards" -name keyboard.json -not -path '*/keymaps/*' | wc -l) keyboards)"
  time_it "metadata-gen (full)" "$bin" build --qmk-home "$home" --out "$work/full" --max-failures 100%
  grep -E "^built" "$work/cmd.log" || true
  if [ -n "${QMK_API_REFERENCE:-}" ]; then
    ref=$QMK_API_REFERENCE
    echo "qmk generate-api (full)      not re-run: comparing with $ref"
  else
    qmk=${QMK_BIN:-qmk}
    (cd "$home" && time_it "qmk generate-api (full)" "$qmk" generate-api)
    ref=$home/.build/api_data
  fi
  compare "$ref" "$work/full"
else
  echo "OVEN_QMK_HOME not set to a qmk_firmware tree; full-tree comparison skipped"
fi
