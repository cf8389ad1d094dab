#!/usr/bin/env bash
# Make sure a headless Chromium is installed for the dashboard's browser tests (Debian's
# `chromium` package, installed with apt when missing), and print its path. Fails loudly when
# it cannot be had: the browser tests never skip.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

for bin in chromium chromium-browser google-chrome; do
  if command -v "$bin" >/dev/null; then command -v "$bin"; exit 0; fi
done
echo "browser: installing chromium (for the dashboard's browser tests)" >&2
$SUDO apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium || { echo "browser: chromium did not install" >&2; exit 1; }
