//! Where the identities the built-in issuer vouches for are kept: OAuth clients, users and the
//! signing key.
//!
//! The trait is rows in, rows out. What a row means (is this the secret? may this user get
//! that scope?) is decided once, above the backends, in [`crate::identities`]; a backend only
//! stores and finds. Backends: SQLite ([`SqliteIdentityStore`]) and Postgres
//! ([`PostgresIdentityStore`]), checked by one contract suite (`tests/store_contract.rs`).

use async_trait::async_trait;
use cashflow_domain::MerchantId;

use crate::key::{KeyError, SigningKey};
use crate::Scopes;

pub mod postgres;
mod sqlite;

pub use postgres::PostgresIdentityStore;
pub use sqlite::{SqliteIdentityStore, MIGRATIONS};

/// Why the identity store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Open(#[from] cashflow_db::DbError),
    /// A query failed.
    #[error("identity database error: {0}")]
    Database(#[source] DatabaseError),
    /// The username (or client) already exists.
    #[error("{0}")]
    Conflict(String),
    /// The input breaks a rule (username format, empty password, ...).
    #[error("{0}")]
    Invalid(String),
    /// A stored row cannot be read back (hand-edited database, newer schema, ...).
    #[error("corrupt identity record: {0}")]
    Corrupt(String),
    /// The signing key could not be generated or loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Randomness, hashing or a blocking task failed.
    #[error("identity crypto failure: {0}")]
    Crypto(String),
}

/// A failed query. Opaque, so that callers do not depend on the database driver.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DatabaseError(sqlx::Error);

/// A driver error as a [`StoreError`], for the backends' `map_err`.
pub(crate) fn db(error: sqlx::Error) -> StoreError {
    StoreError::Database(DatabaseError(error))
}

/// A stored OAuth client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    pub client_id: String,
    /// Lowercase hex SHA-256 of the secret; the secret itself is never stored.
    pub secret_sha256: String,
    /// The only merchant its tokens can act for.
    pub merchant_id: MerchantId,
    /// The most its tokens can carry.
    pub scopes: Scopes,
    /// A label for operators.
    pub name: Option<String>,
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// As created; lookups ignore case.
    pub username: String,
    /// The argon2id PHC string of the password.
    pub password_hash: String,
    pub merchant_id: MerchantId,
    pub scopes: Scopes,
}

/// Failed token requests counted under one throttle key (see [`crate::throttle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureRecord {
    /// Failures since the count was last cleared or forgotten.
    pub failures: u32,
    /// When the last one happened, in milliseconds since the epoch.
    pub last_failure_ms: i64,
}

/// Storage of clients, users and the signing key.
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// Stores a new client.
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;

    /// The client with this id.
    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;

    /// Stores a new user; [`StoreError::Conflict`] when the username is taken in any case.
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError>;

    /// The user with this username, whatever its case.
    async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;

    /// The active signing key, if there is one yet.
    async fn active_key(&self) -> Result<Option<SigningKey>, StoreError>;

    /// Stores `key` as the active key unless there already is one: of several processes
    /// racing on a fresh database exactly one wins, and all read the winner back.
    async fn insert_first_key(&self, key: &SigningKey) -> Result<(), StoreError>;

    /// The failures counted under `key`.
    async fn failures(&self, key: &str) -> Result<Option<FailureRecord>, StoreError>;

    /// Counts one failure under `key` at `now_ms`, atomically: a count whose last failure is
    /// before `forget_before_ms` restarts at one. Forgotten counts of other keys are deleted.
    async fn record_failure(&self, key: &str, now_ms: i64, forget_before_ms: i64) -> Result<(), StoreError>;

    /// Forgets the failures counted under `key`.
    async fn clear_failures(&self, key: &str) -> Result<(), StoreError>;

    /// Whether the store answers, for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;
}
