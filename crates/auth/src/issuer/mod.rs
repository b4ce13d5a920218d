//! The built-in OAuth 2.0 authorization server: an embedded stand-in for Cognito.
//!
//! It issues the same kind of token Cognito would (a signed JWT access token with `iss`,
//! `aud`, `exp`, `scope` and the merchant claim) and publishes its key the same way (a JWKS
//! document), so the services verify its tokens with the production [`crate::JwtVerifier`].
//!
//! Endpoints ([`router`]):
//! - `POST /oauth2/token`: `client_credentials` (machines) and `password` (people) grants;
//! - `GET /.well-known/jwks.json`: the public key;
//! - `GET /.well-known/openid-configuration`: discovery metadata.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::routing::{get, post};
use axum::Router;
use cashflow_domain::MerchantId;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::identities::Identities;
use crate::key::SigningKey;
use crate::store::KeyRecord;
use crate::throttle::{Throttle, ThrottleConfig};
use crate::verifier::{DEFAULT_LEEWAY_SECS, DEFAULT_MERCHANT_CLAIM};
use crate::{AuthError, JwtVerifier, Scopes, VerifierConfig};

mod endpoint;

pub use endpoint::TokenResponse;

/// The issuer's identity and token lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The `iss` of minted tokens and the base URL of the endpoints, e.g.
    /// `http://127.0.0.1:8080`.
    pub issuer: String,
    /// The `aud` of minted tokens: the API's identifier (`cashflow`).
    pub audience: String,
    /// How long a token is valid. Short: a rotated-out key stays published this long, and
    /// revocation reaches verifiers only at their next reload ([`crate::refresh`]).
    pub token_ttl: Duration,
    /// How failed token requests are slowed down.
    pub throttle: ThrottleConfig,
    /// Take the source address of a token request from the last `X-Forwarded-For` entry (the
    /// one the proxy in front appended) instead of the peer address. Only behind a proxy that
    /// sets it: otherwise a client could claim any address.
    pub trust_forwarded_for: bool,
}

impl IssuerConfig {
    /// Default token lifetime: one hour, like Cognito's default.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

    /// A config with the default lifetime.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            token_ttl: Self::DEFAULT_TTL,
            throttle: ThrottleConfig::default(),
            trust_forwarded_for: false,
        }
    }

    /// `issuer` without a trailing slash, to append endpoint paths to.
    fn base_url(&self) -> &str {
        self.issuer.trim_end_matches('/')
    }
}

impl Default for IssuerConfig {
    fn default() -> Self {
        Self::new("http://127.0.0.1:8080", "cashflow")
    }
}

/// Mints access tokens for the identities in its store.
pub struct Issuer {
    config: IssuerConfig,
    /// The published keys, oldest activation first; replaced by [`Issuer::set_keys`].
    keys: RwLock<Arc<[KeyRecord]>>,
    identities: Arc<Identities>,
    /// Counts failed token requests in the identity store.
    throttle: Throttle,
}

/// The claims of a minted access token (RFC 9068 plus our merchant claim).
#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    nbf: u64,
    jti: String,
    scope: String,
    merchant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
}

impl Issuer {
    /// An issuer signing with `key` and authenticating against `identities`.
    pub fn new(config: IssuerConfig, key: SigningKey, identities: Arc<Identities>) -> Self {
        let throttle = Throttle::new(Arc::clone(identities.store()), config.throttle);
        let keys = RwLock::new(Arc::from([KeyRecord { key, activates_at_ms: 0, retires_at_ms: None }]));
        Self { config, keys, identities, throttle }
    }

    /// Replaces the published keys (after a rotation); `false`, changing nothing, when they
    /// are the same keys or none.
    pub fn set_keys(&self, keys: Vec<KeyRecord>) -> bool {
        let mut current = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let kids =
            |keys: &[KeyRecord]| keys.iter().map(|k| (k.key.kid().to_owned(), k.activates_at_ms)).collect::<Vec<_>>();
        if keys.is_empty() || kids(&keys) == kids(&current) {
            return false;
        }
        *current = keys.into();
        true
    }

