#!/usr/bin/env bash
# Times `metadata-gen publish` of a built tree against an S3 endpoint (moto server), next to a
# baseline: a plain sequential upload of every file (boto3 put_object, what "copy the folder to
# the bucket" costs).
#
#   bench/publish.sh TREE_DIR
#
# Needs AWS_ENDPOINT_URL and credentials in the environment (scripts/test.sh's moto, or start
# one: see docs), and a Python with boto3 (moto's venv has it: PYTHON=<venv>/bin/python3).
# Prints one line per case: seconds, and the ratio to the baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=${1:?usage: bench/publish.sh TREE_DIR}
: "${AWS_ENDPOINT_URL:?set AWS_ENDPOINT_URL (moto server)}"
py=${PYTHON:-python3}
bin=${METADATA_GEN:-target/debug/metadata-gen}
[ -x "$bin" ] || cargo build -q -p metadata-gen
files=$(find "$tree" -type f | wc -l)
bytes=$(du -sb "$tree" | cut -f1)

now() { date +%s.%N; }
mkbucket() { curl -sf -X PUT "$AWS_ENDPOINT_URL/$1" >/dev/null; }
run() { # name, command...
  local name=$1; shift
  local t0 t1
  t0=$(now); "$@" >/dev/null; t1=$(now)
  echo "$name $(echo "$t1 - $t0" | bc)"
}

suffix=$(date +%s%N)
mkbucket "bench-base-$suffix"
mkbucket "bench-pub-$suffix"

baseline() {
  "$py" - "$tree" "bench-base-$suffix" <<'PY'
import os, sys, boto3
root, bucket = sys.argv[1], sys.argv[2]
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
for d, _, names in os.walk(root):
    for n in names:
        p = os.path.join(d, n)
        with open(p, "rb") as f:
            s3.put_object(Bucket=bucket, Key=os.path.relpath(p, root), Body=f.read())
PY
}

# A private copy, so one file can be changed.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$tree"/. "$work"
changed=$(find "$work/v1" -type f -name '*.json' | sort | head -1)

echo "tree: $files files, $bytes bytes; binary: $bin"
results=$(
  run baseline_put_all baseline
  run first_publish "$bin" publish --from "$work" --bucket "bench-pub-$suffix"
  run unchanged_republish "$bin" publish --from "$work" --bucket "bench-pub-$suffix"
  echo ' ' >> "$changed"
  run dry_run_one_changed "$bin" publish --from "$work" --bucket "bench-pub-$suffix" --dry-run
  run one_changed "$bin" publish --from "$work" --bucket "bench-pub-$suffix"
)
base=$(echo "$results" | awk '$1=="baseline_put_all"{print $2}')
echo "$results" | awk -v b="$base" '{printf "%-22s %7.2f s  %5.2fx baseline\n", $1, $2, $2/b}'
