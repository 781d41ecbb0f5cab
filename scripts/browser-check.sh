#!/usr/bin/env bash
# The API in a real browser (tests/browser/api.mjs): headless Chromium on a page of another
# origin compiles, polls and downloads through a debug `oven serve` building with the fakeqmk
# fixture (a real avr-gcc build behind qmk's interface). Installs what it needs when missing:
# Debian's chromium, and playwright-core from the npm registry into the test cache.
#
#   scripts/browser-check.sh            # what scripts/test.sh runs
#
# The stock Configurator itself, built from its repository, is checked by
# bench/browser/configurator.sh (it needs a checkout of qmk/qmk_configurator).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${XDG_CACHE_HOME:-$HOME/.cache}/oven
chromium=${CHROMIUM:-/usr/bin/chromium}

# playwright-core 1.65 needs Node.js 20 or later (Debian 12's nodejs is 18).
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "browser check: needs Node.js >= 20 with npm (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
if [ ! -x "$chromium" ]; then
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q --no-install-recommends chromium
fi
pw=$cache/node/node_modules/playwright-core
if [ ! -f "$pw/package.json" ]; then
  npm install --prefix "$cache/node" --no-audit --no-fund --loglevel=error playwright-core@1.65.1
fi

cargo build -q --locked -p oven --bin oven
oven=${CARGO_TARGET_DIR:-$root/target}/debug/oven
data=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
page_port=$(free_port)
OVEN_QMK_BIN=$root/tests/fixtures/fakeqmk/bin/qmk "$oven" serve \
  --listen "127.0.0.1:$api_port" --data-dir "$data/oven" \
  --qmk-home "$root/tests/fixtures/fakeqmk/qmk_firmware" >"$data/serve.log" 2>&1 &
server=$!
python3 -m http.server "$page_port" --bind 127.0.0.1 --directory "$root/tests/browser" \
  >"$data/page.log" 2>&1 &
pages=$!
cleanup() {
  kill "$server" "$pages" 2>/dev/null || true
  wait "$server" "$pages" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
up=0
for _ in $(seq 100); do
  if curl -fs "http://127.0.0.1:$api_port/v1/healthcheck" >/dev/null &&
    curl -fs "http://127.0.0.1:$page_port/index.html" >/dev/null; then
    up=1
    break
  fi
  sleep 0.1
done
if [ "$up" != 1 ]; then
  echo "browser check: oven serve or the page server did not start; the server's log:" >&2
  cat "$data/serve.log" "$data/page.log" >&2
  exit 1
fi

status=0
CHROMIUM=$chromium PLAYWRIGHT_CORE=$pw/index.mjs timeout 300 node "$root/tests/browser/api.mjs" \
  --oven "http://127.0.0.1:$api_port" --page "http://127.0.0.1:$page_port/index.html" || status=$?
if [ "$status" != 0 ]; then
  echo "browser check failed (exit $status); the server's log:" >&2
  tail -n 50 "$data/serve.log" >&2
fi
exit "$status"
