//! The reload that carries revocations, signing keys and identity links to every process.
//!
//! JWTs are checked without asking anyone, so what an operator changes in the identity store
//! (which every process of the split deployment shares) reaches a verifier only when it
//! reloads. [`Refresher`] does that every [`REFRESH_INTERVAL`] in each process that verifies or
//! issues tokens: it hands the revoked clients and disabled users to the
//! [`RevocationCheck`] in front of the JWT verifier, the published signing keys to the issuer
//! and the verifier, and the identity links to the external issuers' verifiers. So a revoked
//! credential's tokens fail at most one interval (plus a query) after the command, and a
//! rotated key is in every JWKS before it signs anything. A process with no background worker
//! (a Lambda function) reloads per request instead, when the last reload is older than that.

use std::sync::Arc;
use std::time::Duration;

use crate::identities::Identities;
use crate::links::Links;
use crate::revocation::RevocationCheck;
use crate::{Issuer, JwtVerifier};

/// How often every process reloads revocations and keys: the bound on how long a revoked
/// credential's tokens keep working.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

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
