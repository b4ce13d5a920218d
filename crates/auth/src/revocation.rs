//! Revocable credentials: what makes a revoked client's or disabled user's outstanding tokens,
//! and a rotated-out signing key, stop working in every process.
//!
//! JWTs are checked without asking anyone, so a revocation only reaches a verifier when it
//! reloads: [`crate::refresh::Refresher`] hands the [`RevocationCheck`] in front of the JWT
//! verifier the [`Revocations`] it reads from the identity store.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError, RwLock};

use crate::{AuthError, Principal, TokenVerifier};

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
