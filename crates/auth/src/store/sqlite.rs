//! The SQLite [`IdentityStore`] of the single-machine deployment.

use async_trait::async_trait;
use cashflow_db::MigrationSource;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;

use super::{db, ClientRecord, FailureRecord, IdentityStore, KeyRecord, StoreError, UserRecord};
use crate::credentials::{parse_merchant, parse_scopes};
use crate::key::SigningKey;
use crate::links::{IdentityLink, LinkKind};

/// The identity schema, embedded in the binary.
pub const MIGRATIONS: &[MigrationSource] = &[
    MigrationSource {
        version: 1,
        description: "identity",
        sql: include_str!("../../migrations/sqlite/0001_identity.sql"),
    },
    MigrationSource {
        version: 2,
        description: "login failures",
        sql: include_str!("../../migrations/sqlite/0002_login_failures.sql"),
    },
    MigrationSource {
        version: 3,
        description: "revocation",
        sql: include_str!("../../migrations/sqlite/0003_revocation.sql"),
    },
    MigrationSource {
        version: 4,
        description: "identity links",
        sql: include_str!("../../migrations/sqlite/0004_identity_links.sql"),
    },
];

/// Connections kept open: logins are rare, argon2 (not SQLite) bounds their throughput.
const MAX_CONNECTIONS: u32 = 4;

/// Identities in a SQLite database of their own.
#[derive(Clone)]
pub struct SqliteIdentityStore {
    pool: SqlitePool,
}

impl std::fmt::Debug for SqliteIdentityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteIdentityStore").finish_non_exhaustive()
    }
}

impl SqliteIdentityStore {
    /// Opens (creating if needed) and migrates the database at `url` (`sqlite://path`).
    #[tracing::instrument(skip_all)]
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = cashflow_db::open_sqlite(url, MAX_CONNECTIONS).await?;
        cashflow_db::migrate_sqlite(&pool, MIGRATIONS).await?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl IdentityStore for SqliteIdentityStore {
    #[tracing::instrument(skip_all)]
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clients (client_id, secret_sha256, merchant_id, scopes, name, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&client.client_id)
        .bind(&client.secret_sha256)
        .bind(client.merchant_id.to_string())
        .bind(client.scopes.to_string())
        .bind(&client.name)
        .bind(now())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn client(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError> {
        sqlx::query(
            "SELECT client_id, secret_sha256, merchant_id, scopes, name, revoked_at FROM clients WHERE client_id = ?",
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
        let done = sqlx::query("UPDATE clients SET revoked_at = COALESCE(revoked_at, ?2) WHERE client_id = ?1")
            .bind(client_id)
            .bind(at_ms)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_client_secret(&self, client_id: &str, secret_sha256: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE clients SET secret_sha256 = ?2 WHERE client_id = ?1 AND revoked_at IS NULL")
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
        let done = sqlx::query("UPDATE users SET disabled_at = ?2 WHERE username = ?1")
            .bind(username)
            .bind(at_ms)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE users SET password_hash = ?2 WHERE username = ?1")
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
             WHERE retires_at IS NULL OR retires_at > ?1 ORDER BY activates_at, kid",
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
        sqlx::query("UPDATE signing_keys SET active = 0, retires_at = ?1 WHERE active = 1")
            .bind(old_retires_at_ms)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, pkcs8, active, created_at, activates_at) VALUES (?1, ?2, 1, ?4, ?3)",
        )
        .bind(new.kid())
        .bind(new.pkcs8_der())
        .bind(activates_at_ms)
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    #[tracing::instrument(skip_all)]
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO users (username, password_hash, merchant_id, scopes, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.merchant_id.to_string())
        .bind(user.scopes.to_string())
        .bind(now())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(()),
            // The primary key is `COLLATE NOCASE`: `Alice` and `alice` are one user.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("user `{}` already exists", user.username)))
            }
            Err(e) => Err(db(e)),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query("SELECT username, password_hash, merchant_id, scopes, disabled_at FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .map(|row| user(&row))
            .transpose()
    }

    async fn active_key(&self) -> Result<Option<SigningKey>, StoreError> {
        let der: Option<Vec<u8>> = sqlx::query_scalar("SELECT pkcs8 FROM signing_keys WHERE active = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        der.map(|der| SigningKey::from_pkcs8(&der).map_err(|e| StoreError::Corrupt(e.to_string()))).transpose()
    }

    async fn insert_first_key(&self, key: &SigningKey) -> Result<(), StoreError> {
        // The unique index on the active key lets exactly one insert win.
        sqlx::query("INSERT OR IGNORE INTO signing_keys (kid, pkcs8, active, created_at) VALUES (?, ?, 1, ?)")
            .bind(key.kid())
            .bind(key.pkcs8_der())
            .bind(now())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn failures(&self, key: &str) -> Result<Option<FailureRecord>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as("SELECT failures, last_failure FROM login_failures WHERE key = ?")
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
            "INSERT INTO login_failures (key, failures, last_failure) VALUES (?1, 1, ?2)
             ON CONFLICT (key) DO UPDATE SET
                 failures = CASE WHEN login_failures.last_failure < ?3 THEN 1 ELSE login_failures.failures + 1 END,
                 last_failure = ?2",
        )
        .bind(key)
        .bind(now_ms)
        .bind(forget_before_ms)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM login_failures WHERE last_failure < ?")
            .bind(forget_before_ms)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM login_failures WHERE key = ?").bind(key).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    async fn insert_link(&self, link: &IdentityLink) -> Result<(), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO identity_links (kind, external_id, merchant_id, scopes, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(link.kind.as_str())
        .bind(&link.external_id)
        .bind(link.merchant_id.to_string())
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
        let done = sqlx::query("DELETE FROM identity_links WHERE kind = ? AND external_id = ?")
            .bind(kind.as_str())
            .bind(external_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn links(&self) -> Result<Vec<IdentityLink>, StoreError> {
        let rows: Vec<(String, String, String, Option<String>, i64)> = sqlx::query_as(
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
                    merchant_id: parse_merchant(&merchant)?,
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

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn client(row: &SqliteRow) -> Result<ClientRecord, StoreError> {
    Ok(ClientRecord {
        client_id: row.try_get("client_id").map_err(db)?,
        secret_sha256: row.try_get("secret_sha256").map_err(db)?,
        merchant_id: parse_merchant(&row.try_get::<String, _>("merchant_id").map_err(db)?)?,
        scopes: parse_scopes(&row.try_get::<String, _>("scopes").map_err(db)?)?,
        name: row.try_get("name").map_err(db)?,
        revoked_at_ms: row.try_get("revoked_at").map_err(db)?,
    })
}

fn user(row: &SqliteRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        username: row.try_get("username").map_err(db)?,
        disabled_at_ms: row.try_get("disabled_at").map_err(db)?,
        password_hash: row.try_get("password_hash").map_err(db)?,
        merchant_id: parse_merchant(&row.try_get::<String, _>("merchant_id").map_err(db)?)?,
        scopes: parse_scopes(&row.try_get::<String, _>("scopes").map_err(db)?)?,
    })
}

fn link_kind(name: &str) -> Result<LinkKind, StoreError> {
    LinkKind::parse(name).ok_or_else(|| StoreError::Corrupt(format!("unknown link kind `{name}`")))
}
