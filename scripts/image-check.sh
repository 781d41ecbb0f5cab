#!/usr/bin/env bash
# The compile function's container image, built and run the way Lambda runs it (README, "The
# compile image"). Not part of scripts/test.sh: it builds a multi-gigabyte image.
#
#  1. builds functions/compile/Dockerfile with podman;
#  2. runs the image's bootstrap (the compile function) from the image's root: root read-only,
#     only /tmp writable (a tmpfs), a non-root user, HOME unset, Lambda's environment variables
#     plus the image's ENV and the OVEN_* variables template.yaml sets on the function;
#  3. serves it the Lambda Runtime API (`cargo lambda watch --only-lambda-apis`) and invokes it
#     (`cargo lambda invoke`) with the SQS event of a job that `POST /v1/compile` (oven serve
#     --backend aws --no-worker) created in moto server;
#  4. passes when each job finishes with returncode 0 and its firmware, fetched through the
#     download route's presigned URL, is valid Intel HEX (every record's checksum) or a .bin of
#     sane size (for a DFU keyboard, ending in the DFU suffix). Prints the image size and the time of a
#     cold and a warm compile (dz60) and of an STM32 DFU keyboard's (planck/rev6).
#
# Needs root (unshare, mount, chroot), podman, python3, curl, and the venv scripts/test.sh makes
# (moto server, cargo-lambda, boto3). Settings (environment):
#   OVEN_IMAGE_BASE      base image (default docker.io/library/debian:bookworm-slim); where no
#                        registry is reachable: debootstrap --variant=minbase bookworm DIR &&
#                        tar -C DIR -c . | podman import - localhost/debian-bookworm-min
#   OVEN_IMAGE_QMK_TREE  a local qmk_firmware checkout at the Dockerfile's QMK_COMMIT, with its
#                        submodules (default: the image clones it from GitHub)
#   OVEN_IMAGE_WORKER    host (default): the worker is built here (`cargo build --release`) and
#                        handed to the build as the `worker` context (the host's glibc must not
#                        be newer than the base image's); image: built inside by the Dockerfile
#   OVEN_IMAGE_EXTRA_CA  a directory of *.crt CA certificates the build's downloads must trust
#                        (a TLS-intercepting proxy's, e.g. /usr/local/share/ca-certificates)
#   OVEN_IMAGE_TAG       default localhost/oven-compile:check
#   OVEN_IMAGE_KEEP=1    keep the scratch directory (logs, events)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

base=${OVEN_IMAGE_BASE:-docker.io/library/debian:bookworm-slim}
tree=${OVEN_IMAGE_QMK_TREE:-}
worker_from=${OVEN_IMAGE_WORKER:-host}
image=${OVEN_IMAGE_TAG:-localhost/oven-compile:check}
venv=${XDG_CACHE_HOME:-$HOME/.cache}/oven/venv
py=$venv/bin/python

[ "$(id -u)" = 0 ] || { echo "image-check needs root (unshare, mount, chroot)" >&2; exit 2; }
for tool in podman unshare chroot curl python3; do
  command -v "$tool" >/dev/null || { echo "$tool is needed" >&2; exit 2; }
done
for tool in moto_server cargo-lambda python; do
  [ -x "$venv/bin/$tool" ] || { echo "$venv/bin/$tool is missing: run scripts/test.sh once" >&2; exit 2; }
done

scratch=$(mktemp -d)
pids=()
mounted=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -z "$mounted" ] || podman image unmount "$image" >/dev/null 2>&1 || true
  if [ -n "${OVEN_IMAGE_KEEP:-}" ]; then echo "kept $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -s -m 2 -o /dev/null "$1" && return 0; sleep 0.1; done; fail "$1 did not come up"; }
# The Runtime API answers nothing at /, so only the port is waited for.
wait_port() {
  for _ in $(seq 200); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "nothing listens on port $1"
}

# --- 1. the image ---------------------------------------------------------------------------
build_args=(--isolation chroot --format docker -f functions/compile/Dockerfile
  --build-arg "BASE_IMAGE=$base" -t "$image")
[ -z "$tree" ] || build_args+=(--build-context "qmk_firmware=$tree")
[ -z "${OVEN_IMAGE_EXTRA_CA:-}" ] || build_args+=(--build-context "extra_ca=$OVEN_IMAGE_EXTRA_CA")
if [ "$worker_from" = host ]; then
  cargo build -q --release --locked -p oven-compile --bin compile -p oven --bin oven
  mkdir "$scratch/worker"
  cp target/release/compile "$scratch/worker/bootstrap"
  cp target/release/oven "$scratch/worker/oven"
  build_args+=(--build-context "worker=$scratch/worker")
