//! The [`IdentityStore`] on a SQL database, written once for SQLite and Postgres.
//!
//! The two backends keep the same rows and answer the same questions, so the SQL is one text
//! and [`SqlIdentityStore`] is generic over the sqlx [`Database`]. The statements are valid in
//! both dialects: parameters are numbered (`$1`; sqlx's SQLite driver binds `$NNN` by its
//! number), the boolean `active` is written `TRUE`/`FALSE` (SQLite reads them as 1 and 0), and
//! a first key is inserted with `ON CONFLICT DO NOTHING` (SQLite 3.24+).
//!
//! What really differs is behind [`Dialect`], implemented in [`super::sqlite`] and
//! [`super::postgres`] beside each backend's migrations and `open`: the column type of a
//! merchant id (hyphenated `TEXT` on SQLite, `uuid` on Postgres); the `created_at` of a new
//! client, user or key (RFC 3339 `TEXT` on SQLite, `timestamptz` on Postgres; both from this
//! process's clock); how a driver counts the rows a statement changed; and the one piece of SQL
//! text that differs, how a username is matched whatever its case ([`Dialect::USERNAME_IS`]).
//! SQL that both accept exists (`lower(username) = lower($1)`), but SQLite would answer it by
//! reading every user (its case-blind index is the `COLLATE NOCASE` primary key, which serves
//! `username = $1` only): measured with 10,000 users, 2 ms a lookup against 5 µs by the key.
//!
//! The `where` clause of the [`IdentityStore`] implementation lists what sqlx must do with the
//! database for the SQL below: run it on the pool and in a transaction, bind its parameter types
//! and read its column types. Rust does not carry such bounds along with a trait, so they stand
//! there once rather than on [`Dialect`].

use async_trait::async_trait;
use cashflow_db::MigrationSource;
use cashflow_domain::MerchantId;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};

use super::{db, ClientRecord, FailureRecord, IdentityStore, KeyRecord, StoreError, UserRecord};
use crate::credentials::parse_scopes;
use crate::key::SigningKey;
use crate::links::{IdentityLink, LinkKind};

/// What differs between the databases the identity store runs on: implemented for
/// [`sqlx::Sqlite`] and [`sqlx::Postgres`].
pub trait Dialect: Database {
    /// A merchant id as its columns hold it.
    type Merchant: for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self> + Type<Self> + Send + Unpin;

    /// The `created_at` of a new row, as its column holds it.
    type Timestamp: for<'q> Encode<'q, Self> + Type<Self> + Send;

    /// `id` as its column holds it.
    fn merchant_column(id: &MerchantId) -> Self::Merchant;

    /// The merchant id read back from its column; [`StoreError::Corrupt`] if it is not one.
    fn merchant_id(column: Self::Merchant) -> Result<MerchantId, StoreError>;

    /// The current time, for `created_at`.
    fn now() -> Self::Timestamp;

    /// How many rows the statement behind `done` inserted, updated or deleted.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// The condition that selects the user named `$1`, whatever the case of either name: the
    /// one that the index on usernames serves.
    const USERNAME_IS: &'static str;
}

/// Identities in a SQL database: [`super::SqliteIdentityStore`] or
/// [`super::PostgresIdentityStore`], opened by their `open`.
pub struct SqlIdentityStore<DB: Dialect> {
    pool: Pool<DB>,
}

impl<DB: Dialect> SqlIdentityStore<DB> {
    /// A store on `pool`, whose database is migrated already.
    pub(super) fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }
}

impl<DB: Dialect> Clone for SqlIdentityStore<DB> {
    fn clone(&self) -> Self {
        Self { pool: self.pool.clone() }
    }
}

impl<DB: Dialect> std::fmt::Debug for SqlIdentityStore<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlIdentityStore").field("database", &DB::NAME).finish_non_exhaustive()
    }
}

