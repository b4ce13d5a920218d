#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The contract of [`IdentityStore`] (through [`Identities`], the checks above it), written
//! once and run against every backend.
//!
//! Each test body below is an `async fn` taking the store (or, when it needs to reopen the
//! database or read it raw, the [`Harness`]); `contract!` instantiates it as `sqlite::<name>`
//! (a temporary file, always run) and `postgres::<name>` (a fresh database per test on the
//! server named by `CASHFLOW_TEST_POSTGRES_URL`; ignored when that variable is unset, see
//! `build.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::Params;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http_body_util::BodyExt;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tower::ServiceExt;

use cashflow_auth::issuer::{self, Issuer, IssuerConfig};
use cashflow_auth::{
    ClientGrant, Identities, IdentityStore, PostgresIdentityStore, Scope, Scopes, SqliteIdentityStore, StoreError,
    ThrottleConfig, ThrottlePolicy, UserGrant,
};
use cashflow_auth::{JwtVerifier, LinkKind, Links, Refresher, RevocationCheck, TokenVerifier};
use cashflow_db::{Backend, TestDatabase};
use cashflow_domain::MerchantId;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A fresh database that stores can be opened (and reopened) on.
struct Harness {
    url: String,
    backend: Backend,
    /// Deleted (the file) or dropped (the database) with the harness, even on panic.
    _guard: Guard,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] TestDatabase),
}

/// The cheapest argon2id: unoptimized test builds would spend seconds per hash otherwise.
fn fast() -> Params {
    Params::new(Params::MIN_M_COST, 1, 1, None).unwrap()
}

impl Harness {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("identity.db").display());
        Self { url, backend: Backend::Sqlite, _guard: Guard::Sqlite(dir) }
    }

    async fn postgres() -> Self {
        let admin = std::env::var("CASHFLOW_TEST_POSTGRES_URL")
            .expect("CASHFLOW_TEST_POSTGRES_URL (an admin URL such as postgres://postgres@127.0.0.1:5432/postgres)");
        let db = TestDatabase::create(&admin).await.unwrap();
        Self { url: db.url().to_owned(), backend: Backend::Postgres, _guard: Guard::Postgres(db) }
    }

    /// The identities on a store on the database, opened like the binary does (each call opens
    /// a new one).
    async fn open(&self) -> Arc<Identities> {
        let rows: Arc<dyn IdentityStore> = match self.backend {
            Backend::Sqlite => Arc::new(SqliteIdentityStore::open(&self.url).await.unwrap()),
            Backend::Postgres => Arc::new(PostgresIdentityStore::open(&self.url).await.unwrap()),
        };
        Arc::new(Identities::new(rows).with_password_params(fast()))
    }

    /// The text column of a raw query, bypassing the store.
    async fn strings(&self, sql: &str) -> Vec<String> {
        match self.backend {
            Backend::Sqlite => {
                let pool = cashflow_db::open_sqlite(&self.url, 1).await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
            }
            Backend::Postgres => {
                let pool = cashflow_db::open_postgres(&self.url, 1, "identity").await.unwrap();
                sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
            }
        }
    }
}

