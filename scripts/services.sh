#!/usr/bin/env bash
# Make sure RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379) answer. Anything already
# listening is used as it is; otherwise the server is started, and installed with apt first if
# it is missing. Safe to run again and again.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 secs=$2
  for _ in $(seq 1 "$secs"); do
    if port_open "$port"; then return 0; fi
    sleep 1
  done
  echo "services: nothing answers on 127.0.0.1:$port after ${secs}s" >&2
  return 1
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
  if port_open 6379; then echo "services: Redis is up on 6379"; return; fi
  if ! command -v redis-server >/dev/null; then
    echo "services: installing redis-server"
    apt_install redis-server
  fi
  if port_open 6379; then return; fi   # the package may have started it
  echo "services: starting Redis"
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
    --appendonly no --dir /tmp --logfile /tmp/shardline-redis.log
  wait_port 6379 30
}

ensure_rabbitmq() {
  if port_open 5672; then echo "services: RabbitMQ is up on 5672"; return; fi
  if ! command -v rabbitmq-server >/dev/null; then
    echo "services: installing rabbitmq-server"
    apt_install rabbitmq-server
  fi
  if ! port_open 5672; then
    echo "services: starting RabbitMQ"
    $SUDO rabbitmq-server -detached
  fi
  wait_port 5672 120
  if command -v rabbitmqctl >/dev/null; then
    $SUDO rabbitmqctl await_startup >/dev/null 2>&1 || true
  fi
}

ensure_redis
ensure_rabbitmq
