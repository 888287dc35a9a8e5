#!/usr/bin/env bash
# Make headless Chromium and its chromedriver available for tests/integration/test_console.py
# and print their paths. Installs Debian's chromium and chromium-driver when root and
# missing; a no-op when both are present. Usage: scripts/browser-local.sh
set -euo pipefail

die() { echo "browser-local: $*" >&2; exit 1; }

find_browser() { command -v chromium || command -v chromium-browser || command -v google-chrome || true; }
find_driver() { command -v chromedriver || { [ -x /usr/lib/chromium/chromedriver ] && echo /usr/lib/chromium/chromedriver; } || true; }

if [ -z "$(find_browser)" ] || [ -z "$(find_driver)" ]; then
  [ "$(id -u)" = 0 ] || die "chromium or chromedriver is missing and we are not root; run: apt-get install -y chromium chromium-driver"
  echo "browser-local: installing chromium and chromium-driver from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq chromium chromium-driver >/dev/null \
    || die "apt-get install chromium chromium-driver failed"
fi

browser=$(find_browser); driver=$(find_driver)
[ -n "$browser" ] && [ -n "$driver" ] || die "chromium or chromedriver still not found after install"
echo "chromium: $browser"
echo "chromedriver: $driver"