/// Instantiates each body for both backends. `store:` bodies take `Arc<Identities>`,
/// `harness:` bodies take `&Harness`.
macro_rules! contract {
    (store: [$($s:ident),* $(,)?], harness: [$($h:ident),* $(,)?] $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $s() {
                    let harness = super::Harness::sqlite().await;
                    super::$s(harness.open().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $h() {
                    let harness = super::Harness::sqlite().await;
                    super::$h(&harness).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
                async fn $s() {
                    let harness = super::Harness::postgres().await;
                    super::$s(harness.open().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
                async fn $h() {
                    let harness = super::Harness::postgres().await;
                    super::$h(&harness).await;
                }
            )*
        }
    };
}

contract! {
    store: [
        a_client_authenticates_with_its_secret_and_nothing_else,
        client_names_are_bounded,
        a_user_logs_in_with_the_right_password_whatever_the_case_of_the_username,
        a_username_is_taken_regardless_of_case,
        malformed_usernames_and_empty_passwords_are_refused,
        concurrent_first_calls_agree_on_one_signing_key,
        a_healthy_store_answers_pings,
        a_subject_or_client_is_linked_to_one_merchant_listed_and_unlinked,
        link_ids_no_issuer_writes_are_refused,
    ],
    harness: [
        only_hashes_of_secrets_and_passwords_are_stored,
        merchant_ids_and_creation_times_are_stored_in_the_formats_of_the_schema,
        the_signing_key_survives_reopening_and_racing_processes,
        wrong_passwords_past_the_free_ones_are_answered_429_with_retry_after,
        after_the_delay_the_right_password_works_and_resets_the_count,
        guessing_client_secrets_is_throttled_per_client,
        one_address_guessing_many_accounts_is_throttled,
        every_process_on_the_store_sees_the_same_counts,
        a_revoked_clients_tokens_fail_within_the_refresh_interval_and_it_gets_no_new_one,
        a_disabled_user_gets_no_token_until_enabled_and_its_tokens_fail_meanwhile,
        rotated_secrets_and_passwords_replace_the_old_ones,
        a_rotated_keys_tokens_verify_until_it_retires_and_new_tokens_use_the_new_kid,
        a_new_or_removed_link_reaches_every_process_within_the_refresh_interval,
    ],
}

// ---------------------------------------------------------------------------------------------
// The contract
// ---------------------------------------------------------------------------------------------

async fn a_client_authenticates_with_its_secret_and_nothing_else(store: Arc<Identities>) {
    // Given a client
    let merchant = MerchantId::new();
    let scopes = Scopes::from(Scope::EntriesWrite);
    let client = store.create_client(merchant, scopes, Some("POS 1")).await.unwrap();
    assert!(client.client_id.starts_with("cf_") && client.client_id.len() == 25, "{}", client.client_id);

    // When it presents its secret, a wrong one, or someone presents its secret under another id
    let grant = store.authenticate_client(&client.client_id, client.client_secret.expose_secret()).await.unwrap();
    let wrong = store.authenticate_client(&client.client_id, "wrong").await.unwrap();
    let unknown = store.authenticate_client("cf_unknown", client.client_secret.expose_secret()).await.unwrap();

    // Then only the first is granted, for its merchant and scopes
    assert_eq!(grant, Some(ClientGrant { client_id: client.client_id.clone(), merchant_id: merchant, scopes }));
    assert_eq!((wrong, unknown), (None, None));

    // And every client gets its own id and secret
    let other = store.create_client(merchant, Scopes::all(), None).await.unwrap();
    assert_ne!(other.client_id, client.client_id);
    assert_ne!(other.client_secret.expose_secret(), client.client_secret.expose_secret());
    assert_eq!(store.authenticate_client(&other.client_id, client.client_secret.expose_secret()).await.unwrap(), None);
}

async fn client_names_are_bounded(store: Arc<Identities>) {
    let merchant = MerchantId::new();
    for name in ["x".repeat(121), "tab\there".to_owned()] {
        let result = store.create_client(merchant, Scopes::all(), Some(&name)).await;
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{name:?}: {result:?}");
    }
    // A blank name is no name; 120 characters is fine
    store.create_client(merchant, Scopes::all(), Some("   ")).await.unwrap();
    store.create_client(merchant, Scopes::all(), Some(&"é".repeat(120))).await.unwrap();
}

async fn a_user_logs_in_with_the_right_password_whatever_the_case_of_the_username(store: Arc<Identities>) {
    // Given a user
    let merchant = MerchantId::new();
    let password = SecretString::from("correct horse");
    store.create_user("Alice", &password, merchant, Scope::ReportsRead.into()).await.unwrap();

    // Then the right password works under any case, and nothing else does
    let expected =
        Some(UserGrant { username: "Alice".into(), merchant_id: merchant, scopes: Scope::ReportsRead.into() });
    assert_eq!(store.authenticate_user("alice", "correct horse").await.unwrap(), expected);
    assert_eq!(store.authenticate_user("ALICE", "correct horse").await.unwrap(), expected);
    assert_eq!(store.authenticate_user("Alice", "wrong horse").await.unwrap(), None);
    assert_eq!(store.authenticate_user("bob", "correct horse").await.unwrap(), None);
    assert_eq!(store.authenticate_user("", "correct horse").await.unwrap(), None);
    assert_eq!(store.authenticate_user("alice'--", "correct horse").await.unwrap(), None);
}

async fn a_username_is_taken_regardless_of_case(store: Arc<Identities>) {
    store.create_user("alice", &"pw".into(), MerchantId::new(), Scopes::all()).await.unwrap();

    for username in ["alice", "ALICE", "Alice"] {
        let result = store.create_user(username, &"pw2".into(), MerchantId::new(), Scopes::all()).await;
        assert!(matches!(result, Err(StoreError::Conflict(_))), "{username}: {result:?}");
    }
    // The original is untouched
    assert!(store.authenticate_user("alice", "pw").await.unwrap().is_some());
    assert_eq!(store.authenticate_user("alice", "pw2").await.unwrap(), None);
}

async fn malformed_usernames_and_empty_passwords_are_refused(store: Arc<Identities>) {
    let merchant = MerchantId::new();
    for username in ["ab", "has space", "semi;colon", &"a".repeat(65), "ünïcode", ""] {
        let result = store.create_user(username, &"pw".into(), merchant, Scopes::all()).await;
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{username}: {result:?}");
    }
    let result = store.create_user("alice", &"".into(), merchant, Scopes::all()).await;
    assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
    assert_eq!(store.authenticate_user("alice", "").await.unwrap(), None);
}

async fn concurrent_first_calls_agree_on_one_signing_key(store: Arc<Identities>) {
    let (a, b, c) = tokio::join!(store.signing_key(), store.signing_key(), store.signing_key());
    let kids = [a.unwrap().kid().to_owned(), b.unwrap().kid().to_owned(), c.unwrap().kid().to_owned()];
    assert!(kids.iter().all(|k| k == &kids[0]), "{kids:?}");
}

async fn a_healthy_store_answers_pings(store: Arc<Identities>) {
    store.ping().await.unwrap();
}

async fn only_hashes_of_secrets_and_passwords_are_stored(harness: &Harness) {
    // Given a client and a user
    let store = harness.open().await;
    let client = store.create_client(MerchantId::new(), Scopes::all(), None).await.unwrap();
    store.create_user("alice", &"correct horse".into(), MerchantId::new(), Scopes::all()).await.unwrap();

    // Then the database holds a SHA-256 of the secret and an argon2id hash of the password
    let secrets = harness.strings("SELECT secret_sha256 FROM clients").await;
    assert_eq!(secrets.len(), 1);
    assert_ne!(secrets[0], client.client_secret.expose_secret());
    assert!(secrets[0].len() == 64 && secrets[0].bytes().all(|b| b.is_ascii_hexdigit()), "{}", secrets[0]);
    let hashes = harness.strings("SELECT password_hash FROM users").await;
    assert_eq!(hashes.len(), 1);
    assert!(hashes[0].starts_with("$argon2id$") && !hashes[0].contains("correct horse"), "{}", hashes[0]);
}

async fn merchant_ids_and_creation_times_are_stored_in_the_formats_of_the_schema(harness: &Harness) {
    // Given a client, a user and the signing key, written by the store
    let store = harness.open().await;
    let merchant = MerchantId::new();
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    store.create_client(merchant, Scopes::all(), None).await.unwrap();
    store.create_user("alice", &"correct horse".into(), merchant, Scopes::all()).await.unwrap();
    store.signing_key().await.unwrap();
    let after = chrono::Utc::now() + chrono::Duration::seconds(1);

    for table in ["clients", "users", "signing_keys"] {
        // Then each row's creation time is the time it was written: on SQLite RFC 3339 text in UTC
        // with milliseconds (what earlier rows hold, so that old and new sort together)
        let created = match harness.backend {
            Backend::Sqlite => harness.strings(&format!("SELECT created_at FROM {table}")).await,
            Backend::Postgres => {
                let utc = r#"to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')"#;
                harness.strings(&format!("SELECT {utc} FROM {table}")).await
            }
        };
        assert_eq!(created.len(), 1, "{table}");
        let at = chrono::DateTime::parse_from_rfc3339(&created[0]).unwrap();
        assert!(created[0].len() == 24 && created[0].ends_with('Z'), "{table}: {}", created[0]);
        assert!(before <= at && at <= after, "{table}: {at} not between {before} and {after}");
    }
    // And the merchant id reads back as the hyphenated id it is
    for table in ["clients", "users"] {
        let merchants = harness.strings(&format!("SELECT CAST(merchant_id AS TEXT) FROM {table}")).await;
        assert_eq!(merchants, [merchant.to_string()], "{table}");
    }
}

async fn the_signing_key_survives_reopening_and_racing_processes(harness: &Harness) {
    // Given two stores opened on one fresh database at once (two processes starting together)
    let (first, second) = tokio::join!(harness.open(), harness.open());

    // When both ask for the signing key at the same time, and a third store asks later
    let (a, b) = tokio::join!(first.signing_key(), second.signing_key());
    let (a, b) = (a.unwrap(), b.unwrap());
    drop((first, second));
    let later = harness.open().await.signing_key().await.unwrap();

    // Then it is one key
    assert_eq!(a.kid(), b.kid());
    assert_eq!(a.kid(), later.kid());
    assert_eq!(a.pkcs8_der(), later.pkcs8_der());
}

// ---------------------------------------------------------------------------------------------
// Throttled guessing at the token endpoint, counted in the store
// ---------------------------------------------------------------------------------------------

/// 3 free failures per account, 6 per address, then 1 s (doubling, at most 2 s).
fn throttle() -> ThrottleConfig {
    let account = ThrottlePolicy {
        free_failures: 3,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(2),
        window: Duration::from_secs(600),
    };
    ThrottleConfig { account, address: ThrottlePolicy { free_failures: 6, ..account } }
}

/// The token endpoint of an issuer on the harness's database (one "process").
async fn token_endpoint(harness: &Harness) -> (Arc<Identities>, axum::Router) {
    let identities = harness.open().await;
    let key = identities.signing_key().await.unwrap();
    let config = IssuerConfig { throttle: throttle(), ..IssuerConfig::new("http://issuer.test", "cashflow") };
    let router = issuer::router(Arc::new(Issuer::new(config, key, identities.clone())));
    (identities, router)
}

struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

async fn post_token(router: &axum::Router, form: &str, basic: Option<(&str, &str)>, from: [u8; 4]) -> Answer {
    let mut request = Request::post("/oauth2/token").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        request = request.header(header::AUTHORIZATION, format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))));
    }
    let mut request = request.body(Body::from(form.to_owned())).unwrap();
    request.extensions_mut().insert(ConnectInfo(std::net::SocketAddr::from((from, 40_000))));
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().parse().unwrap());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer { status, retry_after, body: serde_json::from_slice(&bytes).unwrap_or(Value::Null) }
}