fi
cargo build -q --locked -p oven --bin oven
oven=$repo/target/debug/oven
t0=$SECONDS
podman build "${build_args[@]}" . >"$scratch/build.log" 2>&1 || { tail -30 "$scratch/build.log"; fail "podman build"; }
echo "image: built $image in $((SECONDS - t0)) s"
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "image: size $((size / 1000000)) MB"

# --- 2. moto, the resources, the API ------------------------------------------------------------
moto_port=$(free_port)
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$scratch/moto.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$moto_port/moto-api/"
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export OVEN_JOB_TABLE=oven-jobs OVEN_ARTIFACT_BUCKET=oven-artifacts
export OVEN_QUEUE_URL=$AWS_ENDPOINT_URL/123456789012/oven-compile
"$oven" provision >"$scratch/provision.log"
OVEN_DLQ_ARN=$(sed -n 's/^export OVEN_DLQ_ARN=//p' "$scratch/provision.log")
export OVEN_DLQ_ARN
api_port=$(free_port)
api=http://127.0.0.1:$api_port
export OVEN_PUBLIC_URL=$api
"$oven" serve --backend aws --no-worker --listen "127.0.0.1:$api_port" --data-dir "$scratch/api" \
  >"$scratch/api.log" 2>&1 &
pids+=($!)
wait_http "$api/v1/healthcheck"

# --- 3. the function, as Lambda starts it ---------------------------------------------------------
rt_port=$(free_port)
(exec "$venv/bin/cargo-lambda" lambda watch --only-lambda-apis \
  --invoke-address 127.0.0.1 --invoke-port "$rt_port" --timeout 900 >"$scratch/runtime.log" 2>&1) &
pids+=($!)
wait_port "$rt_port"

root=$(podman image mount "$image")
mounted=1
# Lambda: the image's ENV, then its own variables, then the function's (template.yaml).
mapfile -t image_env < <(podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$image" | grep -v '^HOME=' | sed '/^$/d')
fn_env=("${image_env[@]}"
  AWS_LAMBDA_FUNCTION_NAME=oven-compile AWS_LAMBDA_FUNCTION_VERSION=\$LATEST
  AWS_LAMBDA_FUNCTION_MEMORY_SIZE=4096 AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/oven-compile
  AWS_LAMBDA_LOG_STREAM_NAME=image-check AWS_LAMBDA_RUNTIME_API="http://127.0.0.1:$rt_port/.rt"
  LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime TZ=:UTC LANG=en_US.UTF-8
  AWS_REGION="$AWS_REGION" AWS_DEFAULT_REGION="$AWS_REGION"
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_SESSION_TOKEN=test
  AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL"
  OVEN_PUBLIC_URL="$api" OVEN_JOB_TABLE="$OVEN_JOB_TABLE" OVEN_QUEUE_URL="$OVEN_QUEUE_URL"
  OVEN_ARTIFACT_BUCKET="$OVEN_ARTIFACT_BUCKET" OVEN_DLQ_ARN="$OVEN_DLQ_ARN"
  OVEN_RETENTION_HOURS=48 OVEN_COMPILE_TIMEOUT_SECS=300)
# A private mount namespace: the image root bound read-only, a tmpfs on /tmp (Lambda's
# ephemeral storage), /proc and /dev; then the bootstrap as an unprivileged user in /var/task.
# shellcheck disable=SC2016 # expanded by the inner shell
unshare --mount --propagation private -- bash -c '
  set -e
  r=$1; shift
  mount --bind "$r" "$r"
  mount -o remount,ro,bind "$r"
  mount -t tmpfs -o size=4g,mode=1777 tmpfs "$r/tmp"
  mount -t proc proc "$r/proc"
  mount --rbind /dev "$r/dev"
  exec chroot --userspec=993:993 "$r" /usr/bin/env -i "$@" /bin/sh -c "cd /var/task && exec /var/runtime/bootstrap"
' _ "$root" "${fn_env[@]}" >"$scratch/function.log" 2>&1 &
pids+=($!)

# The root really is read-only: a write outside /tmp fails in the same confinement.
# shellcheck disable=SC2016
if unshare --mount --propagation private -- bash -c 'r=$1; mount --bind "$r" "$r"; mount -o remount,ro,bind "$r"; chroot "$r" /bin/sh -c "touch /opt/qmk_firmware/x" 2>/dev/null' _ "$root"; then
  fail "the image root is writable"
fi

# --- 4. jobs through the queue into the function ------------------------------------------------
# Receives the queue's message for job $1 and writes the SQS event Lambda would send.
sqs_event() {
  "$py" - "$1" "$2" <<'EOF'
import json, os, sys, boto3
job, out = sys.argv[1], sys.argv[2]
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
url = os.environ["OVEN_QUEUE_URL"]
arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=10,
                           VisibilityTimeout=900, MessageSystemAttributeNames=["All"]).get("Messages", [])
assert msgs and job in msgs[0]["Body"], f"no queue message for job {job}: {msgs}"
m = msgs[0]
event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"],
    "body": m["Body"], "attributes": m.get("Attributes", {}), "messageAttributes": {},
    "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": arn,
    "awsRegion": os.environ["AWS_REGION"]}]}
