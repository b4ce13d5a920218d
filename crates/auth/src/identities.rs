//! The credential checks of the built-in issuer, once for every backend: whether a secret or
//! password is right, what a new client or user must look like, and where the signing key
//! comes from. The [`IdentityStore`] below only keeps rows.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Params;
use cashflow_domain::MerchantId;
use secrecy::SecretString;

use crate::credentials::{self, Passwords};
use crate::key::SigningKey;
use crate::links::{self, IdentityLink, LinkKind};
use crate::revocation::Revocations;
use crate::store::{ClientRecord, IdentityStore, KeyRecord, StoreError, UserRecord};
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
        let secret_sha256 = credentials::sha256_hex(&secret);
        let record = ClientRecord { client_id, secret_sha256, merchant_id, scopes, name, revoked_at_ms: None };
        self.store.insert_client(&record).await?;
        tracing::info!(client_id = %record.client_id, %scopes, "client created");
        Ok(NewClient { client_id: record.client_id, client_secret: SecretString::from(secret) })
    }

    /// The client's grant if `client_secret` is its secret and it is not revoked. An unknown
    /// client and a wrong secret both give `Ok(None)`, in the same time.
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
        if record.revoked_at_ms.is_some() {
            return Ok(None);
        }
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
        let record =
            UserRecord { username: username.to_owned(), password_hash, merchant_id, scopes, disabled_at_ms: None };
        self.store.insert_user(&record).await?;
        tracing::info!(%username, %scopes, "user created");
        Ok(())
    }

    /// The user's grant if `password` is theirs and they are not disabled. Unknown users cost as much as known ones, so
    /// timing does not reveal which usernames exist.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate_user(&self, username: &str, password: &str) -> Result<Option<UserGrant>, StoreError> {
        let record = if credentials::valid_username(username) { self.store.user(username).await? } else { None };
        let stored_hash = record.as_ref().map(|r| r.password_hash.clone());
        let matches = self.passwords.verify(stored_hash, password).await?;
        match record {
            Some(record) if matches && record.disabled_at_ms.is_none() => Ok(Some(UserGrant {
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

    /// Every client, oldest first (secrets are only ever stored hashed).
    pub async fn clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        self.store.clients().await
    }

    /// Revokes a client: no new token from now on, and its outstanding tokens are refused by
    /// every verifier at its next reload ([`crate::refresh`]). `false` if unknown.
    pub async fn revoke_client(&self, client_id: &str) -> Result<bool, StoreError> {
        let revoked = self.store.revoke_client(client_id, now_ms()).await?;
        if revoked {
            tracing::info!(%client_id, "client revoked");
        }
        Ok(revoked)
    }

    /// A new secret for a client that is not revoked; the old one stops working at once.
    /// Tokens already issued stay valid until they expire.
    pub async fn rotate_client_secret(&self, client_id: &str) -> Result<Option<NewClient>, StoreError> {
        let (_, secret) = credentials::new_client_credentials()?;
        if !self.store.set_client_secret(client_id, &credentials::sha256_hex(&secret)).await? {
            return Ok(None);
        }
        tracing::info!(%client_id, "client secret rotated");
        Ok(Some(NewClient { client_id: client_id.to_owned(), client_secret: SecretString::from(secret) }))
    }

    /// Every user, oldest first.
    pub async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.store.users().await
    }

    /// Disables (`true`) or enables a user; a disabled user gets no token and its outstanding
    /// ones are refused at the verifiers' next reload. `false` if unknown.
    pub async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<bool, StoreError> {
        let changed = self.store.set_user_disabled(username, disabled.then(now_ms)).await?;
        if changed {
            tracing::info!(%username, disabled, "user access changed");
        }
        Ok(changed)
    }

    /// Replaces a user's password (same rules as at creation). `false` if unknown.
    pub async fn set_password(&self, username: &str, password: &SecretString) -> Result<bool, StoreError> {
        credentials::check_new_user(username, password)?;
        let hash = self.passwords.hash(password).await?;
        self.store.set_user_password(username, &hash).await
    }

    /// What verifiers must refuse: revoked clients and disabled users.
    pub async fn revocations(&self) -> Result<Revocations, StoreError> {
        let clients = self.store.clients().await?;
        let users = self.store.users().await?;
        Ok(Revocations::new(
            clients.into_iter().filter(|c| c.revoked_at_ms.is_some()).map(|c| c.client_id),
            users.into_iter().filter(|u| u.disabled_at_ms.is_some()).map(|u| u.username),
        ))
    }

    /// The signing keys to publish now, with when each signs.
    pub async fn published_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.store.signing_keys(now_ms()).await
    }

    /// Rotates the signing key. The new key is published at once and signs from
    /// `activation_delay` on (time for every process to load it); the old one stays published
    /// until every token it may sign meanwhile has expired: `activation_delay + token_ttl +
    /// leeway` from now. Returns the new key.
    pub async fn rotate_signing_key(
        &self,
        activation_delay: Duration,
        token_ttl: Duration,
        leeway: Duration,
    ) -> Result<KeyRecord, StoreError> {
        let key = SigningKey::generate()?;
        let now = now_ms();
        let activates_at_ms = now.saturating_add(millis(activation_delay));
        let retires_at_ms = activates_at_ms.saturating_add(millis(token_ttl)).saturating_add(millis(leeway));
        self.store.rotate_key(&key, activates_at_ms, retires_at_ms).await?;
        tracing::info!(kid = key.kid(), activates_at_ms, old_retires_at_ms = retires_at_ms, "signing key rotated");
        Ok(KeyRecord { key, activates_at_ms, retires_at_ms: None })
    }

    /// Links an external issuer's subject or machine client to `merchant_id`, its tokens
    /// granting at most `scopes` (`None`: what the token grants). Every verifier picks it up at
    /// its next reload. [`StoreError::Conflict`] if that subject or client is already linked.
    #[tracing::instrument(skip_all, fields(merchant_id = %merchant_id, kind = %kind))]
    pub async fn link(
        &self,
        kind: LinkKind,
        external_id: &str,
        merchant_id: MerchantId,
        scopes: Option<Scopes>,
    ) -> Result<IdentityLink, StoreError> {
        links::check_external_id(kind, external_id).map_err(StoreError::Invalid)?;
        let link =
            IdentityLink { kind, external_id: external_id.to_owned(), merchant_id, scopes, created_at_ms: now_ms() };
        self.store.insert_link(&link).await?;
        tracing::info!(%external_id, scopes = ?scopes.map(|s| s.to_string()), "identity linked");
        Ok(link)
    }

    /// Removes a link: its tokens stop resolving to the merchant at the verifiers' next
    /// reload. `false` if there was none.
    pub async fn unlink(&self, kind: LinkKind, external_id: &str) -> Result<bool, StoreError> {
        let removed = self.store.delete_link(kind, external_id).await?;
        if removed {
            tracing::info!(%kind, %external_id, "identity unlinked");
        }
        Ok(removed)
    }

    /// Every identity link, oldest first.
    pub async fn links(&self) -> Result<Vec<IdentityLink>, StoreError> {
        self.store.links().await
    }

    /// Whether the store answers, for readiness probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, millis)
}
