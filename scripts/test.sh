#!/usr/bin/env bash
# Run every test (unit, property, doc and integration) against real RabbitMQ and Redis,
# starting them first if needed. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
export TEST_AMQP_URL="${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
cargo test --workspace --locked "$@"
