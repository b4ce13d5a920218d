#!/usr/bin/env bash
# The served OpenAPI document is the contract: schemathesis (PyPI, pinned below) runs every
# check in every phase (examples, coverage, fuzzing, stateful) against a real `cashflow serve`
# (free port, temp data dir, a merchant and a client with every merchant scope), with the
# settings and the named exceptions of deploy/contract/schemathesis.toml. Any failure fails.
# Usage: scripts/check-contract.sh [path/to/cashflow]   (default: builds target/debug/cashflow)
# Needs python3 and curl. The tool is installed once into a venv under ~/.cache
# (CASHFLOW_ST_VENV overrides the place).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="4.32.5"
venv="${CASHFLOW_ST_VENV:-$HOME/.cache/cashflow/schemathesis-$version}"
if [[ ! -f "$venv/.installed" ]]; then
  echo "== installing schemathesis $version into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
  touch "$venv/.installed"
fi

bin="${1:-}"
if [ -z "$bin" ]; then
  (cd "$root" && cargo build -q -p cashflow)
  bin="$root/target/debug/cashflow"
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# shellcheck source=lib/checked-serve.sh
source "$root/scripts/lib/checked-serve.sh"
start_checked_serve "$bin" "$work" "Contract check" entries:write,entries:read,reports:read,days:close,days:reopen

echo "== schemathesis $version against $base/openapi.json"
status=0
"$venv/bin/st" --no-color --config-file "$root/deploy/contract/schemathesis.toml" run "$base/openapi.json" \
  -H "Authorization: Bearer $token" || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis found failures (exit $status); the server's log:" >&2
  tail -50 "$work/serve.log" >&2
  exit "$status"
fi
echo "contract check passed"
