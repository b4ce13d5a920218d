# Sourced by the checks that need a live `cashflow serve` (check-observability.sh,
# check-contract.sh): one serve on a free port with its own data directory, one merchant and
# one API client, and a token of that client.
#
#   start_checked_serve BIN WORK_DIR NAME SCOPES
#
# sets `base` (http://127.0.0.1:PORT), `pid` (serve's; the caller's trap kills it), `id`,
# `secret` and `token`. serve's log goes to WORK_DIR/serve.log.
start_checked_serve() {
  local bin="$1" work="$2" name="$3" scopes="$4" port merchant client
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  base="http://127.0.0.1:$port"
  export CASHFLOW_DATA_DIR="$work/data" RUST_LOG=warn
  "$bin" migrate >/dev/null
  merchant="$("$bin" merchant create --name "$name" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["merchant_id"])')"
  client="$("$bin" client create --merchant "$merchant" --scopes "$scopes" --json)"
  id="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_id"])' "$client")"
  secret="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["client_secret"])' "$client")"
  "$bin" serve --no-demo --listen "127.0.0.1:$port" > "$work/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "$base/health/ready" >/dev/null && break; sleep 0.1; done
  token="$(curl -sf -u "$id:$secret" -d grant_type=client_credentials "$base/oauth2/token" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
}