const HOME: [u8; 4] = [192, 0, 2, 1];

async fn login(router: &axum::Router, username: &str, password: &str, from: [u8; 4]) -> Answer {
    post_token(router, &format!("grant_type=password&username={username}&password={password}"), None, from).await
}

async fn wrong_passwords_past_the_free_ones_are_answered_429_with_retry_after(harness: &Harness) {
    // Given a user
    let (identities, router) = token_endpoint(harness).await;
    identities.create_user("alice", &"right".into(), MerchantId::new(), Scopes::all()).await.unwrap();

    // When someone guesses wrong three times (the free failures)
    for _ in 0..3 {
        assert_eq!(login(&router, "alice", "guess", HOME).await.status, StatusCode::BAD_REQUEST);
    }
    // Then the next attempt, even with the right password, is refused before it is checked
    let refused = login(&router, "alice", "right", HOME).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.body);
    assert_eq!(refused.retry_after, Some(1));
    assert_eq!(refused.body["error"], "slow_down");
    assert_eq!(refused.body["type"], "/problems/slow-down");
    assert!(refused.body["error_description"].is_string() && refused.body["title"].is_string());
    // And the username's case does not open a second count
    assert_eq!(login(&router, "ALICE", "guess", HOME).await.status, StatusCode::TOO_MANY_REQUESTS);
}

