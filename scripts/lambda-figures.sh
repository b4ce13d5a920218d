#!/usr/bin/env bash
# Reproduces the Lambda figures of docs/deploy-aws.md ("Figures"): each function's package size
# (`cargo lambda build --release --output-format zip`), init time (process start to first
# invocation served), first and warm invocation latency (p50/p99) and peak memory (RSS), with the
# release binaries polling cargo-lambda's runtime API emulator over the local PostgreSQL, moto
# (SQS and Cognito) and Redis (`scripts/services.sh start`).
#
# Usage: scripts/lambda-figures.sh [--arm64] [WARM_INVOCATIONS]   (default 200)
#   --arm64 builds for arm64 and reports the package sizes only (the binaries cannot run here).
# Environment: CASHFLOW_FIGURES_POSTGRES_URL (an admin URL; default the local server),
# CASHFLOW_FIGURES_REDIS_URL, CASHFLOW_FIGURES_SQS_ENDPOINT (moto).
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH=--x86-64
if [[ "${1:-}" == "--arm64" ]]; then ARCH=--arm64; shift; fi
WARM=${1:-200}
PG=${CASHFLOW_FIGURES_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS=${CASHFLOW_FIGURES_REDIS_URL:-redis://127.0.0.1:6379}
MOTO=${CASHFLOW_FIGURES_SQS_ENDPOINT:-http://127.0.0.1:5000}
FUNCTIONS=(admin ledger-api reports-api consumer outbox-sweep)
TARGET=${CARGO_TARGET_DIR:-target}

command -v cargo-lambda >/dev/null || { echo "cargo-lambda is missing: pip install cargo-lambda" >&2; exit 1; }
cargo lambda build --release "$ARCH" -p cashflow-lambda --output-format zip >&2

WORK=$(mktemp -d)
DB="cashflow_figures_$(date +%s)"
cleanup() {
  psql -q "$PG" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# The release profile keeps line tables; the `lambda` profile (Cargo.toml) strips them and the
# symbols, which `strip` on a copy reproduces without a second build (x86_64 only: the host's strip).
echo "| function | package (zip, release) | package (zip, stripped: profile lambda) |"
echo "|---|---:|---:|"
for f in "${FUNCTIONS[@]}"; do
  zipped=$(stat -c %s "$TARGET/lambda/$f/bootstrap.zip")
  mkdir -p "$WORK/$f" "$WORK/stripped/$f" && unzip -q -o "$TARGET/lambda/$f/bootstrap.zip" -d "$WORK/$f"
  stripped=0
  if [[ "$ARCH" == --x86-64 ]]; then
    strip -o "$WORK/stripped/$f/bootstrap" "$WORK/$f/bootstrap"
    (cd "$WORK/stripped/$f" && zip -q -9 bootstrap.zip bootstrap)
    stripped=$(stat -c %s "$WORK/stripped/$f/bootstrap.zip")
  fi
  awk -v f="$f" -v z="$zipped" -v s="$stripped" \
    'BEGIN { printf "| `%s` | %.1f MB | %s |\n", f, z / 1e6, s ? sprintf("%.1f MB", s / 1e6) : "-" }'
done
[[ "$ARCH" == --arm64 ]] && exit 0
psql -q "$PG" -c "CREATE DATABASE $DB" >/dev/null

WORK="$WORK" WARM="$WARM" DATABASE_URL="${PG%/*}/$DB" REDIS="$REDIS" MOTO="$MOTO" python3 - <<'PY'
"""Drives the functions through the emulator's invoke API and prints the figures as a table."""
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
           CASHFLOW_CACHE_URL=os.environ["REDIS"], CASHFLOW_LOG_FORMAT="json",
           AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1",
           AWS_LAMBDA_FUNCTION_VERSION="1", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256")


def start(name):
    return subprocess.Popen([f"{work}/{name}/bootstrap"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(env, AWS_LAMBDA_FUNCTION_NAME=name,
                                     AWS_LAMBDA_RUNTIME_API=f"http://127.0.0.1:{port}/.rt/{name}"))


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
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


def measure(name, payload, check):
    """Init (start to first answer), then a fresh process: first invocation, `warm` more, RSS."""
    t0 = time.perf_counter()
    process = start(name)
    _, body = invoke(name, payload())
    init = (time.perf_counter() - t0) * 1000
    check(body)
    process.kill(); process.wait()
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
    process.kill(); process.wait()
    return name, init, first, percentile(times, 0.5), percentile(times, 0.99), rss


def expect(status):
    def check(body):
        if not isinstance(body, dict) or body.get("statusCode", status) != status or "errorType" in body:
            sys.exit(f"unexpected answer: {json.dumps(body)[:400]}")
    return check


rows = []
rows.append(measure("admin", lambda: {"command": "migrate"}, expect(None)))
admin = start("admin")
merchants = [invoke("admin", {"command": "merchant-create", "name": n})[1]["merchant_id"] for n in ("Padaria", "Oficina")]
admin.kill(); admin.wait()
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


def get_report():
    event = json.loads(template)
    path = "/v1/balances/daily/" + time.strftime("%Y-%m-%d")
    event["routeKey"] = event["requestContext"]["routeKey"] = f"GET {path}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["requestContext"]["http"]["method"] = "GET"
    del event["body"]
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
consumer.kill(); consumer.wait()
rows.append(measure("reports-api", get_report, expect(200)))
with open("crates/lambda/tests/fixtures/eventbridge-scheduled.json") as f:
    scheduled = json.load(f)
rows.append(measure("outbox-sweep", lambda: scheduled, expect(None)))
emulator.kill()

print(f"\n| function | init (start to first answer) | first invocation | warm p50 | warm p99 | peak RSS |")
print("|---|---:|---:|---:|---:|---:|")
for name, init, first, p50, p99, rss in rows:
    print(f"| `{name}` | {init:.0f} ms | {first:.1f} ms | {p50:.1f} ms | {p99:.1f} ms | {rss:.0f} MB |")
print(f"\n{warm} warm invocations per function; latencies include the emulator hop.")
PY
