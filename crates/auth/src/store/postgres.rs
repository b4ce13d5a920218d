//! The Postgres [`IdentityStore`], chosen by a `postgres://` URL when the built-in issuer runs
//! next to Postgres stores.
//!
//! Same behaviour as the SQLite store, checked by the same test suite
//! (`tests/store_contract.rs`). Its tables live in the `identity` schema (see
//! [`cashflow_db::open_postgres`]), with their own `_sqlx_migrations`. Usernames are unique
//! regardless of case through a unique index on `lower(username)`, and concurrent first starts
//! agree on one signing key through the partial unique index on the active key.

use async_trait::async_trait;
use cashflow_db::MigrationSource;
use cashflow_domain::MerchantId;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;
use uuid::Uuid;

use super::{db, ClientRecord, FailureRecord, IdentityStore, KeyRecord, StoreError, UserRecord};
use crate::credentials::parse_scopes;
use crate::key::SigningKey;
use crate::links::{IdentityLink, LinkKind};

/// The identity schema on Postgres, embedded in the binary.
pub const MIGRATIONS: &[MigrationSource] = &[
    MigrationSource {
        version: 1,
        description: "identity",
        sql: include_str!("../../migrations/postgres/0001_identity.sql"),
    },
    MigrationSource {
        version: 2,
        description: "login failures",
        sql: include_str!("../../migrations/postgres/0002_login_failures.sql"),
    },
    MigrationSource {
        version: 3,
        description: "revocation",
        sql: include_str!("../../migrations/postgres/0003_revocation.sql"),
    },
    MigrationSource {
        version: 4,
        description: "identity links",
        sql: include_str!("../../migrations/postgres/0004_identity_links.sql"),
    },
];

/// The schema every connection of the store uses.
pub const SCHEMA: &str = "identity";

/// Connections kept by [`PostgresIdentityStore::open`]: logins are rare, and argon2 (not the
/// database) bounds their throughput.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;

/// Identities in the `identity` schema of a Postgres database.
#[derive(Clone)]
pub struct PostgresIdentityStore {
    pool: PgPool,
}

impl std::fmt::Debug for PostgresIdentityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresIdentityStore").finish_non_exhaustive()
    }
}

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
        Ok(Self { pool })
    }
}

