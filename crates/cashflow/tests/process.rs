//! The real `cashflow` binary: operator commands while `serve` runs, durability across a
//! SIGKILL, a graceful stop on SIGTERM, and traces exported over OTLP/HTTP to a receiver
//! (`CASHFLOW_TEST_OTLP_RECEIVER`: scripts/otlp-receiver.py, which `.ci/run` sets).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_cashflow");

/// A child process (`cashflow`, or the OTLP receiver) answering at `base`, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(data_dir: &Path) -> Server {
    serve_on(data_dir, common::free_port()).await
}

async fn serve_on(data_dir: &Path, port: u16) -> Server {
    start(&["serve"], data_dir, port, None).await
}

/// Starts `cashflow <command…> --listen 127.0.0.1:<port>` on `data_dir` and waits until it is
/// ready. Split processes are told the issuer URL (`CASHFLOW_PUBLIC_URL`) the tokens carry.
async fn start(command: &[&str], data_dir: &Path, port: u16, public_url: Option<&str>) -> Server {
    let mut cmd = cashflow(command, data_dir, port);
    if let Some(url) = public_url {
        cmd.env("CASHFLOW_PUBLIC_URL", url);
    }
    launch(cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit()), command, port).await
}

/// `cashflow <command…> --listen 127.0.0.1:<port> --data-dir <data_dir>`, stdout piped.
fn cashflow(command: &[&str], data_dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(command).args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"]).arg(data_dir);
    cmd.stdout(Stdio::piped());
    cmd
}

/// Spawns `cmd` and waits until it answers ready on `port`.
async fn launch(cmd: &mut Command, command: &[&str], port: u16) -> Server {
    let child = cmd.spawn().expect("spawn cashflow");
    let mut server = Server { child, base: format!("http://127.0.0.1:{port}") };
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("cashflow {command:?} exited ({status}) before it was ready on port {port}");
        }
        if let Ok(r) = client.get(format!("{}/health/ready", server.base)).send().await {
            if r.status() == 200 {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "cashflow {command:?} did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cli(data_dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(BIN).args(args).arg("--data-dir").arg(data_dir).output().expect("run cli");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

async fn token(base: &str, client_id: &str, secret: &str) -> String {
    let r = reqwest::Client::new()
        .post(format!("{base}/oauth2/token"))
        .basic_auth(client_id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

/// Creates a merchant and a client with the CLI (while `serve` runs) and returns a token.
async fn merchant_token(server: &Server, data_dir: &Path) -> String {
    let merchant = cli(
        data_dir,
        &["merchant", "create", "--name", "Mercado", "--currency", "BRL", "--timezone", "America/Sao_Paulo", "--json"],
    );
    let merchant_id = merchant["merchant_id"].as_str().expect("merchant_id");
    let client = cli(
        data_dir,
        &[
            "client",
            "create",
            "--merchant",
            merchant_id,
            "--scopes",
            "entries:write,entries:read,reports:read",
            "--json",
        ],
    );
    token(&server.base, client["client_id"].as_str().unwrap(), client["client_secret"].as_str().unwrap()).await
}

/// Records the entry `body` through `base`'s API and returns the answer, a 201.
async fn record(base: &str, token: &str, body: Value) -> reqwest::Response {
    let r =
        reqwest::Client::new().post(format!("{base}/v1/entries")).bearer_auth(token).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    r
}

async fn daily(base: &str, token: &str, date: &str) -> Value {
    let r =
        reqwest::Client::new().get(format!("{base}/v1/balances/daily/{date}")).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn operator_commands_work_while_serve_is_running() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let token = merchant_token(&server, dir.path()).await;
    let sale = json!({"type": "credit", "amount": "12.34", "description": "via CLI-made client", "occurred_at": "2026-11-20T10:00:00-03:00"});
    record(&server.base, &token, sale).await;
    // The merchant, registered by another process, reaches consolidation through the relay.
    daily_until(&server.base, &token, "2026-11-20", |day| day["total_credits"] == "12.34").await;
    let bad = Command::new(BIN)
        .args(["merchant", "create", "--name", "X", "--timezone", "Mars/Base", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success(), "an unknown time zone is refused");
}

#[tokio::test]
async fn first_start_prints_demo_credentials_that_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path()).await;
    let stdout = server.child.stdout.take().unwrap();
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, BufReader};
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("balances/daily");
            lines.push(line);
            if done {
                break;
            }
        }
        lines.join("\n")
    })
    .await
    .unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    let id = field("client_id:");
    let secret = field("client_secret:");
    assert!(text.contains("curl"), "{text}");
    token(&server.base, &id, &secret).await;
}

