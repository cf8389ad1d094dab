#!/usr/bin/env bash
# Run every test (unit, property, doc and integration) against real RabbitMQ and Redis,
# starting them first if needed, a Redis Cluster and a RabbitMQ cluster on loopback
# (scripts/redis-cluster.sh, scripts/rabbitmq-cluster.sh), and Chromium for the dashboard's
# browser tests (installed if missing). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
# The example command kinds run Python and the shell's tools; installed here when missing.
scripts/command-tools.sh
# The dashboard's tests drive a real headless Chromium; installed here when missing.
CHROMIUM="${CHROMIUM:-$(scripts/browser.sh)}"
export CHROMIUM
export TEST_AMQP_URL="${TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export TEST_REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379}"
# The Redis Cluster tests run on 3 primaries and 3 replicas on loopback (ports 7100-7105).
if [ -z "${TEST_REDIS_CLUSTER_URLS:-}" ]; then
  TEST_REDIS_CLUSTER_URLS="$(scripts/redis-cluster.sh start)"
fi
export TEST_REDIS_CLUSTER_URLS
# The RabbitMQ cluster tests run on 3 nodes on loopback (AMQP ports 5700-5702).
if [ -z "${TEST_RABBITMQ_CLUSTER_URLS:-}" ]; then
  TEST_RABBITMQ_CLUSTER_URLS="$(scripts/rabbitmq-cluster.sh start)"
fi
export TEST_RABBITMQ_CLUSTER_URLS
cargo test --workspace --locked "$@"