#[async_trait]
impl IdentityStore for PostgresIdentityStore {
    #[tracing::instrument(skip_all)]
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clients (client_id, secret_sha256, merchant_id, scopes, name, created_at)
             VALUES ($1, $2, $3, $4, $5, now())",
        )
        .bind(&client.client_id)
        .bind(&client.secret_sha256)
        .bind(client.merchant_id.as_uuid())
        .bind(client.scopes.to_string())
        .bind(&client.name)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        sqlx::query(
            "SELECT client_id, secret_sha256, merchant_id, scopes, name, revoked_at FROM clients WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map(|row| client(&row))
        .transpose()
    }

    async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT client_id, secret_sha256, merchant_id, scopes, name, revoked_at FROM clients
             ORDER BY created_at, client_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(client).collect()
    }

    async fn revoke_client(&self, client_id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE clients SET revoked_at = COALESCE(revoked_at, $2) WHERE client_id = $1")
            .bind(client_id)
            .bind(at_ms)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_client_secret(&self, client_id: &str, secret_sha256: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE clients SET secret_sha256 = $2 WHERE client_id = $1 AND revoked_at IS NULL")
            .bind(client_id)
            .bind(secret_sha256)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT username, password_hash, merchant_id, scopes, disabled_at FROM users ORDER BY created_at, username",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(user).collect()
    }

    async fn set_user_disabled(&self, username: &str, at_ms: Option<i64>) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET disabled_at = $2 WHERE lower(username) = lower($1)")
            .bind(username)
            .bind(at_ms)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = $2 WHERE lower(username) = lower($1)")
            .bind(username)
            .bind(password_hash)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn signing_keys(&self, now_ms: i64) -> Result<Vec<KeyRecord>, StoreError> {
        let rows: Vec<(Vec<u8>, i64, Option<i64>)> = sqlx::query_as(
            "SELECT pkcs8, activates_at, retires_at FROM signing_keys
             WHERE retires_at IS NULL OR retires_at > $1 ORDER BY activates_at, kid",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|(der, activates_at_ms, retires_at_ms)| {
                let key = SigningKey::from_pkcs8(&der).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok(KeyRecord { key, activates_at_ms, retires_at_ms })
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
        sqlx::query("UPDATE signing_keys SET active = false, retires_at = $1 WHERE active = true")
            .bind(old_retires_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, pkcs8, active, created_at, activates_at) VALUES ($1, $2, true, now(), $3)",
        )
        .bind(new.kid())
        .bind(new.pkcs8_der())
        .bind(activates_at_ms)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    #[tracing::instrument(skip_all)]
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO users (username, password_hash, merchant_id, scopes, created_at)
             VALUES ($1, $2, $3, $4, now())",
        )
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.merchant_id.as_uuid())
        .bind(user.scopes.to_string())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            // Either the primary key or the case-insensitive index: the same user.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("user `{}` already exists", user.username)))
            }
            Err(e) => Err(db(e)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query("SELECT username, password_hash, merchant_id, scopes, disabled_at FROM users WHERE lower(username) = lower($1)")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .map(|row| user(&row))
            .transpose()
    }

    async fn active_key(&self) -> Result<Option<SigningKey>, StoreError> {
        let der: Option<Vec<u8>> = sqlx::query_scalar("SELECT pkcs8 FROM signing_keys WHERE active")
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        der.map(|der| SigningKey::from_pkcs8(&der).map_err(|e| StoreError::Corrupt(e.to_string()))).transpose()
    }

    async fn insert_first_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        // The partial unique index on the active key lets exactly one insert win (the others
        // wait for its commit, then insert nothing).
        sqlx::query(
            "INSERT INTO signing_keys (kid, pkcs8, active, created_at) VALUES ($1, $2, true, now())
             ON CONFLICT DO NOTHING",
        )
        .bind(key.kid())
        .bind(key.pkcs8_der())
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
        .bind(&link.external_id)
        .bind(link.merchant_id.as_uuid())
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
        let done = sqlx::query("DELETE FROM identity_links WHERE kind = $1 AND external_id = $2")
            .bind(kind.as_str())
            .bind(external_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn links(&self) -> Result<Vec<IdentityLink>, StoreError> {
        let rows: Vec<(String, String, Uuid, Option<String>, i64)> = sqlx::query_as(
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
                    merchant_id: MerchantId::from_uuid(merchant),
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

fn merchant(row: &PgRow) -> Result<MerchantId, StoreError> {
    Ok(MerchantId::from_uuid(row.try_get::<Uuid, _>("merchant_id").map_err(db)?))
}

fn client(row: &PgRow) -> Result<ClientRecord, StoreError> {
    Ok(ClientRecord {
        client_id: row.try_get("client_id").map_err(db)?,
        secret_sha256: row.try_get("secret_sha256").map_err(db)?,
        merchant_id: merchant(row)?,
        scopes: parse_scopes(&row.try_get::<String, _>("scopes").map_err(db)?)?,
        name: row.try_get("name").map_err(db)?,
        revoked_at_ms: row.try_get("revoked_at").map_err(db)?,
    })
}

fn user(row: &PgRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        username: row.try_get("username").map_err(db)?,
        disabled_at_ms: row.try_get("disabled_at").map_err(db)?,
        password_hash: row.try_get("password_hash").map_err(db)?,
        merchant_id: merchant(row)?,
        scopes: parse_scopes(&row.try_get::<String, _>("scopes").map_err(db)?)?,
    })
}

fn link_kind(name: &str) -> Result<LinkKind, StoreError> {
    LinkKind::parse(name).ok_or_else(|| StoreError::Corrupt(format!("unknown link kind `{name}`")))
}
