#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The six functions as Lambda runs them, end to end: the built binaries (`bootstrap`s in
//! debug) polling cargo-lambda's runtime API emulator (`cargo lambda watch --only-lambda-apis`),
//! invoked with `cargo lambda invoke --data-file`, over the local PostgreSQL, moto's SQS and
//! Cognito, and Redis.
//!
//! The story: `admin` migrates and creates merchants; a moto Cognito token records an entry
//! through `ledger-api`; `consumer` applies the queue's messages and reports a poison one;
//! `reports-api` shows the day exact; a token without the merchant claim works once `admin`
//! links its subject; and `outbox-sweep` publishes what a cut-off `ledger-api` could not.
//! Then `web`, configured as the template configures it: its sign-in page offers the hosted
//! UI, `/auth/start` sends the browser there with PKCE, a forged callback and a form without
//! a valid CSRF token are refused, and a form rendered by one execution environment is
//! accepted by another, which records the entry and publishes its event before answering.
//!
//! Each function is its own process with its own environment, as on AWS, so one of them can
//! be given a dead queue. Ignored unless `CASHFLOW_TEST_CARGO_LAMBDA` names the `cargo-lambda`
//! executable and the backends' `CASHFLOW_TEST_*` variables are set (see `build.rs`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cashflow_db::TestDatabase;
use cashflow_events::{Event, EventBody};
use cashflow_queue::sqs::aws_config::{self, BehaviorVersion, Region};
use cashflow_queue::sqs::aws_sdk_sqs::config::{Credentials, SharedCredentialsProvider};
use cashflow_queue::sqs::aws_sdk_sqs::Client;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const POISON_ID: &str = "2e1424d4-f796-459a-8184-9c92662be6da";
const DAY: &str = "2026-11-23";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// The runtime API emulator, on a port of its own; killed on drop.
struct Emulator {
    port: u16,
    _child: Child,
}

impl Emulator {
    async fn start() -> Self {
        // A free port, and never one another test of this binary was given: its listener is
        // dropped before the emulator binds the port, so two tests could be handed the same
        // one, and the second would then talk to the first's emulator until that one stopped.
        static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
        let port = loop {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut given = GIVEN.lock().unwrap();
            if !given.contains(&port) {
                given.push(port);
                break port;
            }
        };
        let child = Command::new(var("CASHFLOW_TEST_CARGO_LAMBDA"))
            .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", &port.to_string()])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "the emulator did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { port, _child: child }
    }

    /// Starts the function `name` (its binary) polling the emulator, with `env` on top of the
    /// stack's environment.
    fn function(&self, name: &str, binary: &str, env: &[(&str, String)]) -> Child {
        self.function_writing(name, binary, env, Stdio::null(), Stdio::null())
    }

