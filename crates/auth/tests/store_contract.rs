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

use argon2::Params;
use secrecy::{ExposeSecret, SecretString};

use cashflow_auth::{
    ClientGrant, Identities, IdentityStore, PostgresIdentityStore, Scope, Scopes, SqliteIdentityStore, StoreError,
    UserGrant,
};
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
    ],
    harness: [
        only_hashes_of_secrets_and_passwords_are_stored,
        the_signing_key_survives_reopening_and_racing_processes,
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
