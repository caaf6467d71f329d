#!/usr/bin/env bash
# Browser test of the web page `oscar serve` serves at GET /: tools/web/page.test.mjs, run by
# Node's test runner, drives Debian's chromium with playwright-core (which never downloads a
# browser). Usage: tools/web_test.sh URL SCREENSHOT_PATH (a server must be listening at URL).
# Without chromium, node or npm it prints "browser test skipped: …" and exits 0.
set -euo pipefail
URL=${1:?usage: tools/web_test.sh URL SCREENSHOT_PATH}
SHOT=${2:?usage: tools/web_test.sh URL SCREENSHOT_PATH}
case "$SHOT" in /*) ;; *) SHOT="$PWD/$SHOT" ;; esac
cd "$(dirname "$0")/.."
skip() { echo "browser test skipped: $1"; exit 0; }

find_chromium() { command -v chromium || command -v chromium-browser || true; }
CHROME=$(find_chromium)
if [ -z "$CHROME" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium (apt-get)…" >&2
  timeout 600 apt-get install -y -q chromium >/dev/null 2>&1 \
    || { timeout 300 apt-get update -q >/dev/null 2>&1 && timeout 600 apt-get install -y -q chromium >/dev/null 2>&1; } \
    || true
  CHROME=$(find_chromium)
fi
[ -n "$CHROME" ] || skip "no chromium (install the Debian package chromium)"
command -v node >/dev/null || skip "no node"

PW_VERSION=1.64.1
PW="$PWD/target/web-node/node_modules/playwright-core"
if ! grep -qs "\"version\": \"$PW_VERSION\"" "$PW/package.json"; then
  command -v npm >/dev/null || skip "npm could not install playwright-core"
  mkdir -p target/web-node
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 300 npm install --prefix target/web-node --no-save --no-audit \
    --no-fund --loglevel=error "playwright-core@$PW_VERSION" >&2 \
    || skip "npm could not install playwright-core"
  [ -f "$PW/package.json" ] || skip "npm could not install playwright-core"
fi

mkdir -p "$(dirname "$SHOT")"
export OSCAR_URL="$URL" OSCAR_SCREENSHOT="$SHOT" CHROMIUM="$CHROME" PLAYWRIGHT_CORE="$PW"
export NODE_PATH="$PWD/target/web-node/node_modules"
exec node --test tools/web/page.test.mjs
