//! Shared plumbing for cashflow's SQL stores.
//!
//! Every store (ledger, consolidation, queue, identity) owns its schema and its queries; what
//! they share is how a database is opened and migrated, so that durability settings are decided
//! once. Stores are chosen by URL: `sqlite://path` now, `postgres://…` by a second
//! implementation of each store trait.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL `{0}` (expected sqlite://PATH)")]
    UnsupportedUrl(String),
    #[error("could not open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("could not migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// One embedded migration: a version and its SQL, compiled into the binary with
/// `include_str!` so that a single file deploys everything.
pub struct MigrationSource {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// Opens a SQLite database tuned for a durable single-writer workload.
///
/// - WAL: readers never block the writer, and other processes (`cashflow merchant create`
///   while `serve` runs) can write too;
/// - `synchronous = FULL`: a commit is on disk before we acknowledge it, so an acknowledged
///   entry survives a crash or a power cut;
/// - a busy timeout, so a concurrent writer waits instead of failing.
pub async fn open_sqlite(url: &str, max_connections: u32) -> Result<SqlitePool, DbError> {
    if !url.starts_with("sqlite:") {
        return Err(DbError::UnsupportedUrl(redact(url)));
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(DbError::Connect)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        .pragma("temp_store", "memory")
        .pragma("cache_size", "-16000");
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

/// Applies `migrations` in version order, recording them in `_sqlx_migrations` (compatible
/// with `sqlx migrate`).
pub async fn migrate_sqlite(pool: &SqlitePool, migrations: &[MigrationSource]) -> Result<(), DbError> {
    let migrations: Vec<Migration> = migrations
        .iter()
        .map(|m| {
            Migration::new(m.version, Cow::Borrowed(m.description), MigrationType::Simple, Cow::Borrowed(m.sql), false)
        })
        .collect();
    let migrator = Migrator { migrations: Cow::Owned(migrations), ignore_missing: false, locking: true, no_tx: false };
    migrator.run(pool).await.map_err(DbError::Migrate)
}

/// A URL with any password removed, safe to log or show.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_a_url() {
        assert_eq!(redact("postgres://app:s3cret@db:5432/cashflow"), "postgres://app:***@db:5432/cashflow");
        assert_eq!(redact("sqlite://data/ledger.db"), "sqlite://data/ledger.db");
    }
}
