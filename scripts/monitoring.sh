#!/usr/bin/env bash
# Runs Prometheus, with the cashflow rules and alerts loaded, scraping a running deployment:
#   scripts/monitoring.sh          # `cashflow serve` on 127.0.0.1:8080 (or $CASHFLOW_TARGET)
#   scripts/monitoring.sh split    # scripts/run-split.sh: ledger :8081, consolidator :8082, relay :8083
# Our own instance on $PROMETHEUS_PORT (default 9390), data in a temp dir, in the foreground
# (Ctrl-C stops it); Debian's packaged service, if any, keeps its own port 9090 untouched.
# Installs the Debian package `prometheus` when missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
obs="$root/deploy/observability"
mode="${1:-serve}"
port="${PROMETHEUS_PORT:-9390}"

if ! command -v prometheus >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null
fi

case "$mode" in
  serve) config="$obs/prometheus.yml" ;;
  split) config="$obs/prometheus-split.yml" ;;
  *) echo "usage: $0 [serve|split]" >&2; exit 2 ;;
esac

run="$(mktemp -d)"
trap 'rm -rf "$run"' EXIT
# The same file, with the rule paths made absolute (the copy lives elsewhere) and the serve
# target overridable.
sed -e "s#- rules/#- $obs/rules/#" \
    -e "s#\"127.0.0.1:8080\"#\"${CASHFLOW_TARGET:-127.0.0.1:8080}\"#" "$config" > "$run/prometheus.yml"
promtool check config "$run/prometheus.yml" >/dev/null

cat <<MSG
Prometheus ($mode) on http://127.0.0.1:$port  (Ctrl-C stops it)
  targets: http://127.0.0.1:$port/targets   alerts: http://127.0.0.1:$port/alerts
  e.g.     curl -s 'http://127.0.0.1:$port/api/v1/query?query=cashflow:slo_writes_errors:ratio_rate5m'
  Grafana: provision deploy/observability/grafana (datasource http://127.0.0.1:9390, dashboard cashflow.json)
MSG
prometheus --config.file="$run/prometheus.yml" --storage.tsdb.path="$run/data" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$run"' EXIT INT TERM
wait $pid
