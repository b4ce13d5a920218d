#!/usr/bin/env bash
# Starts the servers the production-backend tests and the split deployment use, when they are
# not already running: PostgreSQL, Redis, and moto (the AWS emulator, for SQS). Installs moto
# and nginx when missing. Idempotent. Usage: services.sh start
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

if ! port_open 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_port 5432
fi
if ! port_open 6379; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  wait_port 6379
fi
if ! command -v moto_server >/dev/null 2>&1; then
  pip install --quiet 'moto[server]>=5,<6'  # scripts/moto-server.py patches moto 5's SQS queue
fi
if ! port_open 5000; then
  # Through our launcher: it fixes a moto race that loses messages (see the script).
  nohup python3 "$(dirname "$0")/moto-server.py" -H 127.0.0.1 -p 5000 > /tmp/moto-5000.log 2>&1 &
  wait_port 5000
fi
if ! command -v nginx >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx) >/dev/null
  # Debian starts the packaged nginx on port 80; we run our own instances.
  nginx -s stop 2>/dev/null || true
fi
