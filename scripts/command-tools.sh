#!/usr/bin/env bash
# Make sure the programs the example command kinds run (Python 3, sort, grep, sh; see
# examples/kinds/kinds.toml) are there, installing Debian's packages with apt when missing.
# Fails loudly when they cannot be had: the command-kind tests never skip.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
command -v python3 >/dev/null || missing+=(python3)
command -v sort >/dev/null || missing+=(coreutils)
command -v grep >/dev/null || missing+=(grep)
if [ ${#missing[@]} -gt 0 ]; then
  echo "command-tools: installing ${missing[*]} (for the command-kind examples)" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for bin in python3 sort grep sh; do
  command -v "$bin" >/dev/null || { echo "command-tools: $bin did not install" >&2; exit 1; }
done
