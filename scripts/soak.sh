#!/usr/bin/env bash
# Soak test: mixed load on two managers and four workers (release binaries, real RabbitMQ and
# Redis, started first if needed) with random SIGKILL/SIGTERM of workers and managers, then a
# ledger check that every request got exactly one terminal result. 30 minutes by default;
# every argument goes to shardline-soak (e.g. `--minutes 2`, `--seed 7`, `--rate 40`; see
# `--help`). Prints a Markdown report, also written to bench-results/soak-<timestamp>.md, and
# exits 1 when a result was lost, duplicated or wrong.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
cargo build --release --locked -p shardline-bench -p shardline-manager -p shardline-worker
exec target/release/shardline-soak "$@"