#[tokio::test]
async fn acknowledged_entries_survive_sigkill_and_are_consolidated_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let token = merchant_token(&server, dir.path()).await;

    // Concurrent writers; every 201 is an acknowledgement we must honour.
    let mut writers = Vec::new();
    for w in 0..8 {
        let base = server.base.clone();
        let token = token.clone();
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut acked = Vec::new();
            for i in 0..40 {
                let cents = 100 + w * 1000 + i;
                let day = 18 + (i % 3);
                let r = client
                    .post(format!("{base}/v1/entries"))
                    .bearer_auth(&token)
                    .json(&json!({
                        "type": "credit", "amount": format!("{}.{:02}", cents / 100, cents % 100),
                        "description": "durable", "occurred_at": format!("2026-11-{day}T12:00:00-03:00")
                    }))
                    .send()
                    .await;
                if let Ok(r) = r {
                    if r.status() == 201 {
                        let e: Value = r.json().await.unwrap();
                        acked.push((e["id"].as_str().unwrap().to_owned(), cents, day));
                    }
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    // Kill right after the last acknowledgement: no graceful shutdown, no flush.
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    drop(server);
    assert_eq!(acked.len(), 320);

    // Same address, so the tokens issued before the crash (same issuer, same persisted key)
    // still work.
    let server = serve_on(dir.path(), port).await;
    let client = reqwest::Client::new();
    for (id, _, _) in &acked {
        let r = client.get(format!("{}/v1/entries/{id}", server.base)).bearer_auth(&token).send().await.unwrap();
        let status = r.status();
        assert_eq!(status, 200, "acknowledged entry {id} lost: {}", r.text().await.unwrap_or_default());
    }
    // Deliveries leased by the killed process reappear after the visibility timeout (30 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    for day in 18..=20 {
        let date = format!("2026-11-{day}");
        let expected_cents: i64 = acked.iter().filter(|a| a.2 == day).map(|a| a.1).sum();
        let expected_count = acked.iter().filter(|a| a.2 == day).count() as u64;
        let expected = format!("{}.{:02}", expected_cents / 100, expected_cents % 100);
        loop {
            let report = daily(&server.base, &token, &date).await;
            if report["entry_count"].as_u64() == Some(expected_count) {
                assert_eq!(report["total_credits"], expected, "{date}: counted once, summed exactly");
                break;
            }
            assert!(report["entry_count"].as_u64().unwrap() < expected_count, "double-counted: {report}");
            assert!(Instant::now() < deadline, "{date} never converged: {report}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits until the day's report on `base` counts `count` entries, and returns it.
async fn daily_when(base: &str, token: &str, date: &str, count: u64) -> Value {
    daily_until(base, token, date, |day| day["entry_count"] == count).await
}

#[tokio::test]
async fn a_reports_replica_stays_fresh_and_keeps_serving_while_the_consumer_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger_port, consumer_port, replica_port) = (common::free_port(), common::free_port(), common::free_port());
    let issuer = format!("http://127.0.0.1:{ledger_port}");
    let ledger = start(&["ledger"], dir.path(), ledger_port, Some(&issuer)).await;
    let consumer = start(&["consolidator"], dir.path(), consumer_port, Some(&issuer)).await;
    let replica = start(&["consolidator", "--no-consumer"], dir.path(), replica_port, Some(&issuer)).await;
    let token = merchant_token(&ledger, dir.path()).await;
    let write = |cents: u32| {
        let body = json!({"type": "credit", "amount": format!("{cents}.00"), "description": "replica",
                          "occurred_at": "2026-11-20T12:00:00-03:00"});
        record(&ledger.base, &token, body)
    };

    write(1).await;
    assert_eq!(daily_when(&replica.base, &token, "2026-11-20", 1).await["total_credits"], "1.00");
    // A second read was answered; a later write must still show: the replica caches nothing
    // that the consumer (another process) could not invalidate.
    write(2).await;
    assert_eq!(daily_when(&replica.base, &token, "2026-11-20", 2).await["total_credits"], "3.00");

    drop(consumer); // SIGKILL: consolidation stops, reports stay readable
    write(4).await;
    let day = daily(&replica.base, &token, "2026-11-20").await;
    assert_eq!(day["entry_count"], 2, "nothing consumes while the consumer is down: {day}");

    let _consumer = start(&["consolidator"], dir.path(), consumer_port, Some(&issuer)).await;
    assert_eq!(daily_when(&replica.base, &token, "2026-11-20", 3).await["total_credits"], "7.00");
}

#[tokio::test]
async fn sigterm_lets_in_flight_writes_finish_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path()).await;
    let token = merchant_token(&server, dir.path()).await;

    // Keep-alive writers on separate connections (so on every HTTP lane), writing until the
    // server goes away.
    let mut writers = Vec::new();
    for w in 0..8 {
        let (base, token) = (server.base.clone(), token.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
            let mut acked = 0u64;
            for i in 0.. {
                let body = json!({"type": "credit", "amount": "1.00", "description": format!("w{w}-{i}"),
                                  "occurred_at": "2026-11-20T12:00:00-03:00"});
                match client.post(format!("{base}/v1/entries")).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status() == 201 => acked += 1,
                    Ok(r) => panic!("a write during shutdown got {}", r.status()),
                    // The server closed the connection or stopped accepting: shutdown.
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = terminate(&mut server, Duration::from_secs(15), "serve did not exit after SIGTERM").await;
    assert!(status.success(), "serve exited with {status}");
    let mut acked = 0;
    for w in writers {
        acked += w.await.unwrap();
    }
    assert!(acked > 0, "no write was acknowledged before the shutdown");

    // Every acknowledged write is in the ledger, and reaches the report.
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    drop(server);
    let server = serve_on(dir.path(), port).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = daily(&server.base, &token, "2026-11-20").await;
        let count = report["entry_count"].as_u64().unwrap();
        if count == acked {
            break;
        }
        assert!(count < acked, "more entries than acknowledged writes: {report}");
        assert!(Instant::now() < deadline, "{count} of {acked} acknowledged entries in the report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A token request with a password grant; returns the status and the body.
async fn password_grant(base: &str, username: &str, password: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/oauth2/token"))
        .form(&[("grant_type", "password"), ("username", username), ("password", password)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn no_secret_token_password_or_description_reaches_a_log_line_even_at_trace_level() {
    // Given `serve` logging JSON at the most verbose level into a file
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let port = common::free_port();
    let mut cmd = cashflow(&["serve"], dir.path(), port);
    cmd.env("RUST_LOG", "trace").env("CASHFLOW_LOG_FORMAT", "json");
    let server = launch(cmd.stderr(std::fs::File::create(&log_path).unwrap()), &["serve"], port).await;
    // and a client and a user whose secret and password we know
    let merchant = cli(
        dir.path(),
        &["merchant", "create", "--name", "Mercado", "--currency", "BRL", "--timezone", "America/Sao_Paulo", "--json"],
    );
    let merchant_id = merchant["merchant_id"].as_str().unwrap();
    let client = cli(dir.path(), &["client", "create", "--merchant", merchant_id, "--json"]);
    let (client_id, client_secret) = (client["client_id"].as_str().unwrap(), client["client_secret"].as_str().unwrap());
    let password = "correct-horse-battery-staple-7731";
    cli(
        dir.path(),
        &["user", "create", "--merchant", merchant_id, "--username", "ana", "--password", password, "--json"],
    );

    // When they get tokens, fail to, write entries with a description and read them back
    let client_token = token(&server.base, client_id, client_secret).await;
    let (status, body) = password_grant(&server.base, "ana", password).await;
    assert_eq!(status, 200, "{body}");
    let user_token = body["access_token"].as_str().unwrap().to_owned();
    let wrong_password = "wrong-guess-horse-5512";
    let (status, _) = password_grant(&server.base, "ana", wrong_password).await;
    assert!(status == 400 || status == 401, "a wrong password is refused: {status}");
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmb3JnZWQifQ.forged-signature-4419";
    let http = reqwest::Client::new();
    let r = http.get(format!("{}/v1/entries", server.base)).bearer_auth(forged).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let description = "gift for the surprise party 9931";
    let (mut request_ids, mut entry_ids) = (Vec::new(), Vec::new());
    for bearer in [&client_token, &user_token] {
        let body = json!({"type": "credit", "amount": "12.34", "description": description, "occurred_at": "2026-11-20T10:00:00-03:00"});
        let r = record(&server.base, bearer, body).await;
        request_ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        entry_ids.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned());
    }
    let url = format!("{}/v1/entries/{}", server.base, entry_ids[0]);
    let r = http.get(url).bearer_auth(&client_token).send().await.unwrap();
    assert!(r.text().await.unwrap().contains(description), "the description is served, so it was handled");
    daily_when(&server.base, &user_token, "2026-11-20", 2).await;
    drop(server);

    // Then no line holds any of them (a JWT's signature alone would let it be replayed)
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    let signature = |jwt: &str| jwt.rsplit('.').next().unwrap().to_owned();
    let secrets = [
        client_secret.to_owned(),
        password.to_owned(),
        wrong_password.to_owned(),
        client_token.clone(),
        signature(&client_token),
        user_token.clone(),
        signature(&user_token),
        forged.to_owned(),
        signature(forged),
        description.to_owned(),
    ];
    for line in &lines {
        for secret in &secrets {
            assert!(!line.contains(secret.as_str()), "a log line holds {secret:?}: {line}");
        }
    }
    // and every line is JSON; every line logged inside a request carries its request id,
    // trace id and span id
    let mut in_requests = 0;
    for line in &lines {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let spans = value["spans"].as_array().cloned().unwrap_or_default();
        if let Some(http_span) = spans.iter().find(|s| s["name"] == "http") {
            in_requests += 1;
            for field in ["request_id", "trace_id", "span_id"] {
                let id = http_span[field].as_str().unwrap_or_default();
                assert!(!id.is_empty(), "no {field} on: {line}");
            }
        }
    }
    assert!(in_requests > 10, "too few request lines captured ({in_requests}): is the level trace?");
    // and the consumer's lines carry the trace id each write started (its request id's hex)
    for id in &request_ids {
        assert!(logs.contains(&format!("\"request_id\":\"{id}\"")), "no line of request {id}");
        let trace_id = format!("\"trace_id\":\"{}\"", id.replace('-', ""));
        let consumed = lines.iter().any(|l| l.contains("event consolidated") && l.contains(&trace_id));
        assert!(consumed, "no consumer line joins the trace of request {id}");
    }
}

/// Runs `cashflow reconcile --json …` on `data_dir`: its exit status and its report.
fn reconcile(data_dir: &Path, args: &[&str]) -> (bool, Value) {
    let out = Command::new(BIN).arg("reconcile").args(args).arg("--data-dir").arg(data_dir).output().expect("run");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.success(), report)
}

#[tokio::test]
async fn reconcile_over_grpc_lists_a_tampered_day_exits_1_and_repairs_it() {
    // Given `serve` with its gRPC service, a merchant's consolidated sale, and a service client
    let dir = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", common::free_port());
    let server = start(&["serve", "--no-demo", "--grpc-listen", &grpc], dir.path(), common::free_port(), None).await;
    let merchant = cli(dir.path(), &["merchant", "create", "--name", "Mercado", "--timezone", "UTC", "--json"]);
    let merchant = merchant["merchant_id"].as_str().unwrap().to_owned();
    let writer = cli(
        dir.path(),
        &["client", "create", "--merchant", &merchant, "--scopes", "entries:write,reports:read", "--json"],
    );
    let token =
        token(&server.base, writer["client_id"].as_str().unwrap(), writer["client_secret"].as_str().unwrap()).await;
    let sale =
        json!({"type": "credit", "amount": "150.00", "description": "Venda", "occurred_at": "2026-11-23T10:00:00Z"});
    record(&server.base, &token, sale).await;
    daily_when(&server.base, &token, "2026-11-23", 1).await;
    let service = cli(dir.path(), &["client", "create", "--merchant", &merchant, "--scopes", "ledger:read", "--json"]);
    let token_url = format!("{}/oauth2/token", server.base);
    let grpc_url = format!("http://{grpc}");
    let args = [
        "--ledger-grpc-url",
        &grpc_url,
        "--client-id",
        service["client_id"].as_str().unwrap(),
        "--client-secret",
        service["client_secret"].as_str().unwrap(),
        "--token-url",
        &token_url,
        "--json",
    ];
    let (clean, report) = reconcile(dir.path(), &args);
    assert!(clean && report["findings"] == json!([]), "{report}");

    // When the day's consolidated credits are altered in the database
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.path().join("consolidation.db").display()))
        .await
        .unwrap();
    sqlx::query("UPDATE daily_totals SET total_credits = 1").execute(&db).await.unwrap();

    // Then reconcile lists that day, expected against found, and exits 1
    let (ok, report) = reconcile(dir.path(), &args);
    assert!(!ok, "{report}");
    let finding = &report["findings"][0];
    assert_eq!(report["findings"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!((finding["date"].as_str(), finding["merchant"].as_str()), (Some("2026-11-23"), Some(merchant.as_str())));
    assert_eq!(
        (finding["expected"]["total_credits"].as_i64(), finding["found"]["total_credits"].as_i64()),
        (Some(15000), Some(1))
    );

    // And with --repair it exits 0, the day holds the ledger's totals, and a second run is clean
    let repair: Vec<&str> = args.iter().copied().chain(["--repair"]).collect();
    let (ok, report) = reconcile(dir.path(), &repair);
    assert!(ok && report["findings"][0]["repaired"] == json!(true), "{report}");
    let credits: i64 = sqlx::query_scalar("SELECT total_credits FROM daily_totals").fetch_one(&db).await.unwrap();
    assert_eq!(credits, 15000);
    let (ok, report) = reconcile(dir.path(), &args);
    assert!(ok && report["findings"] == json!([]), "{report}");
}

/// Sends SIGTERM to `server` and waits for it to exit, failing with `hung` past `bound`;
/// returns its exit status and how long it took.
async fn terminate(server: &mut Server, bound: Duration, hung: &str) -> (std::process::ExitStatus, Duration) {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let stopped = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return (status, stopped.elapsed());
        }
        assert!(stopped.elapsed() < bound, "{hung}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `scripts/otlp-receiver.py serve <spans>` on a free port, killed when dropped.
fn otlp_receiver(script: &str, spans: &Path) -> Server {
    use std::io::BufRead;
    let mut child = Command::new(script).arg("serve").arg(spans).stdout(Stdio::piped()).spawn().expect("receiver");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("receiver said {line:?}"));
    Server { child, base: format!("http://127.0.0.1:{port}") }
}

#[tokio::test]
#[cfg_attr(
    not(otlp_tests),
    ignore = "set CASHFLOW_TEST_OTLP_RECEIVER to scripts/otlp-receiver.py (PyPI's opentelemetry-proto)"
)]
async fn serve_exports_an_entrys_trace_from_the_request_to_the_consumer_and_flushes_it_on_exit() {
    // Given an OTLP/HTTP receiver and `serve` exporting to it
    let script = std::env::var("CASHFLOW_TEST_OTLP_RECEIVER").unwrap();
    let (data, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let spans = out.path().join("spans.jsonl");
    let receiver = otlp_receiver(&script, &spans);
    let port = common::free_port();
    let mut cmd = cashflow(&["serve"], data.path(), port);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.base).env("OTEL_SERVICE_NAME", "cashflow-process-test");
    let mut server = launch(cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit()), &["serve"], port).await;
    let token = merchant_token(&server, data.path()).await;

    // When an entry is recorded and has reached the report
    let sale = json!({"type": "credit", "amount": "3.00", "description": "traced", "occurred_at": "2026-11-20T10:00:00-03:00"});
    let r = record(&server.base, &token, sale).await;
    let traceparent = r.headers()["traceparent"].to_str().unwrap().to_owned();
    // (until the consolidator has the merchant, made by another process, reports answer 404)
    daily_until(&server.base, &token, "2026-11-20", |day| day["entry_count"] == 1).await;
    // and the server is stopped at once (its batch of spans is still held: the default
    // schedule exports every 5 s)
    let (status, _) =
        terminate(&mut server, Duration::from_secs(10), "serve did not exit promptly while exporting").await;
    assert!(status.success(), "serve exited with {status}");

    // Then the receiver has the whole chain: the request's span, the ledger's write under it,
    // and the consumer's apply under it too, in one trace
    let mut ids = traceparent.split('-').skip(1);
    let (trace, span) = (ids.next().unwrap(), ids.next().unwrap());
    let check = Command::new(&script).arg("check").arg(&spans).args([trace, span]).output().unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    drop(receiver);
}

#[tokio::test]
async fn serve_exits_within_seconds_on_sigterm_when_the_trace_collector_never_answers() {
    // Given a "collector" that accepts connections and never answers, and `serve` exporting to it
    let collector = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", collector.local_addr().unwrap());
    let data = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut cmd = cashflow(&["serve"], data.path(), port);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint).env("OTEL_BSP_SCHEDULE_DELAY", "100");
    let mut server = launch(cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit()), &["serve"], port).await;
    // with spans to export, stuck in an export that hangs
    let _ = merchant_token(&server, data.path()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // When it is told to stop
    // Then it exits cleanly, the exporter's shutdown bounded (5 s) rather than waiting on the collector
    let (status, took) = terminate(&mut server, Duration::from_secs(12), "serve hung on its trace exporter").await;
    assert!(status.success(), "serve exited with {status}");
    println!("exited {took:?} after SIGTERM");
    drop(collector);
}

/// `cashflow day …` with `--json`; its exit status and what it printed.
fn day_cli(data_dir: &Path, args: &[&str]) -> (bool, Value, String) {
    let out =
        Command::new(BIN).arg("day").args(args).arg("--json").arg("--data-dir").arg(data_dir).output().expect("run");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Polls the day's report on `base` until `pred` holds, and returns it (a 404 while the
/// merchant's registration is not consolidated yet counts as not yet; any other error fails).
async fn daily_until(base: &str, token: &str, date: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = reqwest::Client::new()
            .get(format!("{base}/v1/balances/daily/{date}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let day: Value = r.json().await.unwrap();
        if status == 200 && pred(&day) {
            return day;
        }
        assert!(status == 200 || status == 404, "{status}: {day}");
        assert!(Instant::now() < deadline, "the report of {date} never got there: {day}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_day_commands_close_reopen_and_list_while_serve_is_running() {
    // Given `serve` running, a merchant and a sale of the 20th
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path()).await;
    let merchant = cli(dir.path(), &["merchant", "create", "--name", "Padaria", "--json"])["merchant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = cli(dir.path(), &["client", "create", "--merchant", &merchant, "--json"]);
    let token =
        token(&server.base, client["client_id"].as_str().unwrap(), client["client_secret"].as_str().unwrap()).await;
    let sale = json!({"type": "credit", "amount": "12.34", "description": "Venda", "occurred_at": "2026-11-20T10:00:00-03:00"});
    let post = |body: Value| {
        let (base, token) = (server.base.clone(), token.clone());
        async move {
            reqwest::Client::new()
                .post(format!("{base}/v1/entries"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post(sale.clone()).await.status(), 201);

    // When the operator closes the 20th from the command line, with 12.00 counted
    let (ok, close, stderr) = day_cli(
        dir.path(),
        &["close", "--merchant", &merchant, "--date", "2026-11-20", "--counted-cash", "12.00", "--by", "gerente"],
    );

    // Then the close holds the day's sale and the difference, the running server refuses a
    // new entry of the 20th, and its report says the day is closed
    assert!(ok, "{stderr}");
    assert_eq!((close["credits"].as_str(), close["difference"].as_str()), (Some("12.34"), Some("-0.34")));
    assert_eq!(close["closed_by"], "gerente");
    assert_eq!(post(sale.clone()).await.status(), 409);
    daily_until(&server.base, &token, "2026-11-20", |d| d["closed"] == true && d["counted_cash"] == "12.00").await;

    // When a day that is not closed is reopened, Then the command fails saying so
    let (ok, _, stderr) =
        day_cli(dir.path(), &["reopen", "--merchant", &merchant, "--date", "2026-11-21", "--reason", "x"]);
    assert!(!ok && stderr.contains("not closed"), "{stderr}");

    // When the 20th is reopened with a reason, Then the server takes its entries again, the
    // report turns open, and the list shows the close and the reopen
    let (ok, reopen, stderr) =
        day_cli(dir.path(), &["reopen", "--merchant", &merchant, "--date", "2026-11-20", "--reason", "recontagem"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        (reopen["action"].as_str(), reopen["closed_through_after"].as_str()),
        (Some("reopen"), Some("2026-11-19"))
    );
    assert_eq!(post(sale).await.status(), 201);
    daily_until(&server.base, &token, "2026-11-20", |d| d["closed"] == false && d["total_credits"] == "24.68").await;
    let (ok, list, stderr) =
        day_cli(dir.path(), &["list", "--merchant", &merchant, "--from", "2026-11-01", "--to", "2026-11-30"]);
    assert!(ok, "{stderr}");
    assert_eq!(list["closed_through"], "2026-11-19");
    let actions: Vec<&str> = list["audit"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["close", "reopen"]);
    assert_eq!(list["audit"][1]["reason"], "recontagem");
}
