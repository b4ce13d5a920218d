//! Where the identities the built-in issuer vouches for are kept: OAuth clients, users and the
//! signing key.
//!
//! Also the identity links of external issuers' subjects and clients ([`crate::links`]).
//!
//! The trait is rows in, rows out. What a row means (is this the secret? may this user get
//! that scope?) is decided once, above the backends, in [`crate::identities`]; a backend only
//! stores and finds. Backends: SQLite ([`SqliteIdentityStore`]) and Postgres
//! ([`PostgresIdentityStore`]), one [`SqlIdentityStore`] whose SQL serves both ([`sql`]),
//! checked by one contract suite (`tests/store_contract.rs`).

use async_trait::async_trait;
use cashflow_domain::MerchantId;

use crate::key::{KeyError, SigningKey};
use crate::links::{IdentityLink, LinkKind};
use crate::Scopes;

pub mod postgres;
pub mod sql;
mod sqlite;

pub use postgres::PostgresIdentityStore;
pub use sql::{Dialect, SqlIdentityStore};
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
    /// When it was revoked (milliseconds since the epoch): it gets no token any more.
    pub revoked_at_ms: Option<i64>,
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
    /// When it was disabled (milliseconds since the epoch), if it is.
    pub disabled_at_ms: Option<i64>,
}

/// A published signing key.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub key: SigningKey,
    /// From when it signs new tokens (milliseconds since the epoch).
    pub activates_at_ms: i64,
    /// When it leaves the JWKS, if it has been rotated out.
    pub retires_at_ms: Option<i64>,
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

    /// Every client, oldest first.
    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError>;

    /// Marks the client revoked at `at_ms` (kept if it already was); `false` if unknown.
    async fn revoke_client(&self, client_id: &str, at_ms: i64) -> Result<bool, StoreError>;

    /// Replaces the secret of a client that is not revoked; `false` if none is.
    async fn set_client_secret(&self, client_id: &str, secret_sha256: &str) -> Result<bool, StoreError>;

    /// Every user, oldest first.
    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;

    /// Disables the user at `at_ms`, or enables it with `None`; `false` if unknown.
    async fn set_user_disabled(&self, username: &str, at_ms: Option<i64>) -> Result<bool, StoreError>;

    /// Replaces the user's password hash; `false` if unknown.
    async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError>;

    /// The keys still published at `now_ms` (not retired yet).
    async fn signing_keys(&self, now_ms: i64) -> Result<Vec<KeyRecord>, StoreError>;

    /// In one transaction: the active key retires at `old_retires_at_ms`, and `new` becomes
    /// the active key, signing from `activates_at_ms`.
    async fn rotate_key(
        &self,
        new: &SigningKey,
        activates_at_ms: i64,
        old_retires_at_ms: i64,
    ) -> Result<(), StoreError>;

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

    /// Stores a new identity link; [`StoreError::Conflict`] when its subject or client is
    /// already linked.
    async fn insert_link(&self, link: &IdentityLink) -> Result<(), StoreError>;

    /// Deletes the link of `kind` for `external_id`; `false` if there is none.
    async fn delete_link(&self, kind: LinkKind, external_id: &str) -> Result<bool, StoreError>;

    /// Every identity link, oldest first.
    async fn links(&self) -> Result<Vec<IdentityLink>, StoreError>;

    /// Whether the store answers, for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;
}
