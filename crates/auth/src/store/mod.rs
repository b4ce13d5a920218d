//! Identities the built-in issuer vouches for: OAuth clients, users and the signing key.
//!
//! A small trait owned by the issuer, so that a Postgres implementation (or none at all, when
//! Cognito issues the tokens) can replace the SQLite one.

use async_trait::async_trait;
use cashflow_domain::MerchantId;
use secrecy::SecretString;

use crate::issuer::{KeyError, SigningKey};
use crate::Scopes;

mod credentials;
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
    Database(#[from] sqlx::Error),
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

/// A freshly created client. The secret is shown once and never stored in clear.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// What an authenticated client may obtain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientGrant {
    pub client_id: String,
    /// The only merchant its tokens can act for.
    pub merchant_id: MerchantId,
    /// The most its tokens can carry.
    pub scopes: Scopes,
}

/// What an authenticated user may obtain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserGrant {
    /// The username as stored (lookups ignore case).
    pub username: String,
    pub merchant_id: MerchantId,
    pub scopes: Scopes,
}

/// Storage of clients, users and the signing key.
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// Creates a client for `merchant_id` that may request at most `scopes`.
    async fn create_client(
        &self,
        merchant_id: MerchantId,
        scopes: Scopes,
        name: Option<&str>,
    ) -> Result<NewClient, StoreError>;

    /// The client's grant if `client_secret` is its secret. An unknown client and a wrong
    /// secret both give `Ok(None)`, in the same time.
    async fn authenticate_client(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Option<ClientGrant>, StoreError>;

    /// Creates a user. Usernames are 3 to 64 characters of `[A-Za-z0-9._@-]`, unique
    /// regardless of case ([`StoreError::Conflict`] otherwise).
    async fn create_user(
        &self,
        username: &str,
        password: &SecretString,
        merchant_id: MerchantId,
        scopes: Scopes,
    ) -> Result<(), StoreError>;

    /// The user's grant if `password` is theirs. Unknown users cost as much as known ones, so
    /// timing does not reveal which usernames exist.
    async fn authenticate_user(&self, username: &str, password: &str) -> Result<Option<UserGrant>, StoreError>;

    /// The active signing key, generated and persisted on first use.
    async fn signing_key(&self) -> Result<SigningKey, StoreError>;

    /// Whether the store answers, for readiness probes.
    async fn ping(&self) -> Result<(), StoreError>;
}
