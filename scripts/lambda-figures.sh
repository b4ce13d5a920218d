#!/usr/bin/env bash
# Reproduces the Lambda figures of docs/deploy-aws.md ("Figures"): each function's package size
# (the `lambda` profile, zipped as `sam deploy` zips a CodeUri), init time (process start to
# first invocation served), first and warm invocation latency through the runtime API emulator
# (p50/p99), the function's own time (handler start to answer, from its EMF line's
# `HandlerDuration`), the emulator's floor (an invocation whose handler does nothing) and peak
# memory (RSS), with the binaries polling cargo-lambda's emulator over the local PostgreSQL,
# moto (SQS and Cognito) and Redis (`scripts/services.sh start`). It also checks the functions'
# logs: every stderr line JSON, every line logged in an invocation carrying its request id and
# X-Ray trace id.
#
# Usage: scripts/lambda-figures.sh [--arm64] [WARM_INVOCATIONS]   (default 200)
#   --arm64 builds for arm64 and reports the package sizes only (the binaries cannot run here).
# Environment: CASHFLOW_FIGURES_POSTGRES_URL (an admin URL; default the local server),
# CASHFLOW_FIGURES_REDIS_URL, CASHFLOW_FIGURES_SQS_ENDPOINT (moto);
# CASHFLOW_FIGURES_BIN_DIR=DIR skips the build and times DIR/<function> instead (a dry run of
# the script with debug binaries: `target/debug`; its sizes and timings mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH=--x86-64
if [[ "${1:-}" == "--arm64" ]]; then ARCH=--arm64; shift; fi
WARM=${1:-200}
PG=${CASHFLOW_FIGURES_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS=${CASHFLOW_FIGURES_REDIS_URL:-redis://127.0.0.1:6379}
MOTO=${CASHFLOW_FIGURES_SQS_ENDPOINT:-http://127.0.0.1:5000}
FUNCTIONS=(admin ledger-api reports-api consumer outbox-sweep web)
TARGET=${CARGO_TARGET_DIR:-target}
BIN_DIR=${CASHFLOW_FIGURES_BIN_DIR:-}

command -v cargo-lambda >/dev/null || { echo "cargo-lambda is missing: pip install cargo-lambda" >&2; exit 1; }
WORK=$(mktemp -d)
DB="cashflow_figures_$(date +%s)"
cleanup() {
  psql -q "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z "$BIN_DIR" ]]; then
  # What deploy/aws/build.sh builds: the `lambda` profile (Cargo.toml: no debug information,
  # symbols stripped), one bootstrap per function under target/lambda/<function>/ (CodeUri).
  # With fat LTO and one codegen unit the build takes tens of minutes on 2 cores: say how long.
  BUILD_START=$SECONDS
  cargo lambda build --profile lambda "$ARCH" -p cashflow-lambda >&2
  echo "Built in $((SECONDS - BUILD_START)) s (load average: $(cut -d' ' -f1-3 /proc/loadavg))."
  # Zipped as `sam deploy` zips a CodeUri directory: Python's zipfile, deflate, default level.
  echo "| function | bootstrap | package (zip, as sam deploy makes it) |"
  echo "|---|---:|---:|"
  for f in "${FUNCTIONS[@]}"; do
    bin="$TARGET/lambda/$f/bootstrap"
    python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED) as z:
    z.write(sys.argv[1], "bootstrap")' "$bin" "$WORK/$f.zip"
    awk -v f="$f" -v b="$(stat -c %s "$bin")" -v z="$(stat -c %s "$WORK/$f.zip")" \
      'BEGIN { printf "| `%s` | %.1f MB | %.1f MB |\n", f, b / 1e6, z / 1e6 }'
    mkdir -p "$WORK/$f" && cp "$bin" "$WORK/$f/bootstrap"
  done
  [[ "$ARCH" == --arm64 ]] && exit 0
else
  for f in "${FUNCTIONS[@]}"; do mkdir -p "$WORK/$f" && cp "$BIN_DIR/$f" "$WORK/$f/bootstrap"; done
fi
psql -q "$PG" -c "CREATE DATABASE $DB" >/dev/null

WORK="$WORK" WARM="$WARM" DATABASE_URL="${PG%/*}/$DB" REDIS="$REDIS" MOTO="$MOTO" python3 - <<'PY'
"""Drives the functions through the emulator's invoke API and prints the figures as tables."""
import json, math, os, socket, subprocess, sys, time, urllib.request, uuid

import boto3

work, warm = os.environ["WORK"], int(os.environ["WARM"])
moto = os.environ["MOTO"]
sqs = boto3.client("sqs", endpoint_url=moto, region_name="us-east-1",
                   aws_access_key_id="test", aws_secret_access_key="test")
queue = sqs.create_queue(QueueName=f"cashflow-figures-{uuid.uuid4().hex[:8]}")["QueueUrl"]

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
emulator = subprocess.Popen(
    ["cargo-lambda", "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(port)],
    cwd="crates/lambda", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(300):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
        break
    except OSError:
        time.sleep(0.1)

env = dict(os.environ,
           CASHFLOW_DATABASE_URL=os.environ["DATABASE_URL"], CASHFLOW_QUEUE_URL=queue,
           CASHFLOW_CACHE_URL=os.environ["REDIS"], CASHFLOW_LOG_FORMAT="json", CASHFLOW_STAGE="figures",
           AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
           AWS_LAMBDA_FUNCTION_VERSION="1", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256")
runs = 0


def start(name):
    """The function's process; its stdout (EMF lines) and stderr (logs) to files of its own."""
    global runs
    runs += 1
    out = open(f"{work}/{name}.{runs}.out", "w")
    err = open(f"{work}/{name}.{runs}.err", "w")
    process = subprocess.Popen([f"{work}/{name}/bootstrap"], stdout=out, stderr=err,
                               env=dict(env, AWS_LAMBDA_FUNCTION_NAME=name,
                                        AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{port}/.rt/{name}"))
    process.files = (out.name, err.name)
    return process


def stop(process):
    process.kill()
    process.wait()
    return process.files


def invoke(name, payload):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations",
                                     data=json.dumps(payload).encode(), method="POST")
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read() or b"null")
    return (time.perf_counter() - t0) * 1000, body


def peak_rss_mb(process):
    with open(f"/proc/{process.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values, p):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)] if ordered else float("nan")


def handler_ms(stdout_file):
    """The HandlerDuration of each invocation, in order, from the function's EMF lines."""
    out = []
    with open(stdout_file) as f:
        for line in f:
            line = json.loads(line)
            if "HandlerDuration" in line:
                out.append(line["HandlerDuration"])
    return out


logs = {"lines": 0, "json": 0, "in_invocation": 0, "with_ids": 0}


def check_logs(stderr_file):
    """Every line JSON; every line logged inside an invocation with its request and trace ids."""
    with open(stderr_file) as f:
        for line in f:
            logs["lines"] += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                print(f"not JSON: {line[:200]}", file=sys.stderr)
                continue
            logs["json"] += 1
            spans = record.get("spans") or []
            invoke_span = [s for s in spans if s.get("name") == "Lambda runtime invoke"]
            if invoke_span:
                logs["in_invocation"] += 1
                if invoke_span[0].get("requestId") and invoke_span[0].get("xrayTraceId"):
                    logs["with_ids"] += 1


def measure(name, payload, check):
    """Init (start to first answer), then a fresh process: first invocation, `warm` more,
    the handler's own time of each, RSS."""
    t0 = time.perf_counter()
    process = start(name)
    _, body = invoke(name, payload())
    init = (time.perf_counter() - t0) * 1000
    check(body)
    out, err = stop(process)
    init_handler = (handler_ms(out) or [float("nan")])[0]
    check_logs(err)
    process = start(name)
    time.sleep(1.0)  # initialised and polling: the next invocation is the first one it serves
    first, body = invoke(name, payload())
    check(body)
    times = []
    for _ in range(warm):
        elapsed, body = invoke(name, payload())
        check(body)
        times.append(elapsed)
    rss = peak_rss_mb(process)
    out, err = stop(process)
    check_logs(err)
    handled = handler_ms(out)
    if len(handled) != warm + 1:
        sys.exit(f"{name}: {len(handled)} EMF lines for {warm + 1} invocations")
    own = handled[1:]
    gaps = [e - h for e, h in zip(times, own)]
    return dict(name=name, init=init, init_handler=init_handler, first=first, first_handler=handled[0],
                p50=percentile(times, 0.5), p99=percentile(times, 0.99),
                own50=percentile(own, 0.5), own99=percentile(own, 0.99),
                gap50=percentile(gaps, 0.5), gap99=percentile(gaps, 0.99), rss=rss)


def expect(status):
    def check(body):
        if not isinstance(body, dict) or body.get("statusCode", status) != status or "errorType" in body:
            sys.exit(f"unexpected answer: {json.dumps(body)[:400]}")
    return check


rows = []
rows.append(measure("admin", lambda: {"command": "migrate"}, expect(None)))
admin = start("admin")
merchants = [invoke("admin", {"command": "merchant-create", "name": n})[1]["merchant_id"] for n in ("Padaria", "Oficina")]
stop(admin)
pool = json.loads(subprocess.run(["python3", "crates/cashflow/tests/cognito_pool.py", moto, *merchants],
                                 check=True, capture_output=True).stdout)
env.update(CASHFLOW_OIDC_ISSUER=pool["issuer"], CASHFLOW_OIDC_JWKS_URL=pool["jwks_url"],
           CASHFLOW_OIDC_CLIENT_IDS=pool["client_id"], CASHFLOW_OIDC_ACCEPT_ID_TOKENS="true",
           CASHFLOW_OIDC_GROUP_SCOPES="owner=entries:write entries:read reports:read",
           CASHFLOW_NO_BUILTIN_ISSUER="true")
with open("crates/lambda/tests/fixtures/http-api-v2-post-entry.json") as f:
    template = f.read().replace("{{TOKEN}}", pool["maria"]["id"])


def post_entry():
    event = json.loads(template)
    event["headers"]["idempotency-key"] = str(uuid.uuid4())
    event["body"] = json.dumps({"type": "credit", "amount": "1.00", "description": "Venda"})
    return event


def get(path, route_key):
    event = json.loads(template)
    event["routeKey"] = event["requestContext"]["routeKey"] = route_key
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = "GET"
    del event["body"]
    return event


def get_report():
    path = "/v1/balances/daily/" + time.strftime("%Y-%m-%d")
    return get(path, f"GET {path}")


def get_home():
    """The web app's `/` as API Gateway sends it: no authorizer, the session in `cookies`."""
    event = get("/", "GET /")
    event["requestContext"].pop("authorizer", None)
    event["headers"].pop("authorization", None)
    event["cookies"] = [f"cf_session={pool['maria']['id']}"]
    return event


rows.append(measure("ledger-api", post_entry, expect(201)))

messages = []
while True:
    batch = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    if not batch:
        break
    messages += batch


def sqs_event():
    m = messages.pop() if messages else {"MessageId": str(uuid.uuid4()), "ReceiptHandle": "x", "Body": "{}"}
    return {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                         "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
                         "eventSource": "aws:sqs", "awsRegion": "us-east-1"}]}


def applied(body):
    if body != {"batchItemFailures": []}:
        sys.exit(f"consumer failed: {body}")


rows.append(measure("consumer", sqs_event, applied))
consumer = start("consumer")  # what is left (the merchants' registrations among it), untimed
while messages:
    batch = {"Records": [sqs_event()["Records"][0] for _ in range(min(10, len(messages)))]}
    applied(invoke("consumer", batch)[1])
stop(consumer)
rows.append(measure("reports-api", get_report, expect(200)))
rows.append(measure("web", get_home, expect(200)))
with open("crates/lambda/tests/fixtures/eventbridge-scheduled.json") as f:
    scheduled = json.load(f)
rows.append(measure("outbox-sweep", lambda: scheduled, expect(None)))

# The emulator's floor: a warm consumer given an empty batch answers at once (its handler
# opens nothing and applies nothing), so the round trip is the emulator's and the client's.
consumer = start("consumer")
invoke("consumer", {"Records": []})
floor, floor_own = [], []
for _ in range(warm):
    elapsed, body = invoke("consumer", {"Records": []})
    applied(body)
    floor.append(elapsed)
out, err = stop(consumer)
check_logs(err)
floor_own = handler_ms(out)[1:]
emulator.kill()

print("\n| function | init (start to first answer) | of which the handler | first invocation | of which the handler "
      "| warm p50 | warm p99 | handler p50 | handler p99 | emulator p50 | emulator p99 | peak RSS |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| `{r['name']}` | {r['init']:.0f} ms | {r['init_handler']:.1f} ms | {r['first']:.1f} ms | "
          f"{r['first_handler']:.1f} ms | {r['p50']:.1f} ms | {r['p99']:.1f} ms | {r['own50']:.2f} ms | "
          f"{r['own99']:.2f} ms | {r['gap50']:.1f} ms | {r['gap99']:.1f} ms | {r['rss']:.0f} MB |")
print(f"\nEmulator floor (warm `consumer`, empty batch, {warm} invocations): round trip p50 "
      f"{percentile(floor, 0.5):.1f} ms, p99 {percentile(floor, 0.99):.1f} ms; its handler p50 "
      f"{percentile(floor_own, 0.5):.3f} ms, p99 {percentile(floor_own, 0.99):.3f} ms.")
print(f"{warm} warm invocations per function. Warm p50/p99: the round trip through the emulator; handler: "
      "the function's own time (EMF HandlerDuration); emulator: round trip minus handler, per invocation.")
print(f"Logs: {logs['lines']} stderr lines, {logs['json']} JSON; {logs['in_invocation']} logged in an "
      f"invocation, {logs['with_ids']} of them with its requestId and xrayTraceId.")
PY
