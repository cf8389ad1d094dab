#!/usr/bin/env bash
# A Redis Cluster on loopback for the tests and for trying Shardline on a cluster: 3 primaries
# and 3 replicas on ports BASE..BASE+5 (BASE = $SHARDLINE_REDIS_CLUSTER_PORT, default 7100),
# their files in $SHARDLINE_REDIS_CLUSTER_DIR (default /tmp/shardline-redis-cluster).
#
#   scripts/redis-cluster.sh start   # start what is not running, create the cluster once,
#                                    # wait until it serves every slot; prints the node URLs
#   scripts/redis-cluster.sh urls    # print the node URLs (SHARDLINE_REDIS_URL's list)
#   scripts/redis-cluster.sh stop    # stop every node and delete its files
#
# `start` is safe to run again: a node that was killed is started again from its nodes file
# and rejoins (as a replica, if its replica was promoted meanwhile). A node timeout of 2 s
# makes failover quick, as the tests want. redis-server is installed with apt when missing.
set -euo pipefail

BASE="${SHARDLINE_REDIS_CLUSTER_PORT:-7100}"
DIR="${SHARDLINE_REDIS_CLUSTER_DIR:-/tmp/shardline-redis-cluster}"
PORTS=$(seq "$BASE" $((BASE + 5)))

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

say() { echo "redis-cluster: $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
cli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }
urls() {
  local list=""
  for p in $PORTS; do list="${list:+$list,}redis://127.0.0.1:$p"; done
  echo "$list"
}

ensure_installed() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return; fi
  say "installing redis-server"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
}

start_node() {
  local port=$1
  if port_open "$port"; then return; fi
  mkdir -p "$DIR"
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
    --cluster-enabled yes --cluster-config-file "nodes-$port.conf" \
    --cluster-node-timeout 2000 --save "" --appendonly yes --appendfsync everysec \
    --dir "$DIR" --logfile "$DIR/$port.log" --pidfile "$DIR/$port.pid"
  for _ in $(seq 1 50); do
    if cli "$port" ping >/dev/null 2>&1; then return; fi
    sleep 0.1
  done
  say "node $port did not answer; see $DIR/$port.log"
  exit 1
}

# Whether the node on `port` is in a cluster that serves every slot.
serving() {
  cli "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'
}

# Whether the node on `port` is a replica whose link to its primary is up.
replicating() {
  cli "$1" info replication 2>/dev/null | grep -q '^master_link_status:up'
}

start() {
  ensure_installed
  for p in $PORTS; do start_node "$p"; done
  if [ "$(cli "$BASE" cluster info | awk -F: '/^cluster_slots_assigned/ {print $2}' | tr -d '\r')" = "0" ]; then
    say "creating the cluster on ports $BASE-$((BASE + 5))"
    local nodes=""
    for p in $PORTS; do nodes="$nodes 127.0.0.1:$p"; done
    # shellcheck disable=SC2086
    redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >"$DIR/create.log" 2>&1 || {
      say "creating the cluster failed:"; cat "$DIR/create.log" >&2; exit 1; }
  fi
  for _ in $(seq 1 300); do
    local all=1 replicas=0
    for p in $PORTS; do
      serving "$p" || all=""
      if replicating "$p"; then replicas=$((replicas + 1)); fi
    done
    if [ -n "$all" ] && [ "$replicas" -eq 3 ]; then
      say "serving every slot on ports $BASE-$((BASE + 5)), 3 replicas in sync"
      urls
      return
    fi
    sleep 0.1
  done
  say "the cluster does not serve every slot with 3 replicas in sync after 30 s:"
  cli "$BASE" cluster nodes >&2 || true
  exit 1
}

stop() {
  for p in $PORTS; do
    if port_open "$p"; then cli "$p" shutdown nosave >/dev/null 2>&1 || true; fi
  done
  rm -rf "$DIR"
  say "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  urls) urls ;;
  *) echo "usage: $0 start|stop|urls" >&2; exit 2 ;;
esac