/// The identity schema's migrations, from each backend's own SQL files (`migrations/<backend>/`,
/// in this order): the versions and descriptions recorded in `_sqlx_migrations` are the same on
/// both.
pub(super) const fn migrations(sql: [&'static str; 4]) -> [MigrationSource; 4] {
    [
        MigrationSource { version: 1, description: "identity", sql: sql[0] },
        MigrationSource { version: 2, description: "login failures", sql: sql[1] },
        MigrationSource { version: 3, description: "revocation", sql: sql[2] },
        MigrationSource { version: 4, description: "identity links", sql: sql[3] },
    ]
}

/// A row of `clients` as `client` and `clients` select it.
type ClientRow<M> = (String, String, M, String, Option<String>, Option<i64>);

/// A row of `users` as `user` and `users` select it.
type UserRow<M> = (String, String, M, String, Option<i64>);

/// A row of `identity_links` as `links` selects it.
type LinkRow<M> = (String, String, M, Option<String>, i64);

/// A row of `signing_keys` as `signing_keys` selects it.
type KeyRow = (Vec<u8>, i64, Option<i64>);

#[async_trait]
impl<DB> IdentityStore for SqlIdentityStore<DB>
where
    DB: Dialect,
    // Run statements on the pool and in a transaction.
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    // Bind the parameters' types.
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    // Read the columns' types, by position.
    usize: ColumnIndex<DB::Row>,
    String: for<'r> Decode<'r, DB> + Type<DB>,
    i64: for<'r> Decode<'r, DB> + Type<DB>,
    Vec<u8>: for<'r> Decode<'r, DB> + Type<DB>,
{
    #[tracing::instrument(skip_all)]
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clients (client_id, secret_sha256, merchant_id, scopes, name, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(client.client_id.as_str())
        .bind(client.secret_sha256.as_str())
        .bind(DB::merchant_column(&client.merchant_id))
        .bind(client.scopes.to_string())
        .bind(client.name.clone())
        .bind(DB::now())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        let row: Option<ClientRow<DB::Merchant>> = sqlx::query_as(
            "SELECT client_id, secret_sha256, merchant_id, scopes, name, revoked_at FROM clients WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(client::<DB>).transpose()
    }

    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let rows: Vec<ClientRow<DB::Merchant>> = sqlx::query_as(
            "SELECT client_id, secret_sha256, merchant_id, scopes, name, revoked_at FROM clients
                 ORDER BY created_at, client_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter().map(client::<DB>).collect()
    }

    async fn revoke_client(&self, client_id: &str, at_ms: i64) -> Result<bool, StoreError> {
        changed(
            &self.pool,
            sqlx::query("UPDATE clients SET revoked_at = COALESCE(revoked_at, $2) WHERE client_id = $1")
                .bind(client_id)
                .bind(at_ms),
        )
        .await
    }

    async fn set_client_secret(&self, client_id: &str, secret_sha256: &str) -> Result<bool, StoreError> {
        changed(
            &self.pool,
            sqlx::query("UPDATE clients SET secret_sha256 = $2 WHERE client_id = $1 AND revoked_at IS NULL")
                .bind(client_id)
                .bind(secret_sha256),
        )
        .await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows: Vec<UserRow<DB::Merchant>> = sqlx::query_as(
            "SELECT username, password_hash, merchant_id, scopes, disabled_at FROM users ORDER BY created_at, username",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter().map(user::<DB>).collect()
    }

    async fn set_user_disabled(&self, username: &str, at_ms: Option<i64>) -> Result<bool, StoreError> {
        changed(
            &self.pool,
            sqlx::query(&format!("UPDATE users SET disabled_at = $2 WHERE {}", DB::USERNAME_IS))
                .bind(username)
                .bind(at_ms),
        )
        .await
    }

    async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        changed(
            &self.pool,
            sqlx::query(&format!("UPDATE users SET password_hash = $2 WHERE {}", DB::USERNAME_IS))
                .bind(username)
                .bind(password_hash),
        )
        .await
    }

    async fn signing_keys(&self, now_ms: i64) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT pkcs8, activates_at, retires_at FROM signing_keys
             WHERE retires_at IS NULL OR retires_at > $1 ORDER BY activates_at, kid",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(der, activates_at_ms, retires_at_ms)| {
                Ok(KeyRecord { key: signing_key(&der)?, activates_at_ms, retires_at_ms })
            })
            .collect()
    }

    async fn rotate_key(
        &self,
        new: &SigningKey,
        activates_at_ms: i64,
        old_retires_at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("UPDATE signing_keys SET active = FALSE, retires_at = $1 WHERE active = TRUE")
            .bind(old_retires_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, pkcs8, active, created_at, activates_at) VALUES ($1, $2, TRUE, $3, $4)",
        )
        .bind(new.kid())
        .bind(new.pkcs8_der())
        .bind(DB::now())
        .bind(activates_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    #[tracing::instrument(skip_all)]
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO users (username, password_hash, merchant_id, scopes, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.username.as_str())
        .bind(user.password_hash.as_str())
        .bind(DB::merchant_column(&user.merchant_id))
        .bind(user.scopes.to_string())
        .bind(DB::now())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            // The username ignores case in either backend's unique key: `Alice` and `alice`
            // are one user.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("user `{}` already exists", user.username)))
            }
            Err(e) => Err(db(e)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let row: Option<UserRow<DB::Merchant>> = sqlx::query_as(&format!(
            "SELECT username, password_hash, merchant_id, scopes, disabled_at FROM users WHERE {}",
            DB::USERNAME_IS
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(user::<DB>).transpose()
    }

    async fn active_key(&self) -> Result<Option<SigningKey>, StoreError> {
        let der: Option<Vec<u8>> = sqlx::query_scalar("SELECT pkcs8 FROM signing_keys WHERE active = TRUE")
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        der.as_deref().map(signing_key).transpose()
    }

    async fn insert_first_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        // The unique index on the active key lets exactly one insert win (on Postgres the
        // others wait for its commit, then insert nothing).
        sqlx::query(
            "INSERT INTO signing_keys (kid, pkcs8, active, created_at) VALUES ($1, $2, TRUE, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(key.kid())
        .bind(key.pkcs8_der())
        .bind(DB::now())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn failures(&self, key: &str) -> Result<Option<FailureRecord>, StoreError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT failures, last_failure FROM login_failures WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.map(|(failures, last_failure_ms)| FailureRecord {
            failures: u32::try_from(failures).unwrap_or(u32::MAX),
            last_failure_ms,
        }))
    }

    async fn record_failure(&self, key: &str, now_ms: i64, forget_before_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO login_failures (key, failures, last_failure) VALUES ($1, 1, $2)
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN login_failures.last_failure < $3 THEN 1 ELSE login_failures.failures + 1 END,
                 last_failure = $2",
        )
        .bind(key)
        .bind(now_ms)
        .bind(forget_before_ms)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM login_failures WHERE last_failure < $1")
            .bind(forget_before_ms)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1").bind(key).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    async fn insert_link(&self, link: &IdentityLink) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO identity_links (kind, external_id, merchant_id, scopes, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(link.kind.as_str())
        .bind(link.external_id.as_str())
        .bind(DB::merchant_column(&link.merchant_id))
        .bind(link.scopes.map(|s| s.to_string()))
        .bind(link.created_at_ms)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("{} `{}` is already linked", link.kind, link.external_id)))
            }
            Err(e) => Err(db(e)),
        }
    }

    async fn delete_link(&self, kind: LinkKind, external_id: &str) -> Result<bool, StoreError> {
        changed(
            &self.pool,
            sqlx::query("DELETE FROM identity_links WHERE kind = $1 AND external_id = $2")
                .bind(kind.as_str())
                .bind(external_id),
        )
        .await
    }

    async fn links(&self) -> Result<Vec<IdentityLink>, StoreError> {
        let rows: Vec<LinkRow<DB::Merchant>> = sqlx::query_as(
            "SELECT kind, external_id, merchant_id, scopes, created_at FROM identity_links
             ORDER BY created_at, kind, external_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(kind, external_id, merchant, scopes, created_at_ms)| {
                Ok(IdentityLink {
                    kind: link_kind(&kind)?,
                    external_id,
                    merchant_id: DB::merchant_id(merchant)?,
                    scopes: scopes.as_deref().map(parse_scopes).transpose()?,
                    created_at_ms,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(db)?;
        Ok(())
    }
}

/// Runs `statement`, which changes one row at most: whether it did.
async fn changed<'q, DB>(pool: &Pool<DB>, statement: Query<'q, DB, DB::Arguments<'q>>) -> Result<bool, StoreError>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    let done = statement.execute(pool).await.map_err(db)?;
    Ok(DB::rows_affected(&done) > 0)
}

fn client<DB: Dialect>(
    (client_id, secret_sha256, merchant, scopes, name, revoked_at_ms): ClientRow<DB::Merchant>,
) -> Result<ClientRecord, StoreError> {
    Ok(ClientRecord {
        client_id,
        secret_sha256,
        merchant_id: DB::merchant_id(merchant)?,
        scopes: parse_scopes(&scopes)?,
        name,
        revoked_at_ms,
    })
}

fn user<DB: Dialect>(
    (username, password_hash, merchant, scopes, disabled_at_ms): UserRow<DB::Merchant>,
) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        username,
        password_hash,
        merchant_id: DB::merchant_id(merchant)?,
        scopes: parse_scopes(&scopes)?,
        disabled_at_ms,
    })
}

fn signing_key(der: &[u8]) -> Result<SigningKey, StoreError> {
    SigningKey::from_pkcs8(der).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn link_kind(name: &str) -> Result<LinkKind, StoreError> {
    LinkKind::parse(name).ok_or_else(|| StoreError::Corrupt(format!("unknown link kind `{name}`")))
}
