//! The Postgres [`IdentityStore`](super::IdentityStore), chosen by a `postgres://` URL when the
//! built-in issuer runs next to Postgres stores: the shared [`SqlIdentityStore`] with Postgres's
//! migrations and [`Dialect`].
//!
//! Same behaviour as the SQLite store, checked by the same test suite
//! (`tests/store_contract.rs`). Its tables live in the `identity` schema (see
//! [`cashflow_db::open_postgres`]), with their own `_sqlx_migrations`. Usernames are unique
//! regardless of case through a unique index on `lower(username)`, and concurrent first starts
//! agree on one signing key through the partial unique index on the active key.

use cashflow_db::MigrationSource;
use cashflow_domain::MerchantId;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgQueryResult;
use sqlx::Postgres;
use uuid::Uuid;

use super::sql::{migrations, Dialect, SqlIdentityStore};
use super::StoreError;

/// The identity schema on Postgres, embedded in the binary.
pub const MIGRATIONS: &[MigrationSource] = &migrations([
    include_str!("../../migrations/postgres/0001_identity.sql"),
    include_str!("../../migrations/postgres/0002_login_failures.sql"),
    include_str!("../../migrations/postgres/0003_revocation.sql"),
    include_str!("../../migrations/postgres/0004_identity_links.sql"),
]);

/// The schema every connection of the store uses.
pub const SCHEMA: &str = "identity";

/// Connections kept by [`PostgresIdentityStore::open`]: logins are rare, and argon2 (not the
/// database) bounds their throughput.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;

/// Identities in the `identity` schema of a Postgres database.
pub type PostgresIdentityStore = SqlIdentityStore<Postgres>;

impl PostgresIdentityStore {
    /// Opens the identity store on `url` (`postgres://…`) with [`DEFAULT_MAX_CONNECTIONS`],
    /// creating and migrating the `identity` schema.
    #[tracing::instrument(skip_all)]
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Like [`open`](Self::open), with a pool of at most `max_connections`.
    pub async fn open_with(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let pool = cashflow_db::open_postgres(url, max_connections, SCHEMA).await?;
        cashflow_db::migrate_postgres(&pool, MIGRATIONS).await?;
        Ok(Self::new(pool))
    }
}

/// Merchant ids are `uuid` columns; `created_at` is `timestamptz`.
impl Dialect for Postgres {
    /// Served by the unique index on `lower(username)` (usernames are ASCII, so `lower` is exact).
    const USERNAME_IS: &'static str = "lower(username) = lower($1)";

    type Merchant = Uuid;
    type Timestamp = DateTime<Utc>;

    fn merchant_column(id: &MerchantId) -> Uuid {
        *id.as_uuid()
    }

    fn merchant_id(column: Uuid) -> Result<MerchantId, StoreError> {
        Ok(MerchantId::from_uuid(column))
    }

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}
