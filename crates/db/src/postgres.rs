//! Postgres: the production backend (RDS). One schema per store.
//!
//! Each store passes its own schema name; every connection of its pool starts with
//! `search_path` set to that schema (a startup option, so it holds for every statement,
//! migrations included), which means:
//! - the stores' unqualified table names never collide, so ledger, consolidation and identity
//!   can share one database or live in separate ones, decided by URL only;
//! - each schema gets its own `_sqlx_migrations`, so the stores migrate independently;
//! - the two services still never read each other's tables: a store only sees its schema.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::{migrator, redact, Backend, DbError, MigrationSource};

/// Opens a pool on `url` whose connections all use `schema`, creating the schema if missing.
///
/// The schema is created only when it does not exist yet, so a deployment whose role may not
/// create schemas works once a DBA created it.
pub async fn open_postgres(url: &str, max_connections: u32, schema: &str) -> Result<PgPool, DbError> {
    let options = connect_options(url)?;
    if !valid_schema(schema) {
        return Err(DbError::InvalidSchema(schema.chars().take(64).collect()));
    }
    let mut options = options.options([("search_path", schema)]);
    if options.get_application_name().is_none() {
        // Shows which store a connection belongs to in `pg_stat_activity`.
        options = options.application_name(&format!("cashflow-{schema}"));
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(DbError::Connect)?;
    create_schema(&pool, schema).await?;
    Ok(pool)
}

/// Applies `migrations` in version order to the pool's schema, recording them in that
/// schema's `_sqlx_migrations` (compatible with `sqlx migrate`). Concurrent migrators wait for
/// each other on an advisory lock.
pub async fn migrate_postgres(pool: &PgPool, migrations: &[MigrationSource]) -> Result<(), DbError> {
    migrator(migrations).run(pool).await.map_err(DbError::Migrate)
}

fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    if Backend::of_url(url)? != Backend::Postgres {
        return Err(DbError::UnsupportedUrl(redact(url)));
    }
    PgConnectOptions::from_str(url).map_err(DbError::Connect)
}

/// Schema names are spliced into SQL (identifiers cannot be bound), so only plain lowercase
/// identifiers are accepted.
fn valid_schema(schema: &str) -> bool {
    let mut bytes = schema.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'_'))
        && schema.len() <= 63
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
}

async fn create_schema(pool: &PgPool, schema: &str) -> Result<(), DbError> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
        .bind(schema)
        .fetch_one(pool)
        .await
        .map_err(DbError::Connect)?;
    if exists {
        return Ok(());
    }
    match pool.execute(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"").as_str()).await {
        Ok(_) => Ok(()),
        // Two processes creating the schema at once: `IF NOT EXISTS` is not atomic, and the
        // loser sees a duplicate instead. Either way the schema now exists.
        Err(sqlx::Error::Database(e)) if matches!(e.code().as_deref(), Some("42P06" | "23505")) => Ok(()),
        Err(e) => Err(DbError::Connect(e)),
    }
}

/// Prefix of every database made by [`fresh_postgres_database`]; [`drop_postgres_database`]
/// refuses to drop anything else.
const TEST_DATABASE_PREFIX: &str = "cf_test_";

/// Test support: creates an empty, uniquely named database (`cf_test_<uuid>`) through
/// `admin_url` (a role that may `CREATE DATABASE`) and returns its URL, so that every test
/// starts from nothing.
pub async fn fresh_postgres_database(admin_url: &str) -> Result<String, DbError> {
    let mut admin = connect_options(admin_url)?.connect().await.map_err(DbError::Connect)?;
    let name = format!("{TEST_DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let created = admin.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await;
    let _ = admin.close().await;
    created.map_err(DbError::Connect)?;
    Ok(with_database(admin_url, &name))
}

/// Test support: drops a database made by [`fresh_postgres_database`], disconnecting anyone
/// still connected (Postgres 13 or later).
pub async fn drop_postgres_database(admin_url: &str, database_url: &str) -> Result<(), DbError> {
    let name = connect_options(database_url)?.get_database().unwrap_or_default().to_owned();
    if !name.starts_with(TEST_DATABASE_PREFIX) || !valid_schema(&name) {
        return Err(DbError::UnsupportedUrl(format!("{} (not a test database)", redact(database_url))));
    }
    let mut admin = connect_options(admin_url)?.connect().await.map_err(DbError::Connect)?;
    let dropped = admin.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await;
    let _ = admin.close().await;
    dropped.map(|_| ()).map_err(DbError::Connect)
}

/// Test support: a fresh database, dropped (best effort) when this value is dropped, even when
/// the test panicked.
#[derive(Debug)]
pub struct TestDatabase {
    /// Where to connect to drop the database (it cannot drop itself).
    admin_url: String,
    /// The fresh database.
    url: String,
}

impl TestDatabase {
    /// A new empty database, created through `admin_url`.
    pub async fn create(admin_url: &str) -> Result<Self, DbError> {
        let url = fresh_postgres_database(admin_url).await?;
        Ok(Self { admin_url: admin_url.to_owned(), url })
    }

    /// The fresh database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin_url, url) = (self.admin_url.clone(), self.url.clone());
        // `Drop` cannot await, and may run inside (or outside) a runtime: a thread with its
        // own runtime works in both cases.
        let dropped = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(drop_postgres_database(&admin_url, &url)).map_err(|e| e.to_string())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", redact(&self.url)),
            Err(_) => eprintln!("could not drop test database {}", redact(&self.url)),
        }
    }
}

/// `url` with its database (the path) replaced by `database`, query string kept.
fn with_database(url: &str, database: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let path = url[authority..].find(['/', '?']).map_or(url.len(), |i| authority + i);
    let query = url[path..].find('?').map_or(url.len(), |i| path + i);
    format!("{}/{}{}", &url[..path], database, &url[query..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_database_url_keeps_everything_but_the_database() {
        assert_eq!(with_database("postgres://u:p@h:5432/postgres", "x"), "postgres://u:p@h:5432/x");
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(with_database("postgres://u@h/db?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgresql://h?sslmode=disable", "x"), "postgresql://h/x?sslmode=disable");
    }

    #[test]
    fn only_plain_identifiers_are_schemas() {
        assert!(valid_schema("ledger"));
        assert!(valid_schema("_x1"));
        assert!(!valid_schema(""));
        assert!(!valid_schema("1x"));
        assert!(!valid_schema("Ledger"));
        assert!(!valid_schema("a\"; DROP TABLE x; --"));
        assert!(!valid_schema(&"a".repeat(64)));
    }
}