    fn published(&self) -> Arc<[KeyRecord]> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The key that signs now: the latest activated one (the oldest if none is yet).
    fn signing_key(&self, now_ms: i64) -> Option<SigningKey> {
        let keys = self.published();
        let active = keys.iter().filter(|k| k.activates_at_ms <= now_ms).max_by_key(|k| k.activates_at_ms);
        active.or_else(|| keys.first()).map(|k| k.key.clone())
    }

    /// The issuer's settings.
    pub fn config(&self) -> &IssuerConfig {
        &self.config
    }

    /// The identities it authenticates.
    pub fn identities(&self) -> &Arc<Identities> {
        &self.identities
    }

    /// The public keys, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: self.published().iter().map(|k| k.key.public_jwk()).collect() }
    }

    /// The verifier settings matching this issuer's tokens.
    pub fn verifier_config(&self) -> VerifierConfig {
        VerifierConfig {
            issuer: self.config.issuer.clone(),
            audience: self.config.audience.clone(),
            algorithms: vec![Algorithm::EdDSA],
            merchant_claim: DEFAULT_MERCHANT_CLAIM.to_owned(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    /// A verifier for this issuer's tokens, for the embedded deployment where one process both
    /// issues and verifies.
    pub fn verifier(&self) -> Result<JwtVerifier, AuthError> {
        JwtVerifier::new(self.verifier_config(), self.jwks())
    }

    /// Mints an access token for `subject` acting for `merchant_id`. Returns the JWT and its
    /// lifetime in seconds.
    pub fn mint(&self, subject: &str, merchant_id: MerchantId, scopes: Scopes) -> Result<(String, u64), AuthError> {
        self.mint_token(subject, None, merchant_id, scopes)
    }

    /// [`Issuer::mint`], recording the OAuth client the token was issued to.
    pub(crate) fn mint_token(
        &self,
        subject: &str,
        client_id: Option<&str>,
        merchant_id: MerchantId,
        scopes: Scopes,
    ) -> Result<(String, u64), AuthError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| AuthError::Internal("system clock is before 1970".into()))?
            .as_secs();
        let ttl = self.config.token_ttl.as_secs();
        let claims = AccessClaims {
            iss: &self.config.issuer,
            sub: subject,
            aud: &self.config.audience,
            exp: now.saturating_add(ttl),
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: scopes.to_string(),
            merchant_id: merchant_id.to_string(),
            client_id,
        };
        let key = self
            .signing_key(crate::identities::now_ms())
            .ok_or_else(|| AuthError::Internal("no signing key".into()))?;
        let header = Header {
            // RFC 9068: JWT access tokens are typed, so they cannot be mistaken for ID tokens.
            typ: Some("at+jwt".into()),
            kid: Some(key.kid().to_owned()),
            ..Header::new(Algorithm::EdDSA)
        };
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(key.pkcs8_der()))
            .map_err(|e| AuthError::Internal(format!("could not sign a token: {e}")))?;
        Ok((token, ttl))
    }
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self.published().iter().map(|k| k.key.kid().to_owned()).collect();
        f.debug_struct("Issuer").field("config", &self.config).field("kids", &kids).finish_non_exhaustive()
    }
}

/// The issuer's part of the OpenAPI document: how a client gets a token.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(endpoint::token, endpoint::jwks, endpoint::openid_configuration),
    components(schemas(endpoint::TokenRequest, TokenResponse))
)]
pub struct AuthApi;

/// The issuer's endpoints: `POST /oauth2/token`, `GET /.well-known/jwks.json` and
/// `GET /.well-known/openid-configuration`.
pub fn router(issuer: Arc<Issuer>) -> Router {
    Router::new()
        .route("/oauth2/token", post(endpoint::token))
        .route("/.well-known/jwks.json", get(endpoint::jwks))
        .route("/.well-known/openid-configuration", get(endpoint::openid_configuration))
        .with_state(issuer)
}

#[cfg(test)]
mod tests;