async fn after_the_delay_the_right_password_works_and_resets_the_count(harness: &Harness) {
    // Given a user whose account is throttled: three wrong guesses earn a 1 s delay
    let (identities, router) = token_endpoint(harness).await;
    identities.create_user("alice", &"right".into(), MerchantId::new(), Scopes::all()).await.unwrap();
    for _ in 0..3 {
        login(&router, "alice", "guess", HOME).await;
    }
    let throttled_at = Instant::now();
    assert_eq!(login(&router, "alice", "right", HOME).await.status, StatusCode::TOO_MANY_REQUESTS);

    // When the delay has passed, the right password works
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let answer = login(&router, "alice", "right", HOME).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(throttled_at.elapsed() < Duration::from_secs(3));

    // Then the count starts over: three wrong guesses are free again
    for _ in 0..3 {
        assert_eq!(login(&router, "alice", "guess", HOME).await.status, StatusCode::BAD_REQUEST);
    }
    assert_eq!(login(&router, "alice", "guess", HOME).await.status, StatusCode::TOO_MANY_REQUESTS);
}

async fn guessing_client_secrets_is_throttled_per_client(harness: &Harness) {
    // Given two clients
    let (identities, router) = token_endpoint(harness).await;
    let target = identities.create_client(MerchantId::new(), Scopes::all(), None).await.unwrap();
    let other = identities.create_client(MerchantId::new(), Scopes::all(), None).await.unwrap();

    // When one client's secret is guessed wrong three times (from different addresses)
    for i in 0..3 {
        let answer =
            post_token(&router, "grant_type=client_credentials", Some((&target.client_id, "guess")), [198, 51, 100, i])
                .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }

    // Then that client is throttled, the other is not
    let refused = post_token(
        &router,
        "grant_type=client_credentials",
        Some((&target.client_id, target.client_secret.expose_secret())),
        HOME,
    )
    .await;
    assert_eq!((refused.status, refused.retry_after), (StatusCode::TOO_MANY_REQUESTS, Some(1)));
    let fine = post_token(
        &router,
        "grant_type=client_credentials",
        Some((&other.client_id, other.client_secret.expose_secret())),
        HOME,
    )
    .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.body);
}

