//! OAuth 2.0 for cashflow: the resource-server side every service uses to check access
//! tokens, and a built-in authorization server for running without a cloud identity provider.
//!
//! Every API call carries `Authorization: Bearer <jwt>`. The [`Principal`] extractor verifies
//! the token and yields the merchant it is bound to and the [`Scopes`] it grants; handlers then
//! [`Principal::require`] the scope they need. A merchant can only ever see its own books
//! because the merchant id comes from the signed token, never from the request.
//!
//! Verification is the production path whichever issuer signed the token: [`JwtVerifier`]
//! checks the signature against a JWKS key chosen by `kid`, an allow-list of asymmetric
//! algorithms (never HMAC, never `none`), `iss`, `aud`, `exp` and `nbf`, for the built-in
//! [`issuer`]'s tokens. External OpenID Connect issuers (Amazon Cognito) are trusted by
//! configuration: [`TrustedIssuers`] routes each token by its `iss` to the built-in verifier
//! or to an [`OidcVerifier`], which checks Cognito's shape of token (`token_use`, `client_id`
//! or `aud` against the accepted app clients, groups and resource-server scopes) against keys
//! fetched from the issuer's JWKS URL and cached ([`jwks`]). A token without the merchant
//! claim resolves its merchant through an identity link ([`links`]).
//!
//! # Layout
//! - [`scope`]: [`Scope`] and [`Scopes`], the permissions a token carries.
//! - [`principal`]: [`Principal`], its axum extractor and [`Principal::require`].
//! - [`verifier`]: [`TokenVerifier`] and the JWT/JWKS implementation [`JwtVerifier`].
//! - [`oidc`]: [`TrustedIssuers`] and [`OidcVerifier`], external issuers such as Cognito.
//! - [`jwks`]: [`JwksCache`], an external issuer's keys, fetched, cached and refreshed.
//! - [`error`]: [`AuthError`], rendered as 401/403 problems with `WWW-Authenticate`.
//! - [`issuer`]: the built-in authorization server (`/oauth2/token`, JWKS, discovery).
//! - [`identities`]: [`Identities`], the credential checks (secrets, passwords, scopes), once
//!   for every backend.
//! - [`store`]: the rows of clients, users and signing keys, in SQLite or Postgres.
//! - [`links`]: [`Links`], the merchant of an external subject or machine client whose tokens
//!   carry no merchant claim (`cashflow identity link`).
//! - [`revocation`]: the check that refuses the tokens of revoked clients and disabled users.
//! - [`refresh`]: revocations, rotated keys and identity links reach every process's verifier
//!   within [`REFRESH_INTERVAL`].
//! - [`throttle`]: failed token requests counted per account and address, and the delay
//!   they earn.
//! - [`key`]: [`SigningKey`], the Ed25519 key the issuer signs with and the store keeps.

// Tests may unwrap: a panic is how they fail. The library build is still linted strictly.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod credentials;
pub mod error;
pub mod identities;
pub mod issuer;
pub mod jwks;
pub mod key;
pub mod links;
pub mod oidc;
pub mod principal;
pub mod refresh;
pub mod revocation;
pub mod scope;
pub mod store;
pub mod throttle;
pub mod verifier;

pub use error::AuthError;
pub use identities::{ClientGrant, Identities, NewClient, UserGrant};
pub use issuer::{Issuer, IssuerConfig};
pub use jwks::{JwksCache, JwksError};
pub use key::{KeyError, SigningKey};
pub use links::{IdentityLink, LinkKind, Links};
pub use oidc::{IdToken, OidcPolicy, OidcVerifier, TrustedIssuers, WebClient, WebEndpoints};
pub use principal::{bearer_token, Principal};
pub use refresh::{Refresher, REFRESH_INTERVAL};
pub use revocation::{RevocationCheck, Revocations};
pub use scope::{Scope, Scopes, UnknownScope};
pub use store::{IdentityStore, PostgresIdentityStore, SqliteIdentityStore, StoreError};
pub use throttle::{ThrottleConfig, ThrottlePolicy};
pub use verifier::{JwtVerifier, TokenVerifier, VerifierConfig};
