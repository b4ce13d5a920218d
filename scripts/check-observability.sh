#!/usr/bin/env bash
# Checks deploy/observability against promtool and against a live scrape:
#   1. promtool check config (both Prometheus files), check rules, test rules (every alert has
#      cases that fire and cases that do not);
#   2. every Grafana panel expression parses (they become a generated rule file for promtool);
#   3. a real `cashflow serve` (free port, temp data dir) exercised with a token, a write, two
#      reads and a failed token request: its /metrics passes `promtool check metrics` (HELP
#      text, unit-suffixed names), and every metric the rules and the dashboard name is in it.
# Usage: scripts/check-observability.sh [path/to/cashflow]   (default: builds target/debug/cashflow)
# Needs promtool (Debian package `prometheus`), curl and python3.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
obs="$root/deploy/observability"
bin="${1:-}"
# An absolute path: the script works from deploy/observability.
[ -n "$bin" ] && bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
cd "$obs"

# Metrics the scraped `serve` cannot emit: only a process that reconciles (a consolidator with
# --ledger-grpc-url, or `cashflow reconcile`) does. Nothing else may be missing from the scrape.
allow_missing=(
  cashflow_reconcile_drifting_total
  cashflow_reconcile_repaired_total
  cashflow_reconcile_drifting_days
  cashflow_reconcile_last_success_timestamp_seconds
)

echo "== promtool: config, rules, rule tests"
promtool check config prometheus.yml prometheus-split.yml
promtool check rules rules/*.yml
promtool test rules tests/*.yml

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "== dashboard: every panel expression parses"
python3 - grafana/cashflow.json > "$work/dashboard-rules.yml" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
print("groups:\n  - name: dashboard\n    rules:")
for p in dash["panels"]:
    for t in p.get("targets", []):
        # Grafana's variables, as Grafana would fill them in.
        expr = t["expr"].replace("$__rate_interval", "5m").replace("$job", ".*")
        print(f"      - record: dashboard:panel{p['id']}_{t['refId']}")
        print(f"        expr: {json.dumps(expr)}")
PY
promtool check rules "$work/dashboard-rules.yml"

echo "== live scrape of cashflow serve"
if [ -z "$bin" ]; then
  (cd "$root" && cargo build -q -p cashflow)
  bin="$root/target/debug/cashflow"
fi
# shellcheck source=lib/checked-serve.sh
source "$root/scripts/lib/checked-serve.sh"
start_checked_serve "$bin" "$work" "Observability check" entries:write,entries:read,reports:read
curl -sf -o /dev/null -X POST "$base/v1/entries" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"type":"credit","amount":"150.00","description":"Observability check"}'
today="$(TZ=America/Sao_Paulo date +%F)"
curl -sf -o /dev/null "$base/v1/balances/daily/$today" -H "Authorization: Bearer $token"
curl -s -o /dev/null -u "$id:wrong-secret" -d grant_type=client_credentials "$base/oauth2/token"
# The consumer applies the entry, then a read warms and hits the cache, and the gauge sampler
# (every second) runs at least once.
for _ in $(seq 100); do
  curl -sf "$base/metrics" | grep -q '^cashflow_consolidation_lag_seconds_count' && break
  sleep 0.1
done
curl -sf -o /dev/null "$base/v1/balances/daily/$today" -H "Authorization: Bearer $token"
curl -sf -o /dev/null "$base/v1/balances/daily/$today" -H "Authorization: Bearer $token"
sleep 1.5
curl -sf "$base/metrics" > "$work/scrape.txt"

echo "promtool check metrics:"
promtool check metrics < "$work/scrape.txt"

echo "every metric the rules and the dashboard name is scraped:"
missing=0
for name in $(grep -ohE '(^|[^:a-z_])cashflow_[a-z0-9_]+' rules/*.yml grafana/cashflow.json | grep -oE 'cashflow_[a-z0-9_]+' | sort -u); do
  if grep -qE "^$name(\{| )" "$work/scrape.txt"; then
    echo "  ok       $name"
  elif printf '%s\n' "${allow_missing[@]}" | grep -qx "$name"; then
    echo "  allowed  $name (emitted only by a reconciling process; see allow_missing)"
  else
    echo "  MISSING  $name"
    missing=1
  fi
done
if [ "$missing" -ne 0 ]; then
  echo "metrics named by rules or dashboard are not on /metrics; scrape in $work/scrape.txt:" >&2
  cat "$work/scrape.txt" >&2
  exit 1
fi
echo "observability checks passed"