async fn one_address_guessing_many_accounts_is_throttled(harness: &Harness) {
    // Given a user
    let (identities, router) = token_endpoint(harness).await;
    identities.create_user("alice", &"right".into(), MerchantId::new(), Scopes::all()).await.unwrap();

    // When one address guesses six different usernames once each (no account reaches its limit)
    for i in 0..6 {
        assert_eq!(login(&router, &format!("user{i}"), "guess", HOME).await.status, StatusCode::BAD_REQUEST);
    }

    // Then that address is throttled, for any account; another address is not
    assert_eq!(login(&router, "alice", "right", HOME).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login(&router, "alice", "right", [203, 0, 113, 9]).await.status, StatusCode::OK);
}

async fn every_process_on_the_store_sees_the_same_counts(harness: &Harness) {
    // Given two issuers on one database (two `ledger` processes) and a user
    let (identities, first) = token_endpoint(harness).await;
    let (_, second) = token_endpoint(harness).await;
    identities.create_user("alice", &"right".into(), MerchantId::new(), Scopes::all()).await.unwrap();

    // When the guesses alternate between the processes
    for router in [&first, &second, &first] {
        assert_eq!(login(router, "alice", "guess", HOME).await.status, StatusCode::BAD_REQUEST);
    }

    // Then both throttle the account
    assert_eq!(login(&second, "alice", "right", HOME).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login(&first, "alice", "right", HOME).await.status, StatusCode::TOO_MANY_REQUESTS);
}

// ---------------------------------------------------------------------------------------------
// Revocable credentials and key rotation, seen by a process other than the operator's
// ---------------------------------------------------------------------------------------------

