//! The SQLite [`IdentityStore`](super::IdentityStore) of the single-machine deployment: the
//! shared [`SqlIdentityStore`] with SQLite's migrations and [`Dialect`].

use cashflow_db::MigrationSource;
use cashflow_domain::MerchantId;
use sqlx::sqlite::SqliteQueryResult;
use sqlx::Sqlite;

use super::sql::{migrations, Dialect, SqlIdentityStore};
use super::StoreError;
use crate::credentials::parse_merchant;

/// The identity schema, embedded in the binary.
pub const MIGRATIONS: &[MigrationSource] = &migrations([
    include_str!("../../migrations/sqlite/0001_identity.sql"),
    include_str!("../../migrations/sqlite/0002_login_failures.sql"),
    include_str!("../../migrations/sqlite/0003_revocation.sql"),
    include_str!("../../migrations/sqlite/0004_identity_links.sql"),
]);

/// Connections kept open: logins are rare, argon2 (not SQLite) bounds their throughput.
const MAX_CONNECTIONS: u32 = 4;

/// Identities in a SQLite database of their own.
pub type SqliteIdentityStore = SqlIdentityStore<Sqlite>;

impl SqliteIdentityStore {
    /// Opens (creating if needed) and migrates the database at `url` (`sqlite://path`).
    #[tracing::instrument(skip_all)]
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = cashflow_db::open_sqlite(url, MAX_CONNECTIONS).await?;
        cashflow_db::migrate_sqlite(&pool, MIGRATIONS).await?;
        Ok(Self::new(pool))
    }
}

/// Merchant ids are hyphenated UUIDs in `TEXT` columns (the tables are `STRICT`); `created_at`
/// is RFC 3339 `TEXT` in UTC with milliseconds, which sorts as it reads.
impl Dialect for Sqlite {
    /// The primary key is `COLLATE NOCASE`, so `=` ignores case and uses it.
    const USERNAME_IS: &'static str = "username = $1";

    type Merchant = String;
    type Timestamp = String;

    fn merchant_column(id: &MerchantId) -> String {
        id.to_string()
    }

    fn merchant_id(column: String) -> Result<MerchantId, StoreError> {
        parse_merchant(&column)
    }

    fn now() -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}