    /// [`Emulator::function`] with its stdout (the EMF lines) and stderr (the logs) to `stdout`
    /// and `stderr`.
    fn function_writing(
        &self,
        name: &str,
        binary: &str,
        env: &[(&str, String)],
        stdout: Stdio,
        stderr: Stdio,
    ) -> Child {
        Command::new(binary)
            .env("AWS_LAMBDA_RUNTIME_API", format!("http://127.0.0.1:{}/.rt/{name}", self.port))
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    /// `cargo lambda invoke NAME --data-file` with `payload`; the function's answer.
    async fn invoke(&self, name: &str, payload: &Value, dir: &Path) -> Value {
        let file = dir.join(format!("{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&file, payload.to_string()).unwrap();
        let output = Command::new(var("CASHFLOW_TEST_CARGO_LAMBDA"))
            .args(["lambda", "invoke", name, "-A", "127.0.0.1", "-P", &self.port.to_string(), "--data-file"])
            .arg(&file)
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "invoke {name}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

/// An API Gateway HTTP API (v2) event, from the recorded fixture.
fn http_event(method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let mut event: Value = serde_json::from_str(include_str!("fixtures/http-api-v2-post-entry.json")).unwrap();
    event["routeKey"] = json!(format!("{method} {path}"));
    event["rawPath"] = json!(path);
    event["requestContext"]["routeKey"] = event["routeKey"].clone();
    event["requestContext"]["http"]["method"] = json!(method);
    event["requestContext"]["http"]["path"] = json!(path);
    event["headers"]["authorization"] = json!(format!("Bearer {token}"));
    event["headers"]["idempotency-key"] = json!(uuid::Uuid::new_v4().to_string());
    match body {
        Some(body) => event["body"] = json!(body.to_string()),
        None => {
            event.as_object_mut().unwrap().remove("body");
        }
    }
    event
}

fn entry() -> Value {
    json!({"type": "credit", "amount": "42.50", "description": "Venda", "occurred_at": format!("{DAY}T12:00:00-03:00")})
}

/// An API Gateway HTTP API (v2) event for the web app, as its routes receive it: no
/// authorizer, the browser's `cookies`, and, for a form, its URL-encoded `form` fields.
fn web_event(method: &str, path: &str, query: &str, cookies: &[String], form: Option<&[(&str, &str)]>) -> Value {
    let mut event = http_event(method, path, "unused", None);
    event["routeKey"] = json!("ANY /{proxy+}");
    event["requestContext"]["routeKey"] = event["routeKey"].clone();
    event["rawQueryString"] = json!(query);
    event["requestContext"].as_object_mut().unwrap().remove("authorizer");
    let headers = event["headers"].as_object_mut().unwrap();
    for name in ["authorization", "content-type", "idempotency-key"] {
        headers.remove(name);
    }
    headers.insert("accept".into(), json!("text/html"));
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if let Some(fields) = form {
        let body: String = fields.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect::<Vec<_>>().join("&");
        event["headers"]["content-type"] = json!("application/x-www-form-urlencoded");
        event["body"] = json!(body);
    }
    event
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A web answer: its status, a header (case as API Gateway gets them: lower), its `Set-Cookie`s
/// (the v2 response's `cookies`) and its HTML.
struct Page {
    status: u64,
    headers: Value,
    cookies: Vec<String>,
    html: String,
}

impl Page {
    fn of(response: &Value) -> Self {
        let cookies = response["cookies"]
            .as_array()
            .map_or_else(Vec::new, |c| c.iter().map(|c| c.as_str().unwrap().to_owned()).collect());
        Self {
            status: response["statusCode"].as_u64().unwrap(),
            headers: response["headers"].clone(),
            cookies,
            html: response["body"].as_str().unwrap_or_default().to_owned(),
        }
    }

    fn header(&self, name: &str) -> &str {
        self.headers[name].as_str().unwrap_or_else(|| panic!("no {name} header in {}", self.headers))
    }

    /// The `Set-Cookie` of `name`, whole (value and attributes).
    fn set_cookie(&self, name: &str) -> &str {
        let prefix = format!("{name}=");
        self.cookies
            .iter()
            .find(|c| c.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.cookies))
    }

    /// The value of the hidden form field `name` (the first one on the page).
    fn field(&self, name: &str) -> String {
        let marker = format!(r#"name="{name}" value=""#);
        let start =
            self.html.find(&marker).unwrap_or_else(|| panic!("no field {name} in {}", self.html)) + marker.len();
        self.html[start..].split('"').next().unwrap().to_owned()
    }
}

/// `name=value` of a `Set-Cookie`, as the browser sends it back.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// The status and JSON body of a function's HTTP answer.
fn answer(response: &Value) -> (u64, Value) {
    let body = response["body"].as_str().map_or(Value::Null, |b| serde_json::from_str(b).unwrap_or(Value::Null));
    (response["statusCode"].as_u64().unwrap(), body)
}

fn sqs_client() -> Client {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new("test", "test", None, None, "tests")))
        .endpoint_url(var("CASHFLOW_TEST_SQS_ENDPOINT"))
        .build();
    Client::new(&sdk)
}

/// Everything the queue holds now, as the records of an SQS event (their real message ids).
async fn drain_queue(sqs: &Client, url: &str) -> Vec<Value> {
    let mut records = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(60)
            .send()
            .await
            .unwrap();
        let messages = received.messages();
        if messages.is_empty() {
            return records;
        }
        for m in messages {
            records.push(json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1796166000123"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:cashflow-events",
                "awsRegion": "us-east-1",
            }));
        }
    }
}

/// The `sub` claim of a token (read, not verified: the function verifies it).
fn subject_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

fn poison() -> Value {
    json!({
        "messageId": POISON_ID,
        "receiptHandle": "poison",
        "body": "this is not an event",
        "attributes": {"ApproximateReceiveCount": "3"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:cashflow-events",
        "awsRegion": "us-east-1",
    })
}

fn bin(name: &str) -> String {
    match name {
        "web" => env!("CARGO_BIN_EXE_web"),
        "admin" => env!("CARGO_BIN_EXE_admin"),
        "ledger-api" => env!("CARGO_BIN_EXE_ledger-api"),
        "reports-api" => env!("CARGO_BIN_EXE_reports-api"),
        "consumer" => env!("CARGO_BIN_EXE_consumer"),
        "outbox-sweep" => env!("CARGO_BIN_EXE_outbox-sweep"),
        other => panic!("no function {other}"),
    }
    .to_owned()
}

/// What both stories start from: a fresh database, an SQS queue, the emulator, the schemas
/// and two merchants made by the `admin` function (which keeps polling), and a Cognito pool in
/// moto whose users carry those merchants; `env` is the functions' environment, as the
/// template sets it, trusting that pool.
struct Stack {
    dir: tempfile::TempDir,
    _database: TestDatabase,
    sqs: Client,
    queue: String,
    emulator: Emulator,
    env: Vec<(&'static str, String)>,
    merchants: Vec<String>,
    /// `cognito_pool.py`'s answer: the issuer, the app client, each user's ID and access tokens.
    tokens: Value,
    _admin: Child,
}

impl Stack {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let database = TestDatabase::create(&var("CASHFLOW_TEST_POSTGRES_URL")).await.unwrap();
        let sqs = sqs_client();
        let name = format!("cashflow-e2e-{}", uuid::Uuid::new_v4().simple());
        let queue = sqs.create_queue().queue_name(name).send().await.unwrap().queue_url().unwrap().to_owned();
        let emulator = Emulator::start().await;
        let mut env: Vec<(&str, String)> = vec![
            ("CASHFLOW_DATABASE_URL", database.url().to_owned()),
            ("CASHFLOW_QUEUE_URL", queue.clone()),
            ("CASHFLOW_CACHE_URL", var("CASHFLOW_TEST_REDIS_URL")),
            ("CASHFLOW_DATA_DIR", dir.path().display().to_string()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ];

        let admin = emulator.function("admin", &bin("admin"), &env);
        let migrated = emulator.invoke("admin", &json!({"command": "migrate"}), dir.path()).await;
        assert_eq!(migrated["migrated"], json!(["ledger", "consolidation", "identity"]));
        let mut merchants = Vec::new();
        for name in ["Padaria", "Oficina"] {
            let created =
                emulator.invoke("admin", &json!({"command": "merchant-create", "name": name}), dir.path()).await;
            merchants.push(created["merchant_id"].as_str().unwrap().to_owned());
        }

        let script: PathBuf =
            [env!("CARGO_MANIFEST_DIR"), "..", "cashflow", "tests", "cognito_pool.py"].iter().collect();
        let pool = Command::new("python3")
            .arg(&script)
            .args([var("CASHFLOW_TEST_SQS_ENDPOINT"), merchants[0].clone(), merchants[1].clone()])
            .output()
            .await
            .unwrap();
        assert!(pool.status.success(), "cognito_pool.py: {}", String::from_utf8_lossy(&pool.stderr));
        let tokens: Value = serde_json::from_slice(&pool.stdout).unwrap();
        env.extend([
            ("CASHFLOW_OIDC_ISSUER", tokens["issuer"].as_str().unwrap().to_owned()),
            ("CASHFLOW_OIDC_JWKS_URL", tokens["jwks_url"].as_str().unwrap().to_owned()),
            ("CASHFLOW_OIDC_CLIENT_IDS", tokens["client_id"].as_str().unwrap().to_owned()),
            ("CASHFLOW_OIDC_ACCEPT_ID_TOKENS", "true".into()),
            ("CASHFLOW_OIDC_GROUP_SCOPES", "owner=entries:write entries:read reports:read".into()),
            ("CASHFLOW_NO_BUILTIN_ISSUER", "true".into()),
        ]);
        Self { dir, _database: database, sqs, queue, emulator, env, merchants, tokens, _admin: admin }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(cargo_lambda_tests),
    ignore = "set CASHFLOW_TEST_CARGO_LAMBDA (and the Postgres, Redis and SQS variables) to run under cargo lambda"
)]
async fn the_functions_record_consolidate_and_sweep_under_the_lambda_runtime_emulator() {
    // Given a fresh database, an SQS queue, the emulator, two merchants made by `admin`, and
    // a Cognito pool in moto whose users carry those merchants
    let stack = Stack::start().await;
    let Stack { dir, sqs, queue, emulator, env, merchants, tokens, .. } = &stack;
    let maria = tokens["maria"]["id"].as_str().unwrap();
    let _ledger_api = emulator.function("ledger-api", &bin("ledger-api"), env);
    let _reports_api = emulator.function("reports-api", &bin("reports-api"), env);
    let (emf_file, log_file) = (dir.path().join("consumer.out"), dir.path().join("consumer.err"));
    let _consumer = emulator.function_writing(
        "consumer",
        &bin("consumer"),
        env,
        std::fs::File::create(&emf_file).unwrap().into(),
        std::fs::File::create(&log_file).unwrap().into(),
    );
    let _sweep = emulator.function("outbox-sweep", &bin("outbox-sweep"), env);

    // When ledger-api gets maria's entry with her moto token
    let response =
        emulator.invoke("ledger-api", &http_event("POST", "/v1/entries", maria, Some(entry())), dir.path()).await;

    // Then it is recorded (201), and its event (with the merchants') is on the queue
    let (status, recorded) = answer(&response);
    assert_eq!(status, 201, "{response}");
    let entry_id = recorded["id"].as_str().unwrap().to_owned();
    let mut records = drain_queue(sqs, queue).await;
    assert_eq!(records.len(), 3, "two merchants and one entry: {records:?}");
    assert_eq!(records.iter().filter(|r| r["body"].as_str().unwrap().contains(&entry_id)).count(), 1);

    // When the consumer gets those messages and a poison one
    records.push(poison());
    let batch = emulator.invoke("consumer", &json!({ "Records": records }), dir.path()).await;

    // Then only the poison is handed back, and the day's report is exact
    assert_eq!(batch, json!({ "batchItemFailures": [{ "itemIdentifier": POISON_ID }] }));

    // And its EMF line says so: three applied, one poison, a lag for each applied event; every
    // log line it wrote is JSON, those of the invocation with its request and X-Ray trace ids
    let emf: Vec<Value> =
        std::fs::read_to_string(&emf_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(emf.len(), 1, "{emf:?}");
    assert_eq!(emf[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], "cashflow", "{emf:?}");
    assert_eq!((&emf[0]["EventsApplied"], &emf[0]["EventsPoison"]), (&json!(3), &json!(1)), "{emf:?}");
    assert_eq!(emf[0]["ConsolidationLagSeconds"].as_array().map(Vec::len), Some(3), "{emf:?}");
    let logs = std::fs::read_to_string(&log_file).unwrap();
    let logs: Vec<Value> =
        logs.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect();
    let invoked: Vec<&Value> = logs.iter().filter_map(|l| l["spans"].as_array()?.first()).collect();
    assert!(!invoked.is_empty(), "the poison message is logged: {logs:?}");
    for span in invoked {
        assert_eq!(span["name"], "Lambda runtime invoke", "{span}");
        assert!(
            span["requestId"].is_string() && span["xrayTraceId"].as_str().is_some_and(|t| t.starts_with("Root=1-")),
            "{span}"
        );
    }
    let report_path = format!("/v1/balances/daily/{DAY}");
    let response = emulator.invoke("reports-api", &http_event("GET", &report_path, maria, None), dir.path()).await;
    let (status, report) = answer(&response);
    assert_eq!(status, 200, "{response}");
    assert_eq!((&report["total_credits"], &report["closing_balance"]), (&json!("42.50"), &json!("42.50")), "{report}");
    assert_eq!(report["entry_count"], 1, "{report}");

    // When maria's access token, which carries no merchant claim, reaches ledger-api
    let access = tokens["maria"]["access"].as_str().unwrap();
    let subject = subject_of(access);
    let response =
        emulator.invoke("ledger-api", &http_event("POST", "/v1/entries", access, Some(entry())), dir.path()).await;

    // Then it is refused, naming the missing link
    let (status, problem) = answer(&response);
    assert_eq!(status, 401, "{response}");
    assert!(problem["detail"].as_str().unwrap().contains(&format!("subject `{subject}` is not linked")), "{problem}");

    // And once `admin` links the subject, the warm function accepts it within the reload interval
    let link = json!({"command": "identity-link", "merchant": merchants[0], "subject": subject});
    assert_eq!(emulator.invoke("admin", &link, dir.path()).await["kind"], "subject");
    let linked_at = Instant::now();
    loop {
        let event = http_event("POST", "/v1/entries", access, Some(entry()));
        let (status, body) = answer(&emulator.invoke("ledger-api", &event, dir.path()).await);
        if status == 201 {
            break;
        }
        assert!(linked_at.elapsed() < Duration::from_secs(7), "still {status} {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drain_queue(sqs, queue).await;

    // When ledger-api runs where its queue is unreachable (another deployment of the function,
    // behind an emulator of its own)
    let dead = [("CASHFLOW_QUEUE_URL", "http://127.0.0.1:9/000000000000/unreachable".to_owned())];
    let dead_env: Vec<_> = env.iter().filter(|(k, _)| *k != "CASHFLOW_QUEUE_URL").cloned().chain(dead).collect();
    let cut_off = Emulator::start().await;
    let _cut_off_ledger_api = cut_off.function("ledger-api", &bin("ledger-api"), &dead_env);
    let event = http_event("POST", "/v1/entries", maria, Some(entry()));
    let response = cut_off.invoke("ledger-api", &event, dir.path()).await;

    // Then the entry is still recorded, its event stays in the outbox, not on the queue
    let (status, recorded) = answer(&response);
    assert_eq!(status, 201, "{response}");
    let second = recorded["id"].as_str().unwrap().to_owned();
    assert!(drain_queue(sqs, queue).await.is_empty(), "the inline publish could not reach the queue");

    // And outbox-sweep publishes it
    let scheduled: Value = serde_json::from_str(include_str!("fixtures/eventbridge-scheduled.json")).unwrap();
    let swept = emulator.invoke("outbox-sweep", &scheduled, dir.path()).await;
    assert_eq!(swept, json!({ "published": 1 }));
    let records = drain_queue(sqs, queue).await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0]["body"].as_str().unwrap().contains(&second), "{records:?}");
}

/// The hosted UI domain and the app's origin the template gives the web function.
const HOSTED_UI: &str = "https://cashflow-e2e.auth.us-east-1.amazoncognito.com";
const APP_ORIGIN: &str = "https://app.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(cargo_lambda_tests),
    ignore = "set CASHFLOW_TEST_CARGO_LAMBDA (and the Postgres, Redis and SQS variables) to run under cargo lambda"
)]
async fn the_web_function_signs_in_through_the_hosted_ui_and_takes_forms_from_any_environment() {
    // Given the stack, and `web` as the template configures it (the pool's app client through
    // the hosted UI, the app's origin, the generated secret), in two execution environments:
    // two processes, each behind an emulator of its own
    let stack = Stack::start().await;
    let dir = stack.dir.path();
    let client_id = stack.tokens["client_id"].as_str().unwrap().to_owned();
    let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let mut env = stack.env.clone();
    env.extend([
        ("CASHFLOW_OIDC_WEB_CLIENT_ID", client_id.clone()),
        ("CASHFLOW_OIDC_WEB_DOMAIN", HOSTED_UI.to_owned()),
        ("CASHFLOW_PUBLIC_URL", APP_ORIGIN.to_owned()),
        ("CASHFLOW_WEB_SECRET", secret),
    ]);
    drain_queue(&stack.sqs, &stack.queue).await; // the merchants' registrations
    let first = &stack.emulator;
    let _web = first.function("web", &bin("web"), &env);
    let second = Emulator::start().await;
    let _other_web = second.function("web", &bin("web"), &env);

    // When someone opens the sign-in page
    let signin = Page::of(&first.invoke("web", &web_event("GET", "/signin", "", &[], None), dir).await);

    // Then it is an HTML page under a strict CSP offering the hosted UI, no password form (the
    // built-in issuer is off), and a pre-session cookie that scripts cannot read
    assert_eq!(signin.status, 200, "{}", signin.html);
    assert!(signin.header("content-type").starts_with("text/html"), "{}", signin.headers);
    let csp = signin.header("content-security-policy");
    for directive in ["default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(signin.html.contains(r#"href="/auth/start""#), "{}", signin.html);
    assert!(!signin.html.contains(r#"name="password""#), "{}", signin.html);
    let pre = signin.set_cookie("cf_pre");
    assert!(pre.contains("HttpOnly") && pre.contains("SameSite=Strict"), "{pre}");

    // When they follow it
    let start = Page::of(&first.invoke("web", &web_event("GET", "/auth/start", "", &[], None), dir).await);

    // Then the browser is sent to the hosted UI's authorize endpoint for the web client, with
    // PKCE and the callback on the app's origin, holding a flow cookie only the callback gets
    assert_eq!(start.status, 303, "{}", start.html);
    let location = start.header("location");
    assert!(location.starts_with(&format!("{HOSTED_UI}/oauth2/authorize?")), "{location}");
    for part in [
        "response_type=code".to_owned(),
        format!("client_id={client_id}"),
        "redirect_uri=https%3A%2F%2Fapp.example.com%2Fauth%2Fcallback".to_owned(),
        "code_challenge_method=S256".to_owned(),
    ] {
        assert!(location.contains(&part), "{part} in {location}");
    }
    let flow = start.set_cookie("cf_oidc");
    assert!(flow.contains("Path=/auth/callback") && flow.contains("HttpOnly"), "{flow}");

    // When a callback arrives, in the other environment, with that flow cookie but a state that
    // is not the flow's (a forged or replayed answer)
    let forged = web_event("GET", "/auth/callback", "code=stolen&state=forged", &[cookie_pair(flow)], None);
    let forged = Page::of(&second.invoke("web", &forged, dir).await);

    // Then it is refused, and the flow is spent
    assert_eq!(forged.status, 400, "{}", forged.html);
    assert!(forged.set_cookie("cf_oidc").contains("Max-Age=0"), "{:?}", forged.cookies);

    // Given maria signed in (the session cookie holds her Cognito token), her form in one
    // environment
    let session = [format!("cf_session={}", stack.tokens["maria"]["id"].as_str().unwrap())];
    let form = Page::of(&first.invoke("web", &web_event("GET", "/record", "", &session, None), dir).await);
    assert_eq!(form.status, 200, "{}", form.html);
    let (csrf, key) = (form.field("csrf"), form.field("idempotency_key"));
    let fields = |csrf: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("type", "credit".to_owned()),
            ("amount", "12,50".to_owned()),
            ("description", "Venda pelo app".to_owned()),
            ("idempotency_key", key.clone()),
        ]
    };
    let post = |csrf: &str| {
        let fields = fields(csrf);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        web_event("POST", "/entries", "", &session, Some(&fields))
    };

    // When it is posted with a CSRF token that is not hers
    let refused = Page::of(&second.invoke("web", &post("bm90LWhlci10b2tlbg"), dir).await);

    // Then it is refused, and nothing is recorded or published
    assert_eq!(refused.status, 403, "{}", refused.html);
    assert!(drain_queue(&stack.sqs, &stack.queue).await.is_empty());

    // When the form as rendered is posted to the other environment
    let accepted = Page::of(&second.invoke("web", &post(&csrf), dir).await);

    // Then the entry is recorded (back to the day's page), and its event alone is on the queue
    // when the function answers
    assert_eq!(accepted.status, 303, "{}", accepted.html);
    assert_eq!(accepted.header("location"), "/?recorded=1");
    let records = drain_queue(&stack.sqs, &stack.queue).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let body = records[0]["body"].as_str().unwrap();
    let EventBody::EntryRecorded(recorded) = Event::from_json(body).unwrap().body else { panic!("{body}") };
    assert_eq!(recorded.merchant_id.to_string(), stack.merchants[0], "{body}");
    assert_eq!(recorded.amount.minor(), 1250, "{body}");
}
