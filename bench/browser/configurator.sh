#!/usr/bin/env bash
# The stock QMK Configurator against Oven in a real browser (bench/browser/configurator.mjs):
# builds the Configurator from its own repository with `vite build`, pointed at an `oven serve`
# on this machine that also serves a keyboards tree made by `metadata-gen build` from the same
# qmk_firmware tree, then compiles and downloads each keyboard's default keymap through the
# Configurator's own buttons in headless Chromium.
#
#   bench/browser/configurator.sh CONFIGURATOR_CHECKOUT QMK_TREE [KEYBOARDS]
#
#   CONFIGURATOR_CHECKOUT  a work tree of github.com/qmk/qmk_configurator (not modified: it is
#                          built in a copy)
#   QMK_TREE               a qmk_firmware tree that builds (`qmk` and the toolchains on PATH)
#   KEYBOARDS              comma-separated (default dz60,planck/rev6,cannonkeys/bastion60:
#                          AVR .hex, STM32 DFU .bin, RP2040 .uf2)
#
# Needs: node and npm (the Configurator's packages and playwright-core come from the npm
# registry), Debian's chromium (or CHROMIUM=path), python3. OVEN_BIN and METADATA_GEN_BIN
# default to the release builds (built if missing). Work files go to a temporary directory,
# removed at the end unless KEEP=1.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,20p' "$0"; exit 2; }
cd "$(dirname "$0")/../.."
root=$PWD
src=$(realpath "$1")
tree=$(realpath "$2")
keyboards=${3:-dz60,planck/rev6,cannonkeys/bastion60}
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -f "$src/package.json" ] || [ ! -d "$src/src" ]; then
  echo "$src is not a qmk_configurator checkout" >&2
  exit 2
fi
[ -x "$chromium" ] || { echo "no Chromium at $chromium (apt-get install chromium, or set CHROMIUM)" >&2; exit 2; }
command -v qmk >/dev/null || { echo "qmk is not on PATH" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-$root/target}
oven=${OVEN_BIN:-$target/release/oven}
mg=${METADATA_GEN_BIN:-$target/release/metadata-gen}
[ -x "$oven" ] && [ -x "$mg" ] || cargo build --release -p oven --bin oven -p metadata-gen

work=$(mktemp -d -t oven-configurator-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ "${KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
web_port=$(free_port)
api=http://127.0.0.1:$api_port

echo "== keyboards tree (metadata-gen build)"
"$mg" build --qmk-home "$tree" --out "$work/keyboards" --last-updated commit

echo "== Configurator: npm install and vite build (API $api)"
cp -a "$src" "$work/configurator"
rm -rf "$work/configurator/node_modules" "$work/configurator/.git"
(
  cd "$work/configurator"
  # Its lock file is yarn's; npm resolves the same ranges. Vue 2 with @vitejs/plugin-vue's
  # peer range needs --legacy-peer-deps; install scripts are skipped (Cypress would download
  # its binary, husky wants a git hook), so vue-demi's own switch to Vue 2 is run by hand.
  CYPRESS_INSTALL_BINARY=0 npm install --ignore-scripts --no-audit --no-fund --legacy-peer-deps --loglevel=error
  node node_modules/vue-demi/scripts/postinstall.js
  VITE_API_URL=$api VITE_KEYBOARDS_URL=$api/keyboards npx vite build --logLevel error
)

echo "== playwright-core"
npm install --prefix "$work/pw" --no-audit --no-fund --loglevel=error playwright-core@1.65.1 >/dev/null

echo "== oven serve on $api, the Configurator on http://127.0.0.1:$web_port"
"$oven" serve --listen "127.0.0.1:$api_port" --data-dir "$work/data" --qmk-home "$tree" \
  --keyboards-dir "$work/keyboards" > "$work/oven.log" 2>&1 &
pids+=($!)
python3 -m http.server "$web_port" --bind 127.0.0.1 --directory "$work/configurator/dist" \
  > "$work/web.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf "$api/v1" >/dev/null && curl -sf "http://127.0.0.1:$web_port/" >/dev/null && break
  sleep 0.2
done

echo "== the Configurator's compile and downloads in Chromium"
CHROMIUM=$chromium PLAYWRIGHT_CORE=$work/pw/node_modules/playwright-core/index.mjs \
  node "$root/bench/browser/configurator.mjs" --oven "$api" \
  --configurator "http://127.0.0.1:$web_port" --keyboards "$keyboards"