/// A service process: an issuer, its verifier behind the revocation check, and the refresher.
struct Service {
    issuer: Arc<Issuer>,
    router: axum::Router,
    verifier: Arc<RevocationCheck>,
    refresher: Refresher,
}

async fn service(harness: &Harness, token_ttl: Duration) -> Service {
    let identities = harness.open().await;
    let key = identities.signing_key().await.unwrap();
    let config = IssuerConfig { token_ttl, ..IssuerConfig::new("http://issuer.test", "cashflow") };
    let issuer = Arc::new(Issuer::new(config, key, identities.clone()));
    let jwt = Arc::new(JwtVerifier::new(issuer.verifier_config(), issuer.jwks()).unwrap());
    let verifier = Arc::new(RevocationCheck::new(jwt.clone()));
    let refresher = Refresher {
        identities,
        issuer: issuer.clone(),
        verifier: jwt,
        check: verifier.clone(),
        links: Arc::new(Links::default()),
    };
    Service { router: issuer::router(issuer.clone()), issuer, verifier, refresher }
}

async fn client_token(router: &axum::Router, id: &str, secret: &str) -> Answer {
    post_token(router, "grant_type=client_credentials", Some((id, secret)), HOME).await
}

fn token_of(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["access_token"].as_str().unwrap().to_owned()
}

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

