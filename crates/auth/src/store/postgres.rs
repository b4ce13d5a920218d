//! The Postgres [`IdentityStore`], chosen by a `postgres://` URL when the built-in issuer runs
//! next to Postgres stores (with Cognito, no identity store is needed at all).
//!
//! Same behaviour as the SQLite store, checked by the same test suite
//! (`tests/store_contract.rs`), and the same credential rules (the shared `credentials`
//! module): secrets are stored as SHA-256 only, passwords as argon2id hashed off the async
//! threads, unknown clients and users cost as much as known ones. Its tables live in the
//! `identity` schema (see [`cashflow_db::open_postgres`]), with their own `_sqlx_migrations`.
//! Usernames are unique regardless of case through a unique index on `lower(username)`, and
//! concurrent first starts agree on one signing key through the partial unique index on the
//! active key.

use argon2::Params;
use async_trait::async_trait;
use cashflow_db::MigrationSource;
use cashflow_domain::MerchantId;
use secrecy::SecretString;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::Row;
use uuid::Uuid;

use super::credentials::{self, Passwords};
use super::{ClientGrant, IdentityStore, NewClient, StoreError, UserGrant};
use crate::issuer::SigningKey;
use crate::Scopes;

/// The identity schema on Postgres, embedded in the binary.
pub const MIGRATIONS: &[MigrationSource] = &[MigrationSource {
    version: 1,
    description: "identity",
    sql: include_str!("../../migrations/postgres/0001_identity.sql"),
}];

/// The schema every connection of the store uses.
pub const SCHEMA: &str = "identity";

/// Connections kept by [`PostgresIdentityStore::open`]: logins are rare, and argon2 (not the
/// database) bounds their throughput.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4;

/// Identities in the `identity` schema of a Postgres database.
#[derive(Clone)]
pub struct PostgresIdentityStore {
    pool: PgPool,
    /// How passwords are hashed and checked (shared with the other backends).
    passwords: Passwords,
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
        Ok(Self { pool, passwords: Passwords::default() })
    }

    /// Hashes new passwords with these argon2id costs instead of argon2's recommended
    /// defaults (existing hashes keep verifying with the costs recorded in them). Tests use
    /// the minimum, so that unoptimized builds do not spend seconds per login.
    pub fn with_password_params(mut self, params: Params) -> Self {
        self.passwords = Passwords::new(params);
        self
    }

    async fn active_key(&self) -> Result<Option<SigningKey>, StoreError> {
        let row = sqlx::query("SELECT pkcs8 FROM signing_keys WHERE active").fetch_optional(&self.pool).await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let der: Vec<u8> = row.try_get("pkcs8")?;
                let key = SigningKey::from_pkcs8(&der).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok(Some(key))
            }
        }
    }
}

#[async_trait]
impl IdentityStore for PostgresIdentityStore {
    #[tracing::instrument(skip_all, fields(merchant_id = %merchant_id))]
    async fn create_client(
        &self,
        merchant_id: MerchantId,
        scopes: Scopes,
        name: Option<&str>,
    ) -> Result<NewClient, StoreError> {
        let name = credentials::client_name(name)?;
        let (client_id, secret) = credentials::new_client_credentials()?;
        sqlx::query(
            "INSERT INTO clients (client_id, secret_sha256, merchant_id, scopes, name, created_at)
             VALUES ($1, $2, $3, $4, $5, now())",
        )
        .bind(&client_id)
        .bind(credentials::sha256_hex(&secret))
        .bind(merchant_id.as_uuid())
        .bind(scopes.to_string())
        .bind(name)
        .execute(&self.pool)
        .await?;
        tracing::info!(%client_id, %scopes, "client created");
        Ok(NewClient { client_id, client_secret: SecretString::from(secret) })
    }

    #[tracing::instrument(skip_all)]
    async fn authenticate_client(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Option<ClientGrant>, StoreError> {
        let row = sqlx::query("SELECT secret_sha256, merchant_id, scopes FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        let stored: Option<String> = row.as_ref().map(|r| r.try_get("secret_sha256")).transpose()?;
        // An unknown client costs the same comparison as a wrong secret.
        let (Some(row), true) = (row, credentials::client_secret_matches(stored.as_deref(), client_secret)) else {
            return Ok(None);
        };
        Ok(Some(ClientGrant { client_id: client_id.to_owned(), merchant_id: merchant(&row)?, scopes: scopes(&row)? }))
    }

    #[tracing::instrument(skip_all, fields(merchant_id = %merchant_id))]
    async fn create_user(
        &self,
        username: &str,
        password: &SecretString,
        merchant_id: MerchantId,
        scopes: Scopes,
    ) -> Result<(), StoreError> {
        credentials::check_new_user(username, password)?;
        let hash = self.passwords.hash(password).await?;
        let inserted = sqlx::query(
            "INSERT INTO users (username, password_hash, merchant_id, scopes, created_at)
             VALUES ($1, $2, $3, $4, now())",
        )
        .bind(username)
        .bind(hash)
        .bind(merchant_id.as_uuid())
        .bind(scopes.to_string())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {
                tracing::info!(%username, %scopes, "user created");
                Ok(())
            }
            // Either the primary key or the case-insensitive index: the same user.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("user `{username}` already exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn authenticate_user(&self, username: &str, password: &str) -> Result<Option<UserGrant>, StoreError> {
        let row = if credentials::valid_username(username) {
            sqlx::query(
                "SELECT username, password_hash, merchant_id, scopes FROM users WHERE lower(username) = lower($1)",
            )
            .bind(username)
            .fetch_optional(&self.pool)
            .await?
        } else {
            None
        };
        let stored_hash: Option<String> = row.as_ref().map(|r| r.try_get("password_hash")).transpose()?;
        let matches = self.passwords.verify(stored_hash, password).await?;
        match row {
            Some(row) if matches => Ok(Some(UserGrant {
                username: row.try_get("username")?,
                merchant_id: merchant(&row)?,
                scopes: scopes(&row)?,
            })),
            _ => Ok(None),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn signing_key(&self) -> Result<SigningKey, StoreError> {
        if let Some(key) = self.active_key().await? {
            return Ok(key);
        }
        // Another process may be doing the same right now: the partial unique index on the
        // active key lets exactly one insert win (the others wait for its commit, then insert
        // nothing), and everyone reads the winner back.
        let key = SigningKey::generate()?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, pkcs8, active, created_at) VALUES ($1, $2, true, now())
             ON CONFLICT DO NOTHING",
        )
        .bind(key.kid())
        .bind(key.pkcs8_der())
        .execute(&self.pool)
        .await?;
        let key = self
            .active_key()
            .await?
            .ok_or_else(|| StoreError::Corrupt("no active signing key after creating one".into()))?;
        tracing::info!(kid = key.kid(), "signing key ready");
        Ok(key)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn merchant(row: &PgRow) -> Result<MerchantId, StoreError> {
    Ok(MerchantId::from_uuid(row.try_get::<Uuid, _>("merchant_id")?))
}

fn scopes(row: &PgRow) -> Result<Scopes, StoreError> {
    credentials::parse_scopes(&row.try_get::<String, _>("scopes")?)
}
