//! SQLite: the embedded default, one file per store.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::{migrator, redact, Backend, DbError, MigrationSource};

/// Opens a SQLite database tuned for a durable single-writer workload.
///
/// - WAL: readers never block the writer, and other processes (`cashflow merchant create`
///   while `serve` runs) can write too;
/// - `synchronous = FULL`: a commit is on disk before we acknowledge it, so an acknowledged
///   entry survives a crash or a power cut;
/// - a busy timeout, so a concurrent writer waits instead of failing.
pub async fn open_sqlite(url: &str, max_connections: u32) -> Result<SqlitePool, DbError> {
    if Backend::of_url(url).ok() != Some(Backend::Sqlite) {
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
    let mut retries = 0;
    loop {
        let opened = SqlitePoolOptions::new()
            .max_connections(max_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await;
        match opened {
            Ok(pool) => return Ok(pool),
            // Switching a brand-new file to WAL takes a moment of exclusive access, and SQLite
            // reports a process opening it at the same time as busy at once, without waiting
            // for the busy timeout: try again shortly.
            Err(e) if retries < RETRIES && is_busy(&e) => {
                retries += 1;
                tracing::debug!(error = %e, retries, "database busy while opening, retrying");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(retries))).await;
            }
            Err(e) => return Err(DbError::Connect(e)),
        }
    }
}

/// SQLITE_BUSY, plain or extended.
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 5),
        _ => false,
    }
}

/// Applies `migrations` in version order, recording them in `_sqlx_migrations` (compatible
/// with `sqlx migrate`).
///
/// SQLite has no advisory locks, so sqlx cannot keep two processes from migrating a fresh file
/// at once (`serve` and an operator command starting together): the loser's migration fails
/// (`table … already exists`) and its transaction rolls back. Running again then finds the
/// winner's migrations applied, so a failure is retried a few times before it is reported.
pub async fn migrate_sqlite(pool: &SqlitePool, migrations: &[MigrationSource]) -> Result<(), DbError> {
    let migrator = migrator(migrations);
    let mut retries = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if retries < RETRIES => {
                retries += 1;
                tracing::debug!(error = %e, retries, "migration failed, retrying (another process may be migrating)");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(retries))).await;
            }
            Err(e) => return Err(DbError::Migrate(e)),
        }
    }
}

/// How many times opening or migrating is tried again when another process is doing the same.
const RETRIES: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: MigrationSource =
        MigrationSource { version: 1, description: "first", sql: "CREATE TABLE a (x INTEGER);" };
    const SECOND: MigrationSource =
        MigrationSource { version: 2, description: "second", sql: "CREATE TABLE b (x INTEGER);" };

    #[tokio::test]
    async fn a_release_refuses_a_database_that_a_newer_release_migrated_further() {
        // Given a database migrated by a release that knows two migrations
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("store.db").display());
        let pool = open_sqlite(&url, 1).await.unwrap();
        migrate_sqlite(&pool, &[FIRST, SECOND]).await.unwrap();

        // When a release that knows only the first starts on it
        let older = migrate_sqlite(&pool, &[FIRST]).await.unwrap_err();

        // Then it refuses, naming the migration it does not know (docs/deploy-aws.md, "A bad
        // release"), rather than run against a schema it was not written for
        assert!(matches!(older, DbError::Migrate(sqlx::migrate::MigrateError::VersionMissing(2))), "{older:?}");
        let reason = std::error::Error::source(&older).map(ToString::to_string).unwrap_or_default();
        assert_eq!(reason, "migration 2 was previously applied but is missing in the resolved migrations");
        // And the newer release still starts on it, with nothing left to apply
        migrate_sqlite(&pool, &[FIRST, SECOND]).await.unwrap();
    }
}