json.dump(event, open(out, "w"))
EOF
}
# The event source mapping's part after the invocation: delete the records not reported failed.
settle() {
  "$py" - "$1" "$2" <<'EOF'
import json, os, sys, boto3
event, response = json.load(open(sys.argv[1])), json.loads(open(sys.argv[2]).read())
failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
assert not failed, f"the function reported failures: {response}"
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
for r in event["Records"]:
    sqs.delete_message(QueueUrl=os.environ["OVEN_QUEUE_URL"], ReceiptHandle=r["receiptHandle"])
EOF
}
check_firmware() {
  "$py" - "$1" "$2" "${3:-}" <<'EOF'
import sys
path, name, dfu = sys.argv[1], sys.argv[2], sys.argv[3] == "dfu"
data = open(path, "rb").read()
if name.endswith(".hex"):
    n, eof = 0, False
    for line in data.decode("ascii").splitlines():
        assert line.startswith(":"), line
        rec = bytes.fromhex(line[1:])
        assert len(rec) == 5 + rec[0], f"record length: {line}"
        assert sum(rec) % 256 == 0, f"checksum: {line}"
        n += rec[0] if rec[3] == 0 else 0
        eof |= rec[3] == 1
    assert eof and 1024 <= n <= 1 << 20, f"{n} data bytes, EOF {eof}"
    print(f"{name}: valid Intel HEX, {n} bytes of firmware")
else:
    assert 1024 <= len(data) <= 16 << 20, f"{len(data)} bytes"
    if dfu:
        # A DFU keyboard's .bin ends in the suffix QMK's make appends with dfu-suffix:
        # ... "UFD", bLength 16, CRC (DFU 1.1 spec, section B.1).
        assert data[-8:-5] == b"UFD" and data[-5] == 16, f"{name}: no DFU suffix"
    print(f"{name}: {len(data)} bytes{' with a DFU suffix' if dfu else ''}")
EOF
}

compile_one() { # $1 label, $2 keymap.json, $3 "dfu": the .bin must carry a DFU suffix
  local label=$1 id t0 t1 doc status name
  id=$(curl -fsS -H 'content-type: application/json' --data-binary "@$2" "$api/v1/compile" |
    "$py" -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
  sqs_event "$id" "$scratch/$label.event.json"
  t0=$(date +%s.%N)
  "$venv/bin/cargo-lambda" lambda invoke --invoke-address 127.0.0.1 --invoke-port "$rt_port" \
    --data-file "$scratch/$label.event.json" >"$scratch/$label.response.json" ||
    { tail -30 "$scratch/function.log"; fail "$label: invoke"; }
  t1=$(date +%s.%N)
  settle "$scratch/$label.event.json" "$scratch/$label.response.json"
  doc=$(curl -fsS "$api/v1/compile/$id")
  status=$(echo "$doc" | "$py" -c 'import json,sys; d=json.load(sys.stdin); r=d["result"] or {}; print(d["status"], r.get("returncode"), r.get("firmware_filename"), r.get("compile_seconds"))')
  read -r st rc name secs <<<"$status"
  if [ "$st" != finished ] || [ "$rc" != 0 ]; then
    echo "$doc" | head -c 4000; tail -20 "$scratch/function.log"; fail "$label: job $id is $st (returncode $rc)"
  fi
  curl -fsSL -D "$scratch/$label.headers" -o "$scratch/$label.fw" "$api/v1/compile/$id/download"
  grep -qi "content-disposition: attachment; filename=\"$name\"" "$scratch/$label.headers" ||
    fail "$label: download without the file name $name"
  check_firmware "$scratch/$label.fw" "$name" "${3:-}"
  printf 'compile %-5s invocation %6.1f s (qmk compile %s s)\n' "$label" \
    "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" "$secs"
}

compile_one cold bench/keymaps/dz60.json
compile_one warm bench/keymaps/dz60_b.json
# An STM32 DFU keyboard: ARM, ChibiOS, and the dfu-suffix step after linking.
compile_one arm bench/keymaps/planck_rev6.json dfu
grep -q '"level":"ERROR"' "$scratch/function.log" && { grep '"level":"ERROR"' "$scratch/function.log" | head; fail "the function logged errors"; }
echo "image-check: passed"
