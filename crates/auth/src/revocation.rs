//! Revocable credentials: what makes a revoked client's or disabled user's outstanding tokens,
//! and a rotated-out signing key, stop working in every process.
//!
//! JWTs are checked without asking anyone, so a revocation only reaches a verifier when it
//! reloads. [`Refresher`] does that every [`REFRESH_INTERVAL`] in each process that verifies
//! or issues tokens: it reads the revoked clients, disabled users and published signing keys
//! from the identity store (which every process of the split deployment shares), hands the
//! revocations to the [`RevocationCheck`] in front of the JWT verifier, and the keys to the
//! issuer and the verifier. So a revoked credential's tokens fail at most one interval (plus
//! a query) after the command, and a rotated key is in every JWKS before it signs anything.
//! The identity links of external issuers' tokens ([`crate::links`]) are reloaded with them.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::links::Links;

use crate::identities::Identities;
use crate::{AuthError, Issuer, JwtVerifier, Principal, TokenVerifier};

/// How often every process reloads revocations and keys: the bound on how long a revoked
/// credential's tokens keep working.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Revoked clients and disabled users.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    clients: HashSet<String>,
    /// In lower case: usernames are case-insensitive.
    users: HashSet<String>,
}

impl Revocations {
    pub fn new(clients: impl IntoIterator<Item = String>, users: impl IntoIterator<Item = String>) -> Self {
        Self {
            clients: clients.into_iter().collect(),
            users: users.into_iter().map(|u| u.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a token of `principal` must be refused: its client is revoked, or it is a
    /// user's token (its subject is not its client) and the user is disabled.
    pub fn refuses(&self, principal: &Principal) -> bool {
        let client = principal.client_id.as_deref();
        client.is_some_and(|c| self.clients.contains(c))
            || (client != Some(principal.subject.as_str())
                && self.users.contains(&principal.subject.to_ascii_lowercase()))
    }
}

/// A verifier that also refuses the tokens of revoked credentials.
pub struct RevocationCheck {
    inner: Arc<dyn TokenVerifier>,
    revoked: RwLock<Arc<Revocations>>,
}

impl RevocationCheck {
    /// Checks `inner`'s principals against the revocations, none to begin with.
    pub fn new(inner: Arc<dyn TokenVerifier>) -> Self {
        Self { inner, revoked: RwLock::default() }
    }

    /// Replaces the revocations.
    pub fn set(&self, revocations: Revocations) {
        *self.revoked.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(revocations);
    }
}

impl TokenVerifier for RevocationCheck {
    fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let principal = self.inner.verify(token)?;
        let revoked = Arc::clone(&self.revoked.read().unwrap_or_else(PoisonError::into_inner));
        if revoked.refuses(&principal) {
            return Err(AuthError::InvalidToken("the credential was revoked".into()));
        }
        Ok(principal)
    }
}

/// Reloads revocations and signing keys from the identity store.
#[derive(Clone)]
pub struct Refresher {
    pub identities: Arc<Identities>,
    pub issuer: Arc<Issuer>,
    pub verifier: Arc<JwtVerifier>,
    pub check: Arc<RevocationCheck>,
    /// The identity links the external issuers' verifiers resolve merchants with.
    pub links: Arc<Links>,
}

impl Refresher {
    /// One reload.
    pub async fn refresh(&self) -> Result<(), crate::StoreError> {
        self.check.set(self.identities.revocations().await?);
        self.links.set(self.identities.links().await?);
        let keys = self.identities.published_keys().await?;
        if !keys.is_empty() && self.issuer.set_keys(keys) {
            let jwks = self.issuer.jwks();
            if let Err(error) = self.verifier.set_jwks(jwks) {
                tracing::error!(%error, "the reloaded signing keys are unusable; keeping the old ones");
            }
        }
        Ok(())
    }

    /// Reloads unless the last reload is younger than `max_age`: for a process with no
    /// background worker (a Lambda function, frozen between invocations), called per request.
    pub async fn refresh_if_older_than(&self, max_age: Duration) -> Result<(), crate::StoreError> {
        match self.links.loaded_at() {
            Some(at) if at.elapsed() < max_age => Ok(()),
            _ => self.refresh().await,
        }
    }

    /// Reloads every `interval`, forever; a failed reload keeps the previous state.
    pub async fn run(self, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(error) = self.refresh().await {
                tracing::warn!(%error, "could not reload revocations and signing keys");
            }
        }
    }
}
