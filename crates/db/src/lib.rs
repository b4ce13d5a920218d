//! Shared plumbing for cashflow's SQL stores.
//!
//! Every store (ledger, consolidation, queue, identity) owns its schema and its queries; what
//! they share is how a database is opened and migrated, so that durability settings are decided
//! once. Stores are chosen by URL ([`Backend::of_url`]): `sqlite://path` for the embedded
//! default, `postgres://…` (or `postgresql://…`) for a second implementation of each store
//! trait.
//!
//! # Layout
//! - [`open_sqlite`] / [`migrate_sqlite`]: one file per store, WAL, `synchronous = FULL`.
//! - [`open_sqlite_sync`] / [`SqliteThread`]: the same settings on a synchronous connection owned
//!   by one thread, for the embedded write paths (one thread hop per batch instead of per
//!   statement).
//! - [`open_postgres`] / [`migrate_postgres`]: one *schema* per store (`ledger`,
//!   `consolidation`, `identity`), so the stores may share one database or use several, each
//!   with its own `_sqlx_migrations`, and never see each other's tables.
//! - [`fresh_postgres_database`] / [`drop_postgres_database`] / [`TestDatabase`]: test support,
//!   an empty database per test.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};

mod postgres;
mod sqlite;
mod sqlite_thread;

pub use postgres::{drop_postgres_database, fresh_postgres_database, migrate_postgres, open_postgres, TestDatabase};
/// The synchronous SQLite driver, for the stores that run on a [`SqliteThread`].
pub use rusqlite;
pub use sqlite::{migrate_sqlite, open_sqlite};
pub use sqlite_thread::{is_unique_violation_on, open_sqlite_sync, SqliteThread, ThreadStopped};

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL `{0}` (expected sqlite://PATH or postgres://…)")]
    UnsupportedUrl(String),
    #[error("`{0}` is not a valid schema name (expected lowercase letters, digits and `_`)")]
    InvalidSchema(String),
    #[error("could not open the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("could not open the database: {0}")]
    Sqlite(#[source] rusqlite::Error),
    #[error("could not start the database thread: {0}")]
    Thread(String),
    #[error("could not migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// The kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:…`: the embedded default, one file per store.
    Sqlite,
    /// `postgres:…` or `postgresql:…`: one schema per store.
    Postgres,
}

impl Backend {
    /// The backend of a database URL, by its scheme.
    pub fn of_url(url: &str) -> Result<Self, DbError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(DbError::UnsupportedUrl(redact(url)))
        }
    }
}

/// One embedded migration: a version and its SQL, compiled into the binary with
/// `include_str!` so that a single file deploys everything.
pub struct MigrationSource {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

/// A sqlx migrator over embedded migrations, recording them in `_sqlx_migrations` (compatible
/// with `sqlx migrate`).
fn migrator(migrations: &[MigrationSource]) -> Migrator {
    let migrations: Vec<Migration> = migrations
        .iter()
        .map(|m| {
            Migration::new(m.version, Cow::Borrowed(m.description), MigrationType::Simple, Cow::Borrowed(m.sql), false)
        })
        .collect();
    Migrator { migrations: Cow::Owned(migrations), ignore_missing: false, locking: true, no_tx: false }
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

    #[test]
    fn the_url_scheme_chooses_the_backend() {
        assert_eq!(Backend::of_url("sqlite://data/ledger.db").ok(), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("sqlite::memory:").ok(), Some(Backend::Sqlite));
        assert_eq!(Backend::of_url("postgres://app@db/cashflow").ok(), Some(Backend::Postgres));
        assert_eq!(Backend::of_url("postgresql://app@db/cashflow").ok(), Some(Backend::Postgres));
        let err = Backend::of_url("mysql://app:s3cret@db/cashflow").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("unsupported database URL `mysql://app:***@db/cashflow` (expected sqlite://PATH or postgres://…)")
        );
    }
}