async fn a_revoked_clients_tokens_fail_within_the_refresh_interval_and_it_gets_no_new_one(harness: &Harness) {
    // Given a service reloading every 200 ms and a client holding a token that works
    let operator = harness.open().await;
    let client = operator.create_client(MerchantId::new(), Scopes::all(), None).await.unwrap();
    let service = service(harness, Duration::from_secs(600)).await;
    let token = token_of(&client_token(&service.router, &client.client_id, client.client_secret.expose_secret()).await);
    service.refresher.refresh().await.unwrap();
    assert!(service.verifier.verify(&token).is_ok());
    let Service { router, verifier, refresher, .. } = service;
    let reloads = tokio::spawn(refresher.run(Duration::from_millis(200)));

    // When the operator (another process) revokes the client
    assert!(operator.revoke_client(&client.client_id).await.unwrap());
    let revoked_at = Instant::now();

    // Then its token fails within the interval (plus a reload), and it gets no new one
    while verifier.verify(&token).is_ok() {
        assert!(revoked_at.elapsed() < Duration::from_millis(1_000), "still accepted after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = client_token(&router, &client.client_id, client.client_secret.expose_secret()).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(!operator.revoke_client("cf_unknown").await.unwrap());
    assert!(operator.clients().await.unwrap()[0].revoked_at_ms.is_some());
    reloads.abort();
}

async fn a_disabled_user_gets_no_token_until_enabled_and_its_tokens_fail_meanwhile(harness: &Harness) {
    // Given a user with a token, and another user
    let operator = harness.open().await;
    let merchant = MerchantId::new();
    operator.create_user("Maria", &"right".into(), merchant, Scopes::all()).await.unwrap();
    operator.create_user("joao", &"right".into(), merchant, Scopes::all()).await.unwrap();
    let service = service(harness, Duration::from_secs(600)).await;
    let token = token_of(&login(&service.router, "maria", "right", HOME).await);
    let other = token_of(&login(&service.router, "joao", "right", HOME).await);

    // When Maria is disabled (under another case) and the service reloads
    assert!(operator.set_user_disabled("MARIA", true).await.unwrap());
    service.refresher.refresh().await.unwrap();

    // Then her token fails and she gets no new one; the other user is unaffected
    assert!(service.verifier.verify(&token).is_err());
    assert_eq!(login(&service.router, "maria", "right", HOME).await.status, StatusCode::BAD_REQUEST);
    assert!(service.verifier.verify(&other).is_ok());

    // And once enabled again she logs in
    assert!(operator.set_user_disabled("maria", false).await.unwrap());
    service.refresher.refresh().await.unwrap();
    let fresh = token_of(&login(&service.router, "maria", "right", HOME).await);
    assert!(service.verifier.verify(&fresh).is_ok());
    let users = operator.users().await.unwrap();
    assert_eq!(users.iter().map(|u| u.username.as_str()).collect::<Vec<_>>(), ["Maria", "joao"]);
}

async fn rotated_secrets_and_passwords_replace_the_old_ones(harness: &Harness) {
    let operator = harness.open().await;
    let merchant = MerchantId::new();
    let client = operator.create_client(merchant, Scopes::all(), None).await.unwrap();
    operator.create_user("maria", &"old".into(), merchant, Scopes::all()).await.unwrap();

    let rotated = operator.rotate_client_secret(&client.client_id).await.unwrap().unwrap();
    assert!(operator.set_password("maria", &"new".into()).await.unwrap());

    let old_secret = client.client_secret.expose_secret();
    assert_eq!(operator.authenticate_client(&client.client_id, old_secret).await.unwrap(), None);
    assert!(operator
        .authenticate_client(&client.client_id, rotated.client_secret.expose_secret())
        .await
        .unwrap()
        .is_some());
    assert_eq!(operator.authenticate_user("maria", "old").await.unwrap(), None);
    assert!(operator.authenticate_user("maria", "new").await.unwrap().is_some());
    // A revoked client's secret cannot be rotated back to life; unknown names change nothing
    operator.revoke_client(&client.client_id).await.unwrap();
    assert!(operator.rotate_client_secret(&client.client_id).await.unwrap().is_none());
    assert!(!operator.set_password("nobody", &"x".into()).await.unwrap());
    assert!(!operator.set_user_disabled("nobody", true).await.unwrap());
}

async fn a_rotated_keys_tokens_verify_until_it_retires_and_new_tokens_use_the_new_kid(harness: &Harness) {
    // Given a service whose tokens live 1 s, and a token signed with the first key
    let operator = harness.open().await;
    let client = operator.create_client(MerchantId::new(), Scopes::all(), None).await.unwrap();
    let service = service(harness, Duration::from_secs(1)).await;
    let secret = client.client_secret.expose_secret();
    let old = token_of(&client_token(&service.router, &client.client_id, secret).await);

    // When the operator rotates the key (signing at once, the old key retiring 2 s later) and
    // the service reloads
    let new_key = operator.rotate_signing_key(Duration::ZERO, Duration::from_secs(2), Duration::ZERO).await.unwrap();
    let rotated_at = Instant::now();
    service.refresher.refresh().await.unwrap();

    // Then new tokens carry the new kid, both keys are published, and both tokens verify
    let new = token_of(&client_token(&service.router, &client.client_id, secret).await);
    assert_eq!(kid_of(&new), new_key.key.kid());
    assert_ne!(kid_of(&old), kid_of(&new));
    let kids: Vec<_> = service.issuer.jwks().keys.iter().map(|k| k.common.key_id.clone().unwrap()).collect();
    assert_eq!(kids, [kid_of(&old), kid_of(&new)]);
    assert!(service.verifier.verify(&old).is_ok());
    assert!(service.verifier.verify(&new).is_ok());

    // And once the old key retires it leaves the JWKS, and its tokens no longer verify
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(rotated_at.elapsed()) + Duration::from_millis(100)).await;
    service.refresher.refresh().await.unwrap();
    let kids: Vec<_> = service.issuer.jwks().keys.iter().map(|k| k.common.key_id.clone().unwrap()).collect();
    assert_eq!(kids, [kid_of(&new)]);
    assert!(service.verifier.verify(&old).is_err());
    // The store agrees: a restarted process signs with the new key
    assert_eq!(operator.signing_key().await.unwrap().kid(), new_key.key.kid());
}

// ---------------------------------------------------------------------------------------------
// Identity links
// ---------------------------------------------------------------------------------------------

async fn a_subject_or_client_is_linked_to_one_merchant_listed_and_unlinked(store: Arc<Identities>) {
    // Given a subject linked with a scope cap and a client linked without one
    let (a, b) = (MerchantId::new(), MerchantId::new());
    let sub = "3f1c2a9e-8d4b-4c1e-9a7f-0b6e5d4c3b2a";
    let cap = Scopes::parse_list("entries:read reports:read").unwrap();
    // (a few milliseconds apart: links are listed by creation time, kept in milliseconds)
    let apart = || tokio::time::sleep(Duration::from_millis(3));
    store.link(LinkKind::Subject, sub, a, Some(cap)).await.unwrap();
    apart().await;
    store.link(LinkKind::Client, "5p8n3q1f0aq2l6dq9q7a3c1b0e", b, None).await.unwrap();
    apart().await;

    // When the same subject is linked again (to any merchant)
    let again = store.link(LinkKind::Subject, sub, b, None).await;

    // Then it is refused: one merchant per identity, relinking needs an unlink
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    // And the same id as another kind is another identity
    store.link(LinkKind::Client, sub, b, None).await.unwrap();

    // And the links read back as made, oldest first
    let links = store.links().await.unwrap();
    let rows: Vec<_> = links.iter().map(|l| (l.kind, l.external_id.as_str(), l.merchant_id, l.scopes)).collect();
    assert_eq!(
        rows,
        vec![
            (LinkKind::Subject, sub, a, Some(cap)),
            (LinkKind::Client, "5p8n3q1f0aq2l6dq9q7a3c1b0e", b, None),
            (LinkKind::Client, sub, b, None),
        ]
    );
    assert!(links.iter().all(|l| l.created_at_ms > 0));

    // When the subject is unlinked, twice
    assert!(store.unlink(LinkKind::Subject, sub).await.unwrap());
    assert!(!store.unlink(LinkKind::Subject, sub).await.unwrap(), "nothing left to unlink");

    // Then only the client links remain, and the subject can be linked anew
    assert_eq!(store.links().await.unwrap().len(), 2);
    store.link(LinkKind::Subject, sub, b, None).await.unwrap();
}

async fn link_ids_no_issuer_writes_are_refused(store: Arc<Identities>) {
    for id in ["", " padded ", "line\nbreak", &"x".repeat(257)] {
        let result = store.link(LinkKind::Subject, id, MerchantId::new(), None).await;
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{id:?}: {result:?}");
    }
    assert!(store.links().await.unwrap().is_empty(), "nothing was stored");
}

async fn a_new_or_removed_link_reaches_every_process_within_the_refresh_interval(harness: &Harness) {
    // Given a service reloading every 200 ms, which knows no link yet
    let operator = harness.open().await;
    let service = service(harness, Duration::from_secs(600)).await;
    let links = service.refresher.links.clone();
    service.refresher.refresh().await.unwrap();
    assert_eq!(links.table().get(LinkKind::Subject, "maria"), None);
    let reloads = tokio::spawn(service.refresher.clone().run(Duration::from_millis(200)));

    // When the operator (another process) links a subject
    let merchant = MerchantId::new();
    operator.link(LinkKind::Subject, "maria", merchant, Some(Scopes::from(Scope::ReportsRead))).await.unwrap();
    let linked_at = Instant::now();

    // Then the service resolves it within the interval (plus a reload)
    while links.table().get(LinkKind::Subject, "maria").is_none() {
        assert!(linked_at.elapsed() < Duration::from_millis(1_000), "not linked after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let grant = links.table().get(LinkKind::Subject, "maria").unwrap();
    assert_eq!((grant.merchant_id, grant.scopes), (merchant, Some(Scopes::from(Scope::ReportsRead))));

    // And after an unlink, it forgets it just as fast
    assert!(operator.unlink(LinkKind::Subject, "maria").await.unwrap());
    let unlinked_at = Instant::now();
    while links.table().get(LinkKind::Subject, "maria").is_some() {
        assert!(unlinked_at.elapsed() < Duration::from_millis(1_000), "still linked after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // And a process without a reload worker (a Lambda function) reloads when its copy is stale
    reloads.abort();
    let _ = reloads.await;
    operator.link(LinkKind::Client, "machine", merchant, None).await.unwrap();
    service.refresher.refresh_if_older_than(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(links.table().get(LinkKind::Client, "machine"), None, "a fresh copy is kept");
    service.refresher.refresh_if_older_than(Duration::ZERO).await.unwrap();
    assert!(links.table().get(LinkKind::Client, "machine").is_some(), "a stale copy is reloaded");
}
