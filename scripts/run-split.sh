#!/usr/bin/env bash
# The whole split deployment on one machine, in one command:
#
#   client → nginx :8080 (API front, stands in for API Gateway)
#              ├─ /v1/entries, /oauth2  → cashflow ledger :8081 ─→ Postgres (schema ledger, identity)
#              │                            └─ relay ─→ SQS (moto :5000)
#              └─ /v1/balances         → cashflow consolidator :8082 ←─ SQS; → Postgres (schema consolidation), Redis
#
# Starts Postgres, Redis and moto when they are not running, creates the database and the
# queue (with its dead-letter queue), builds the release binary, registers a demo merchant and
# client, and runs until Ctrl-C. Override with CASHFLOW_PG_ADMIN_URL, CASHFLOW_REDIS_URL,
# CASHFLOW_SQS_ENDPOINT.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
run_dir="${CASHFLOW_RUN_DIR:-$root/target/split}"
pg_admin="${CASHFLOW_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
redis_url="${CASHFLOW_REDIS_URL:-redis://127.0.0.1:6379}"
sqs_endpoint="${CASHFLOW_SQS_ENDPOINT:-http://127.0.0.1:5000}"
mkdir -p "$run_dir"

"$root/scripts/services.sh" start

psql "$pg_admin" -tAc "SELECT 1 FROM pg_database WHERE datname = 'cashflow'" | grep -q 1 \
  || psql "$pg_admin" -qc "CREATE DATABASE cashflow"
database_url="${pg_admin%/*}/cashflow"

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_ENDPOINT_URL="$sqs_endpoint"
queue_url="$(python3 "$root/scripts/create-queue.py" "$sqs_endpoint" cashflow-events)"

cargo build --release -p cashflow --manifest-path "$root/Cargo.toml"
bin="$root/target/release/cashflow"
export CASHFLOW_DATABASE_URL="$database_url" CASHFLOW_QUEUE_URL="$queue_url" CASHFLOW_CACHE_URL="$redis_url"
export CASHFLOW_PUBLIC_URL="http://127.0.0.1:8080" CASHFLOW_DATA_DIR="$run_dir/data"
# nginx appends the client's address to X-Forwarded-For: throttle failed logins by it, not by nginx's.
export CASHFLOW_TRUST_FORWARDED_FOR=true

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

"$bin" migrate
"$bin" ledger --listen 127.0.0.1:8081 & pids+=($!)
"$bin" consolidator --listen 127.0.0.1:8082 & pids+=($!)
nginx -c "$("$root/scripts/render-nginx.sh" "$run_dir" 127.0.0.1:8080 127.0.0.1:8081 127.0.0.1:8082)" & pids+=($!)

for _ in $(seq 100); do curl -sf http://127.0.0.1:8080/health/ready >/dev/null && break; sleep 0.1; done
merchant="$("$bin" merchant create --name "Demo Merchant" --json | sed -E 's/.*"merchant_id":"([^"]+)".*/\1/')"
client="$("$bin" client create --merchant "$merchant" --json)"
id="$(echo "$client" | sed -E 's/.*"client_id":"([^"]+)".*/\1/')"
secret="$(echo "$client" | sed -E 's/.*"client_secret":"([^"]+)".*/\1/')"
cat <<MSG

cashflow split deployment on http://127.0.0.1:8080 (Ctrl-C stops it)
  merchant_id:   $merchant
  client_id:     $id
  client_secret: $secret
  TOKEN=\$(curl -s -u '$id:$secret' -d grant_type=client_credentials http://127.0.0.1:8080/oauth2/token | sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  metrics: http://127.0.0.1:8081/metrics (ledger), http://127.0.0.1:8082/metrics (consolidator)
MSG
wait
