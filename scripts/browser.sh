#!/usr/bin/env bash
# Make sure a headless Chromium and its WebDriver (Debian's `chromium` and `chromium-driver`,
# installed with apt when missing) are there for the dashboard's browser tests, and print the
# browser's path. Fails loudly when they cannot be had: the browser tests never skip.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

find_browser() {
  for bin in chromium chromium-browser google-chrome; do
    if command -v "$bin" >/dev/null; then command -v "$bin"; return 0; fi
  done
  return 1
}

if ! find_browser >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "browser: installing chromium and chromium-driver (for the dashboard's browser tests)" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
command -v chromedriver >/dev/null || { echo "browser: chromedriver did not install" >&2; exit 1; }
find_browser || { echo "browser: chromium did not install" >&2; exit 1; }
