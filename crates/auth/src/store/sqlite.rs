//! The SQLite [`IdentityStore`] of the single-machine deployment.

use argon2::Params;
use async_trait::async_trait;
use cashflow_db::MigrationSource;
use cashflow_domain::MerchantId;
use secrecy::SecretString;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;

use super::credentials::{self, Passwords};
use super::{ClientGrant, IdentityStore, NewClient, StoreError, UserGrant};
use crate::issuer::SigningKey;
use crate::Scopes;

/// The identity schema, embedded in the binary.
pub const MIGRATIONS: &[MigrationSource] = &[MigrationSource {
    version: 1,
    description: "identity",
    sql: include_str!("../../migrations/sqlite/0001_identity.sql"),
}];

/// Connections kept open: logins are rare, argon2 (not SQLite) bounds their throughput.
const MAX_CONNECTIONS: u32 = 4;

/// Identities in a SQLite database of their own.
#[derive(Clone)]
pub struct SqliteIdentityStore {
    pool: SqlitePool,
    /// How passwords are hashed and checked (shared with the other backends).
    passwords: Passwords,
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
        Ok(Self { pool, passwords: Passwords::default() })
    }

    /// Hashes new passwords with these argon2id costs instead of argon2's recommended
    /// defaults (existing hashes keep verifying with the costs recorded in them). Tests use
    /// the minimum, so that unoptimized builds do not spend seconds per login.
    pub fn with_password_params(mut self, params: Params) -> Self {
        self.passwords = Passwords::new(params);
        self
    }

    /// Cheap password hashing, so that tests do not spend seconds in unoptimized argon2.
    #[cfg(test)]
    pub(crate) fn with_fast_hashing(mut self) -> Self {
        self.passwords = Passwords::fast();
        self
    }

    async fn active_key(&self) -> Result<Option<SigningKey>, StoreError> {
        let row = sqlx::query("SELECT pkcs8 FROM signing_keys WHERE active = 1").fetch_optional(&self.pool).await?;
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
impl IdentityStore for SqliteIdentityStore {
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
            "INSERT INTO clients (client_id, secret_sha256, merchant_id, scopes, name, created_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&client_id)
        .bind(credentials::sha256_hex(&secret))
        .bind(merchant_id.to_string())
        .bind(scopes.to_string())
        .bind(name)
        .bind(now())
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
        let row = sqlx::query("SELECT secret_sha256, merchant_id, scopes FROM clients WHERE client_id = ?")
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
            "INSERT INTO users (username, password_hash, merchant_id, scopes, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(username)
        .bind(hash)
        .bind(merchant_id.to_string())
        .bind(scopes.to_string())
        .bind(now())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => {
                tracing::info!(%username, %scopes, "user created");
                Ok(())
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::Conflict(format!("user `{username}` already exists")))
            }
            Err(e) => Err(e.into()),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn authenticate_user(&self, username: &str, password: &str) -> Result<Option<UserGrant>, StoreError> {
        let row = if credentials::valid_username(username) {
            sqlx::query("SELECT username, password_hash, merchant_id, scopes FROM users WHERE username = ?")
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
        // Another process may be doing the same right now: the unique index on the active key
        // lets exactly one insert win, and everyone reads the winner back.
        let key = SigningKey::generate()?;
        sqlx::query("INSERT OR IGNORE INTO signing_keys (kid, pkcs8, active, created_at) VALUES (?, ?, 1, ?)")
            .bind(key.kid())
            .bind(key.pkcs8_der())
            .bind(now())
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

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn merchant(row: &SqliteRow) -> Result<MerchantId, StoreError> {
    credentials::parse_merchant(&row.try_get::<String, _>("merchant_id")?)
}

fn scopes(row: &SqliteRow) -> Result<Scopes, StoreError> {
    credentials::parse_scopes(&row.try_get::<String, _>("scopes")?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::credentials::sha256_hex;
    use crate::Scope;
    use secrecy::ExposeSecret;

    async fn store(dir: &tempfile::TempDir) -> SqliteIdentityStore {
        let url = format!("sqlite://{}", dir.path().join("identity.db").display());
        SqliteIdentityStore::open(&url).await.unwrap().with_fast_hashing()
    }

    #[tokio::test]
    async fn given_a_new_client_when_it_authenticates_with_its_secret_then_it_gets_its_grant() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let merchant = MerchantId::new();

        let client = store.create_client(merchant, Scope::EntriesWrite.into(), Some("POS")).await.unwrap();
        let grant = store.authenticate_client(&client.client_id, client.client_secret.expose_secret()).await.unwrap();

        assert!(client.client_id.starts_with("cf_") && client.client_id.len() == 25, "{}", client.client_id);
        assert_eq!(
            grant,
            Some(ClientGrant {
                client_id: client.client_id,
                merchant_id: merchant,
                scopes: Scope::EntriesWrite.into()
            })
        );
    }

    #[tokio::test]
    async fn given_a_client_when_a_wrong_secret_or_unknown_id_is_presented_then_nothing_is_granted() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let client = store.create_client(MerchantId::new(), Scopes::all(), None).await.unwrap();

        assert_eq!(store.authenticate_client(&client.client_id, "wrong").await.unwrap(), None);
        assert_eq!(store.authenticate_client("cf_unknown", client.client_secret.expose_secret()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn given_a_client_when_stored_then_only_a_hash_of_its_secret_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let client = store.create_client(MerchantId::new(), Scopes::all(), None).await.unwrap();

        let stored: String =
            sqlx::query("SELECT secret_sha256 FROM clients").fetch_one(&store.pool).await.unwrap().get(0);

        assert_ne!(stored, client.client_secret.expose_secret());
        assert_eq!(stored, sha256_hex(client.client_secret.expose_secret()));
    }

    #[tokio::test]
    async fn given_a_user_when_logging_in_then_only_the_right_password_works_and_case_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let merchant = MerchantId::new();
        let password = SecretString::from("correct horse");
        store.create_user("Alice", &password, merchant, Scope::ReportsRead.into()).await.unwrap();

        let grant = store.authenticate_user("alice", "correct horse").await.unwrap();

        assert_eq!(
            grant,
            Some(UserGrant { username: "Alice".into(), merchant_id: merchant, scopes: Scope::ReportsRead.into() })
        );
        assert_eq!(store.authenticate_user("Alice", "wrong horse").await.unwrap(), None);
        assert_eq!(store.authenticate_user("bob", "correct horse").await.unwrap(), None);
        assert_eq!(store.authenticate_user("", "correct horse").await.unwrap(), None);
    }

    #[tokio::test]
    async fn given_a_user_when_stored_then_the_password_is_an_argon2id_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.create_user("alice", &"pw".into(), MerchantId::new(), Scopes::all()).await.unwrap();

        let stored: String =
            sqlx::query("SELECT password_hash FROM users").fetch_one(&store.pool).await.unwrap().get(0);

        assert!(stored.starts_with("$argon2id$"), "{stored}");
    }

    #[tokio::test]
    async fn given_an_existing_username_in_another_case_when_creating_then_it_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        store.create_user("alice", &"pw".into(), MerchantId::new(), Scopes::all()).await.unwrap();

        let result = store.create_user("ALICE", &"pw2".into(), MerchantId::new(), Scopes::all()).await;

        assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    }

    #[tokio::test]
    async fn given_a_malformed_username_or_empty_password_when_creating_then_it_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let merchant = MerchantId::new();

        for username in ["ab", "has space", "semi;colon", &"a".repeat(65), "ünïcode"] {
            let result = store.create_user(username, &"pw".into(), merchant, Scopes::all()).await;
            assert!(matches!(result, Err(StoreError::Invalid(_))), "{username}: {result:?}");
        }
        let result = store.create_user("alice", &"".into(), merchant, Scopes::all()).await;
        assert!(matches!(result, Err(StoreError::Invalid(_))), "{result:?}");
    }

    #[tokio::test]
    async fn given_a_fresh_database_when_the_signing_key_is_asked_twice_and_after_reopening_then_it_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let first = store(&dir).await.signing_key().await.unwrap();
        let again = store(&dir).await.signing_key().await.unwrap();

        assert_eq!(first.kid(), again.kid());
        assert_eq!(first.pkcs8_der(), again.pkcs8_der());
    }

    #[tokio::test]
    async fn given_concurrent_first_calls_when_creating_the_signing_key_then_all_get_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;

        let (a, b, c) = tokio::join!(store.signing_key(), store.signing_key(), store.signing_key());

        let kids = [a.unwrap().kid().to_owned(), b.unwrap().kid().to_owned(), c.unwrap().kid().to_owned()];
        assert!(kids.iter().all(|k| k == &kids[0]), "{kids:?}");
    }

    #[tokio::test]
    async fn given_an_open_store_when_pinged_then_it_answers() {
        let dir = tempfile::tempdir().unwrap();
        store(&dir).await.ping().await.unwrap();
    }
}
