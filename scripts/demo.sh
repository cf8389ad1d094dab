#!/usr/bin/env bash
# Run Shardline on this machine: start RabbitMQ and Redis if needed, build, start a manager and
# three workers, submit real requests of every built-in kind, print the results, the
# throughput and how shards spread over the workers, then stop everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh
echo "demo: building (first build takes a few minutes)"
cargo build --locked --bins -q
BIN=target/debug
# A namespace of its own, from a clean state (no learned history from earlier runs), removed
# at the end; set SHARDLINE_NAMESPACE to run in (and keep) another one.
OWN_NAMESPACE=""
if [ -z "${SHARDLINE_NAMESPACE:-}" ]; then
  OWN_NAMESPACE="demo-$(date +%s)-$$"
  export SHARDLINE_NAMESPACE="$OWN_NAMESPACE"
fi
LOGS=$(mktemp -d)
PIDS=()

stop_all() {
  if [ "${#PIDS[@]}" -gt 0 ]; then
    echo "demo: stopping manager and workers (SIGTERM: they finish running shards first)"
    kill -TERM "${PIDS[@]}" 2>/dev/null || true
    wait "${PIDS[@]}" 2>/dev/null || true
    PIDS=()
  fi
  if [ -n "$OWN_NAMESPACE" ]; then
    "$BIN/shardline" teardown --yes >/dev/null && echo "demo: namespace $OWN_NAMESPACE removed"
  fi
  echo "demo: logs are in $LOGS"
}
trap stop_all EXIT

"$BIN/shardline-manager" >"$LOGS/manager.log" 2>&1 &
PIDS+=($!)
for i in 1 2 3; do
  SHARDLINE_WORKER_ID="demo-w$i" SHARDLINE_CONCURRENCY=2 \
    "$BIN/shardline-worker" >"$LOGS/worker-$i.log" 2>&1 &
  PIDS+=($!)
done
for f in manager worker-1 worker-2 worker-3; do
  for _ in $(seq 1 100); do
    grep -q "consuming" "$LOGS/$f.log" 2>/dev/null && break
    if ! kill -0 "${PIDS[@]}" 2>/dev/null; then cat "$LOGS/$f.log"; exit 1; fi
    sleep 0.1
  done
done
sleep 1 # one refresh of the manager's engine view, so the first request sees all three
echo "demo: manager and 3 workers running (namespace $SHARDLINE_NAMESPACE)"

submit() { "$BIN/shardline" submit --quiet --summary "$@"; }
# Submit, print the result, then the request's status: how many shards went to which worker.
submit_and_show() {
  local out
  out=$(submit "$@")
  echo "$out"
  local id
  id=$(echo "$out" | sed -n 's/.*"request_id": "\([0-9a-f-]*\)".*/\1/p' | head -n 1)
  [ -n "$id" ] && "$BIN/shardline" status "$id"
}

echo; echo "== wordcount: a sentence, cut on whitespace"
submit --kind wordcount --data "the quick brown fox jumps over the lazy dog and the end"
echo; echo "== sort: 200,000 shuffled integers, k-way merged"
seq 1 200000 | shuf | submit_and_show --kind sort --max-shards 12
echo; echo "== checksum: Merkle root of 8 MB of random bytes"
head -c 8000000 /dev/urandom | submit --kind checksum
echo; echo "== synthetic: 300 units of 2 ms each, spread over the workers"
submit_and_show --kind synthetic --data '{"units": 300, "unit_cost_us": 2000}'
echo; echo "== an error result: an unknown kind is answered, not dropped"
submit --kind no-such-kind --data '{}' || echo "(exit code $?: the request was rejected, as expected)"

echo; echo "== throughput: many requests at once, every answer checked against an unsharded run"
"$BIN/shardline" load --kind sort --requests 200 --size 20000
"$BIN/shardline" load --kind wordcount --requests 100 --size 20000
"$BIN/shardline" load --kind checksum --requests 50 --size 1000000
"$BIN/shardline" load --kind synthetic --requests 20 --size 100

echo; echo "== in flight right now: shardline list"
"$BIN/shardline" list
echo; echo "demo: done"
