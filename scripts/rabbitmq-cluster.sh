#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on loopback for the tests and for trying Shardline on quorum
# queues: nodes shardline-1..3@localhost with AMQP on ports BASE..BASE+2 (BASE =
# $SHARDLINE_RABBITMQ_CLUSTER_PORT, default 5700) and Erlang distribution on BASE+20000..,
# their files in $SHARDLINE_RABBITMQ_CLUSTER_DIR (default /tmp/shardline-rabbitmq-cluster).
# The system node on 5672 stays out of it.
#
#   scripts/rabbitmq-cluster.sh start        # start what is not running, join nodes 2 and 3
#                                            # to node 1 once; prints the AMQP URLs
#   scripts/rabbitmq-cluster.sh urls         # print the AMQP URLs (SHARDLINE_AMQP_URL's list)
#   scripts/rabbitmq-cluster.sh node N       # print node N's name (for rabbitmqctl -n)
#   scripts/rabbitmq-cluster.sh ctl N ARGS…  # rabbitmqctl ARGS on node N (as the user whose
#                                            # Erlang cookie the nodes share)
#   scripts/rabbitmq-cluster.sh stop         # stop every node and delete its files
#
# `start` is safe to run again: a node that was stopped starts from its data directory and
# is a cluster member again; a node whose application was stopped (`stop_app`) is started
# again in place. Each node needs its own env file (the system one pins NODENAME),
# config (its own listener), distribution port and directories owned by the rabbitmq user,
# which the server runs as. rabbitmq-server is installed with apt when missing.
set -euo pipefail

BASE="${SHARDLINE_RABBITMQ_CLUSTER_PORT:-5700}"
DIR="${SHARDLINE_RABBITMQ_CLUSTER_DIR:-/tmp/shardline-rabbitmq-cluster}"
NODES="1 2 3"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

say() { echo "rabbitmq-cluster: $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port() { echo $((BASE + $1 - 1)); }
node() { echo "shardline-$1@localhost"; }
ctl() { local n=$1; shift; $SUDO /usr/sbin/rabbitmqctl -q -n "$(node "$n")" "$@"; }
# Whether node N's Erlang VM answers (its application may be stopped).
alive() { ctl "$1" ping >/dev/null 2>&1; }
urls() {
  local list=""
  for n in $NODES; do list="${list:+$list,}amqp://guest:guest@127.0.0.1:$(port "$n")/%2f"; done
  echo "$list"
}

ensure_installed() {
  if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && [ -x /usr/lib/rabbitmq/bin/rabbitmqctl ]; then
    return
  fi
  say "installing rabbitmq-server"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq rabbitmq-server >/dev/null
}

# Write node N's env file and config (guest may log in over loopback, as on the system node).
configure() {
  local n=$1 home="$DIR/$1"
  $SUDO mkdir -p "$home/mnesia" "$home/log"
  $SUDO tee "$home/rabbitmq-env.conf" >/dev/null <<EOF
NODENAME=$(node "$n")
CONFIG_FILE=$home/rabbitmq
MNESIA_BASE=$home/mnesia
LOG_BASE=$home/log
ENABLED_PLUGINS_FILE=$home/enabled_plugins
DIST_PORT=$(($(port "$n") + 20000))
ERL_EPMD_ADDRESS=127.0.0.1
EOF
  $SUDO tee "$home/rabbitmq.conf" >/dev/null <<EOF
listeners.tcp.default = 127.0.0.1:$(port "$n")
loopback_users.guest = true
EOF
  echo "[]." | $SUDO tee "$home/enabled_plugins" >/dev/null
  $SUDO chown -R rabbitmq:rabbitmq "$home"
}

start_node() {
  local n=$1
  if port_open "$(port "$n")"; then
    if alive "$n"; then return; fi
    say "port $(port "$n") is taken by something other than $(node "$n")"
    exit 1
  fi
  if alive "$n"; then
    say "starting the application of $(node "$n") again"
    ctl "$n" start_app
    return
  fi
  configure "$n"
  say "starting $(node "$n") on $(port "$n")"
  # As the rabbitmq user (it owns the Erlang cookie the nodes and rabbitmqctl share).
  if ! $SUDO su rabbitmq -s /bin/sh -c "cd /var/lib/rabbitmq && HOME=/var/lib/rabbitmq \
    RABBITMQ_CONF_ENV_FILE=$DIR/$n/rabbitmq-env.conf \
    ERL_FLAGS='-kernel inet_dist_use_interface {127,0,0,1}' \
    /usr/lib/rabbitmq/bin/rabbitmq-server -detached" >"$DIR/$n-start.log" 2>&1; then
    say "starting $(node "$n") failed:"
    cat "$DIR/$n-start.log" >&2
    exit 1
  fi
}

# Wait for node N to boot (await_startup fails at once while the node is not yet reachable).
await_node() {
  local n=$1
  for _ in $(seq 1 120); do
    if ctl "$n" await_startup --timeout 5 >/dev/null 2>&1; then return; fi
    sleep 1
  done
  say "$(node "$n") did not start in 2 minutes; see $DIR/$n/log"
  exit 1
}

# Whether node N counts all three nodes as running cluster members.
clustered() {
  [ "$(ctl "$1" eval 'length(rabbit_nodes:all_running()).' 2>/dev/null)" = "3" ]
}

# Whether node N is a member of node 1's cluster.
member() {
  local status
  status=$(ctl "$1" cluster_status --formatter json 2>/dev/null || true)
  case "$status" in *"$(node 1)"*) return 0 ;; *) return 1 ;; esac
}

start() {
  ensure_installed
  for n in $NODES; do start_node "$n"; done
  for n in $NODES; do await_node "$n"; done
  for n in 2 3; do
    if member "$n"; then continue; fi
    say "joining $(node "$n") to $(node 1)"
    ctl "$n" stop_app
    if ! ctl "$n" join_cluster "$(node 1)"; then
      ctl "$n" start_app || true
      say "$(node "$n") could not join $(node 1)"
      exit 1
    fi
    ctl "$n" start_app
  done
  for _ in $(seq 1 300); do
    if clustered 1; then
      say "3 nodes running on ports $BASE-$((BASE + 2))"
      urls
      return
    fi
    sleep 0.1
  done
  say "the cluster does not list 3 running nodes after 30 s:"
  ctl 1 cluster_status >&2 || true
  exit 1
}

stop() {
  for n in $NODES; do
    if alive "$n"; then ctl "$n" stop >/dev/null 2>&1 || true; fi
  done
  $SUDO rm -rf "$DIR"
  say "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  urls) urls ;;
  node) node "${2:?usage: $0 node N}" ;;
  ctl) shift; n="${1:?usage: $0 ctl N ARGS...}"; shift; ctl "$n" "$@" ;;
  *) echo "usage: $0 start|stop|urls|node N|ctl N ARGS..." >&2; exit 2 ;;
esac
