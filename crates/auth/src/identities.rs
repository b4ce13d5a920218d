//! The credential checks of the built-in issuer, once for every backend: whether a secret or
//! password is right, what a new client or user must look like, and where the signing key
//! comes from. The [`IdentityStore`] below only keeps rows.

use std::sync::Arc;

use argon2::Params;
use cashflow_domain::MerchantId;
use secrecy::SecretString;

use crate::credentials::{self, Passwords};
use crate::key::SigningKey;
use crate::store::{ClientRecord, IdentityStore, StoreError, UserRecord};
use crate::Scopes;

/// A freshly created client. The secret is shown once and never stored in clear.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// What an authenticated client may obtain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientGrant {
    pub client_id: String,
    /// The only merchant its tokens can act for.
    pub merchant_id: MerchantId,
    /// The most its tokens can carry.
    pub scopes: Scopes,
}

/// What an authenticated user may obtain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserGrant {
    /// The username as stored (lookups ignore case).
    pub username: String,
    pub merchant_id: MerchantId,
    pub scopes: Scopes,
}

/// Clients, users and the signing key, with their rules, over any [`IdentityStore`].
#[derive(Clone)]
pub struct Identities {
    store: Arc<dyn IdentityStore>,
    /// How passwords are hashed and checked.
    passwords: Passwords,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities").finish_non_exhaustive()
    }
}

impl Identities {
    /// The identities kept in `store`, new passwords hashed with argon2's recommended costs.
    pub fn new(store: Arc<dyn IdentityStore>) -> Self {
        Self { store, passwords: Passwords::default() }
    }

    /// Hashes new passwords with these argon2id costs instead of argon2's recommended
    /// defaults (existing hashes keep verifying with the costs recorded in them). Tests use
    /// the minimum, so that unoptimized builds do not spend seconds per login.
    pub fn with_password_params(mut self, params: Params) -> Self {
        self.passwords = Passwords::new(params);
        self
    }

    /// The rows underneath.
    pub fn store(&self) -> &Arc<dyn IdentityStore> {
        &self.store
    }

    /// Creates a client for `merchant_id` that may request at most `scopes`.
    #[tracing::instrument(skip_all, fields(merchant_id = %merchant_id))]
    pub async fn create_client(
        &self,
        merchant_id: MerchantId,
        scopes: Scopes,
        name: Option<&str>,
    ) -> Result<NewClient, StoreError> {
        let name = credentials::client_name(name)?.map(str::to_owned);
        let (client_id, secret) = credentials::new_client_credentials()?;
        let record =
            ClientRecord { client_id, secret_sha256: credentials::sha256_hex(&secret), merchant_id, scopes, name };
        self.store.insert_client(&record).await?;
        tracing::info!(client_id = %record.client_id, %scopes, "client created");
        Ok(NewClient { client_id: record.client_id, client_secret: SecretString::from(secret) })
    }

    /// The client's grant if `client_secret` is its secret. An unknown client and a wrong
    /// secret both give `Ok(None)`, in the same time.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate_client(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<Option<ClientGrant>, StoreError> {
        let record = self.store.client(client_id).await?;
        let stored = record.as_ref().map(|r| r.secret_sha256.as_str());
        // An unknown client costs the same comparison as a wrong secret.
        let (Some(record), true) = (record.as_ref(), credentials::client_secret_matches(stored, client_secret)) else {
            return Ok(None);
        };
        Ok(Some(ClientGrant {
            client_id: record.client_id.clone(),
            merchant_id: record.merchant_id,
            scopes: record.scopes,
        }))
    }

    /// Creates a user. Usernames are 3 to 64 characters of `[A-Za-z0-9._@-]`, unique
    /// regardless of case ([`StoreError::Conflict`] otherwise).
    #[tracing::instrument(skip_all, fields(merchant_id = %merchant_id))]
    pub async fn create_user(
        &self,
        username: &str,
        password: &SecretString,
        merchant_id: MerchantId,
        scopes: Scopes,
    ) -> Result<(), StoreError> {
        credentials::check_new_user(username, password)?;
        let password_hash = self.passwords.hash(password).await?;
        let record = UserRecord { username: username.to_owned(), password_hash, merchant_id, scopes };
        self.store.insert_user(&record).await?;
        tracing::info!(%username, %scopes, "user created");
        Ok(())
    }

    /// The user's grant if `password` is theirs. Unknown users cost as much as known ones, so
    /// timing does not reveal which usernames exist.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate_user(&self, username: &str, password: &str) -> Result<Option<UserGrant>, StoreError> {
        let record = if credentials::valid_username(username) { self.store.user(username).await? } else { None };
        let stored_hash = record.as_ref().map(|r| r.password_hash.clone());
        let matches = self.passwords.verify(stored_hash, password).await?;
        match record {
            Some(record) if matches => Ok(Some(UserGrant {
                username: record.username,
                merchant_id: record.merchant_id,
                scopes: record.scopes,
            })),
            _ => Ok(None),
        }
    }

    /// The active signing key, generated and persisted on first use.
    #[tracing::instrument(skip_all)]
    pub async fn signing_key(&self) -> Result<SigningKey, StoreError> {
        if let Some(key) = self.store.active_key().await? {
            return Ok(key);
        }
        // Another process may be doing the same right now: the store lets exactly one insert
        // win, and everyone reads the winner back.
        self.store.insert_first_key(&SigningKey::generate()?).await?;
        let key = self
            .store
            .active_key()
            .await?
            .ok_or_else(|| StoreError::Corrupt("no active signing key after creating one".into()))?;
        tracing::info!(kid = key.kid(), "signing key ready");
        Ok(key)
    }

    /// Whether the store answers, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}
