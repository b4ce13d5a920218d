//! Trusting Amazon Cognito by configuration alone, against moto's Cognito (the emulator named
//! by `CASHFLOW_TEST_SQS_ENDPOINT`, the same moto server that emulates SQS).
//!
//! `cognito_pool.py` creates the pools, app client and users and gets their real tokens
//! (`InitiateAuth USER_PASSWORD_AUTH`); it signs the machine-to-machine and forged tokens with
//! the private key moto ships. The application is the real one (`Application::build`) with
//! only its OIDC settings changed, called through its router. The JWKS is served to it by a
//! tiny local server that copies moto's and counts the fetches, so a test can take it down.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

use cashflow::app::{AppConfig, Application};
use cashflow::server::ServerConfig;
use cashflow_auth::oidc::{parse_group_scopes, OidcConfig, OidcPolicy};
use cashflow_domain::{Currency, MerchantId, MerchantName, MerchantTimeZone};

/// A JWKS endpoint that serves a fixed document, counts its fetches and can go down (503).
struct JwksServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

impl JwksServer {
    async fn serving(document: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
        let (fetches, down) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let (count, off) = (fetches.clone(), down.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                let (count, off, document) = (count.clone(), off.clone(), document.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = if off.load(Ordering::SeqCst) {
                        ("503 Service Unavailable", String::new())
                    } else {
                        ("200 OK", document)
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        Self { url, fetches, down }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// The pool, its tokens, and an application over a fresh data directory with two merchants.
struct Fixture {
    app: Application,
    tokens: Value,
    jwks: JwksServer,
    /// The merchant of maria and of the machine tokens.
    merchant_a: MerchantId,
    _dir: tempfile::TempDir,
}

/// `owner` may do everything, `accountant` only read; `cashflow/…` scopes map to ours.
fn policy(client_id: &str, accept_id_tokens: bool) -> OidcPolicy {
    OidcPolicy {
        client_ids: vec![client_id.to_owned()],
        accept_id_tokens,
        group_scopes: vec![
            parse_group_scopes("owner=entries:write entries:read reports:read").unwrap(),
            parse_group_scopes("accountant=entries:read reports:read").unwrap(),
        ],
        scope_prefix: Some("cashflow".into()),
        ..OidcPolicy::default()
    }
}

impl Fixture {
    async fn new(accept_id_tokens: bool, jwks_down_at_start: bool) -> Self {
        let endpoint = std::env::var("CASHFLOW_TEST_SQS_ENDPOINT").expect("CASHFLOW_TEST_SQS_ENDPOINT names moto");
        let dir = tempfile::tempdir().unwrap();
        // The merchants exist before the pool, whose users carry their ids: one application
        // for the merchants, another over the same directory trusting the pool.
        let mut config = AppConfig::embedded(dir.path(), "http://cashflow.test", Duration::from_secs(600));
        let setup = Application::build(&config).await.unwrap();
        let create = |name: &'static str| {
            let ledger = setup.ledger.clone();
            async move {
                ledger
                    .create_merchant(MerchantName::parse(name).unwrap(), Currency::BRL, MerchantTimeZone::DEFAULT)
                    .await
                    .unwrap()
                    .id
            }
        };
        let (merchant_a, merchant_b) = (create("Padaria").await, create("Oficina").await);
        drop(setup);

        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cognito_pool.py");
        let output = tokio::process::Command::new("python3")
            .args([script, &endpoint, &merchant_a.to_string(), &merchant_b.to_string()])
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "cognito_pool.py: {}", String::from_utf8_lossy(&output.stderr));
        let tokens: Value = serde_json::from_slice(&output.stdout).unwrap();
        let document = reqwest::get(tokens["jwks_url"].as_str().unwrap()).await.unwrap().text().await.unwrap();
        let jwks = JwksServer::serving(document).await;
        jwks.down.store(jwks_down_at_start, Ordering::SeqCst);

        config.oidc = OidcConfig {
            issuers: vec![(tokens["issuer"].as_str().unwrap().to_owned(), jwks.url.clone())],
            policy: policy(tokens["client_id"].as_str().unwrap(), accept_id_tokens),
            trust_builtin: true,
            web: None,
        };
        let app = Application::build(&config).await.unwrap();
        Self { app, tokens, jwks, merchant_a, _dir: dir }
    }

    fn token(&self, path: &str) -> String {
        let value = path.split('.').fold(&self.tokens, |v, key| &v[key]);
        value.as_str().unwrap_or_else(|| panic!("no token {path}")).to_owned()
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        call(&self.app.router(), method, path, token, body).await
    }

    async fn record(&self, token: &str) -> (StatusCode, Value) {
        record(&self.app.router(), token).await
    }

    async fn ready(&self) -> Value {
        let request = Request::get("/health/ready").body(Body::empty()).unwrap();
        let response = self.app.router().oneshot(request).await.unwrap();
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }
}

async fn call(router: &Router, method: Method, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let builder = Request::builder().method(method).uri(path).header(header::AUTHORIZATION, format!("Bearer {token}"));
    let request = match body {
        Some(b) => builder.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
        None => builder.body(Body::empty()),
    };
    let response = router.clone().oneshot(request.unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn record(router: &Router, token: &str) -> (StatusCode, Value) {
    let entry = json!({"type": "credit", "amount": "42.50", "description": "Venda", "occurred_at": "2026-11-23T12:00:00-03:00"});
    call(router, Method::POST, "/v1/entries", token, Some(entry)).await
}

fn assert_unauthorized(result: &(StatusCode, Value), case: &str) {
    assert_eq!(result.0, StatusCode::UNAUTHORIZED, "{case}: {}", result.1);
    assert_eq!(result.1["type"], "/problems/unauthorized", "{case}: {}", result.1);
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against moto's Cognito")]
async fn a_cognito_users_token_records_an_entry_and_reads_the_report_of_its_own_merchant_only() {
    // Given an application trusting the pool's ID tokens, maria an owner of merchant A, joão an accountant of B
    let fx = Fixture::new(true, false).await;
    let (maria, joao) = (fx.token("maria.id"), fx.token("joao.id"));

    // When maria records an entry
    let (status, entry) = fx.record(&maria).await;

    // Then it is recorded for merchant A, and she reads it back and her day's report
    assert_eq!(status, StatusCode::CREATED, "{entry}");
    let id = entry["id"].as_str().unwrap();
    let (status, _) = fx.call(Method::GET, &format!("/v1/entries/{id}"), &maria, None).await;
    assert_eq!(status, StatusCode::OK);
    fx.app.relay().drain().await.unwrap();
    fx.app.consumer().drain().await.unwrap();
    let (status, report) = fx.call(Method::GET, "/v1/balances/daily/2026-11-23", &maria, None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert!(report.to_string().contains("42.50"), "the report counts the entry: {report}");

    // And joão, of merchant B, can neither read A's entry nor write (his group only reads)
    let (status, _) = fx.call(Method::GET, &format!("/v1/entries/{id}"), &joao, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another merchant's entry does not exist for joão");
    let (status, report) = fx.call(Method::GET, "/v1/balances/daily/2026-11-23", &joao, None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert!(!report.to_string().contains("42.50"), "B's report does not show A's entry: {report}");
    let (status, problem) = fx.record(&joao).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["scope"], "entries:write");
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against moto's Cognito")]
async fn a_machine_access_token_with_resource_server_scopes_records_an_entry() {
    // Given an application taking access tokens only
    let fx = Fixture::new(false, false).await;

    // When a client-credentials token of the pool's app client (scopes `cashflow/…`) records an entry
    let (status, entry) = fx.record(&fx.token("machine_a")).await;

    // Then it is recorded
    assert_eq!(status, StatusCode::CREATED, "{entry}");
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against moto's Cognito")]
async fn forged_misdirected_and_stale_tokens_are_refused_with_401_problems() {
    // Given an application taking access tokens only
    let fx = Fixture::new(false, false).await;

    // Then every one of these is refused
    for (case, token) in [
        ("a token of another pool (other iss)", "other_pool.access"),
        ("an ID token where access tokens are required", "maria.id"),
        ("a user's access token without the merchant claim", "maria.access"),
        ("a wrong client_id", "wrong_client"),
        ("an expired token", "expired"),
        ("alg none", "alg_none"),
        ("alg HS256 keyed with the public key", "alg_hs256"),
    ] {
        assert_unauthorized(&fx.record(&fx.token(token)).await, case);
    }
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against moto's Cognito")]
async fn a_flood_of_random_kids_costs_at_most_one_jwks_fetch() {
    // Given an application that fetched the JWKS at start
    let fx = Fixture::new(false, false).await;
    let before = fx.jwks.fetches();
    assert_eq!(before, 1, "one fetch at start");
    tokio::time::sleep(cashflow_auth::jwks::DEFAULT_MIN_REFRESH_INTERVAL).await;

    // When twenty tokens signed with unknown kids arrive
    for token in fx.tokens["random_kids"].as_array().unwrap() {
        assert_unauthorized(&fx.record(token.as_str().unwrap()).await, "a random kid");
    }

    // Then they caused one fetch between them, and good tokens still work
    assert_eq!(fx.jwks.fetches() - before, 1, "unknown kids refresh at most once per interval");
    assert_eq!(fx.record(&fx.token("machine_a")).await.0, StatusCode::CREATED);
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against moto's Cognito")]
async fn while_the_jwks_endpoint_is_down_cached_keys_verify_and_unknown_kids_are_refused() {
    // Given an application that fetched the keys, then the JWKS endpoint goes down
    let fx = Fixture::new(false, false).await;
    fx.jwks.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(cashflow_auth::jwks::DEFAULT_MIN_REFRESH_INTERVAL).await;

    // Then an unknown kid is refused (its fetch fails) and the cached key still verifies
    assert_unauthorized(&fx.record(fx.tokens["random_kids"][0].as_str().unwrap()).await, "a random kid");
    assert_eq!(fx.record(&fx.token("machine_a")).await.0, StatusCode::CREATED);
    // And readiness says degraded, naming the probe
    let ready = fx.ready().await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["oidc_jwks"], "down", "{ready}");
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against moto's Cognito")]
async fn the_process_starts_while_the_jwks_endpoint_is_down_and_reports_itself_degraded() {
    // Given the JWKS endpoint is down when the application starts
    let fx = Fixture::new(false, true).await;

    // Then it is up but degraded, and refuses the pool's tokens (no keys yet)
    let ready = fx.ready().await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["oidc_jwks"], "down", "{ready}");
    assert_unauthorized(&fx.record(&fx.token("machine_a")).await, "no keys yet");

    // When the endpoint comes back, the next token's unknown kid fetches the keys
    fx.jwks.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(cashflow_auth::jwks::DEFAULT_MIN_REFRESH_INTERVAL).await;
    assert_eq!(fx.record(&fx.token("machine_a")).await.0, StatusCode::CREATED);
    assert_eq!(fx.ready().await["status"], "ready");
}

/// The `sub` claim of a token (read, not verified: the application verifies it).
fn subject_of(token: &str) -> String {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

/// Runs `cashflow identity ARGS --json` on the data directory, as an operator would while the
/// service runs; its JSON answer.
async fn identity(dir: &std::path::Path, args: &[&str]) -> Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_cashflow"))
        .arg("identity")
        .args(args)
        .args(["--json", "--data-dir"])
        .arg(dir)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "identity {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Calls `attempt` until it answers `expected`, for at most the reload interval plus 2 s.
async fn within_the_reload_interval<F, Fut>(expected: StatusCode, what: &str, mut attempt: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (StatusCode, Value)>,
{
    let deadline = std::time::Instant::now() + cashflow_auth::REFRESH_INTERVAL + Duration::from_secs(2);
    loop {
        let (status, body) = attempt().await;
        if status == expected {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: still {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
#[cfg_attr(not(sqs_tests), ignore = "set CASHFLOW_TEST_SQS_ENDPOINT to run against moto's Cognito")]
async fn a_token_without_the_merchant_claim_is_refused_naming_the_missing_link_until_an_operator_links_it() {
    // Given the application running (its workers reload links), taking access tokens only
    let Fixture { app, tokens, merchant_a, _dir: dir, .. } = Fixture::new(false, false).await;
    let router = app.router();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = tokio::spawn(app.into_process().run(listener, ServerConfig::default(), None, shutdown));
    // maria's real moto access token has no `custom:merchant_id`; nor has the machine token
    let maria = tokens["maria"]["access"].as_str().unwrap().to_owned();
    let machine = tokens["machine_unclaimed"].as_str().unwrap().to_owned();
    let (sub, client) = (subject_of(&maria), tokens["client_id"].as_str().unwrap().to_owned());

    // When maria records an entry
    let (status, problem) = record(&router, &maria).await;

    // Then she is refused with a 401 that names the missing claim and link
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert_eq!(problem["type"], "/problems/unauthorized", "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("`custom:merchant_id` claim"), "{detail}");
    assert!(detail.contains(&format!("subject `{sub}` is not linked")), "{detail}");
    assert!(problem["request_id"].is_string(), "{problem}");
    // And the machine token's refusal names its client
    let (status, problem) = record(&router, &machine).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains(&format!("client `{client}` is not linked")), "{problem}");

    // When an operator links her subject to merchant A, while the service runs
    let link = identity(dir.path(), &["link", "--merchant", &merchant_a.to_string(), "--subject", &sub]).await;
    assert_eq!((link["kind"].as_str(), link["external_id"].as_str()), (Some("subject"), Some(sub.as_str())));

    // Then within the reload interval she records an entry, for merchant A, and reads it back
    let entry = within_the_reload_interval(StatusCode::CREATED, "linked maria", || record(&router, &maria)).await;
    let id = entry["id"].as_str().unwrap();
    let (status, read) = call(&router, Method::GET, &format!("/v1/entries/{id}"), &maria, None).await;
    assert_eq!(status, StatusCode::OK, "{read}");

    // When the app client is linked for machines with reports only
    let scopes = ["--scopes", "reports:read"];
    let link = identity(
        dir.path(),
        &[&["link", "--merchant", &merchant_a.to_string(), "--client-id", &client], &scopes[..]].concat(),
    )
    .await;
    assert_eq!(link["scopes"], "reports:read", "{link}");

    // Then the machine token reads reports, but its `cashflow/entries:write` is capped by the link
    let report = "/v1/balances/daily/2026-11-23";
    within_the_reload_interval(StatusCode::OK, "linked machine", || call(&router, Method::GET, report, &machine, None))
        .await;
    let (status, problem) = record(&router, &machine).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["scope"], "entries:write");
    let listed = identity(dir.path(), &["list"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // When the operator unlinks her, she is refused again within the interval: her app
    // client's link binds machine tokens only, never a person's
    let unlinked = identity(dir.path(), &["unlink", "--subject", &sub]).await;
    assert_eq!(unlinked["unlinked"], true);
    within_the_reload_interval(StatusCode::UNAUTHORIZED, "unlinked maria", || record(&router, &maria)).await;

    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
}
