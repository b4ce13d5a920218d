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
//! algorithms (never HMAC, never `none`), `iss`, `aud`, `exp` and `nbf`. The verifier itself
//! is ready for Amazon Cognito (RS256 keys, a configurable merchant claim such as
//! `custom:merchant_id`, `token_use`), but nothing wires it yet: the binary always runs the
//! built-in [`issuer`] and verifies against its keys, and fetching a remote JWKS is not
//! implemented. The built-in issuer mints the same kind of token Cognito would, so local runs
//! exercise exactly the checks production would.
//!
//! # Layout
//! - [`scope`]: [`Scope`] and [`Scopes`], the permissions a token carries.
//! - [`principal`]: [`Principal`], its axum extractor and [`Principal::require`].
//! - [`verifier`]: [`TokenVerifier`] and the JWT/JWKS implementation [`JwtVerifier`].
//! - [`error`]: [`AuthError`], rendered as 401/403 problems with `WWW-Authenticate`.
//! - [`issuer`]: the built-in authorization server (`/oauth2/token`, JWKS, discovery).
//! - [`identities`]: [`Identities`], the credential checks (secrets, passwords, scopes), once
//!   for every backend.
//! - [`store`]: the rows of clients, users and signing keys, in SQLite or Postgres.
//! - [`revocation`]: revoked clients, disabled users and rotated keys reach every process's
//!   verifier within [`REFRESH_INTERVAL`].
//! - [`throttle`]: failed token requests counted per account and address, and the delay
//!   they earn.
//! - [`key`]: [`SigningKey`], the Ed25519 key the issuer signs with and the store keeps.

// Tests may unwrap: a panic is how they fail. The library build is still linted strictly.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod credentials;
pub mod error;
pub mod identities;
pub mod issuer;
pub mod key;
pub mod principal;
pub mod revocation;
pub mod scope;
pub mod store;
pub mod throttle;
pub mod verifier;

pub use error::AuthError;
pub use identities::{ClientGrant, Identities, NewClient, UserGrant};
pub use issuer::{Issuer, IssuerConfig};
pub use key::{KeyError, SigningKey};
pub use principal::{bearer_token, Principal};
pub use revocation::{Refresher, RevocationCheck, Revocations, REFRESH_INTERVAL};
pub use scope::{Scope, Scopes, UnknownScope};
pub use store::{IdentityStore, PostgresIdentityStore, SqliteIdentityStore, StoreError};
pub use throttle::{ThrottleConfig, ThrottlePolicy};
pub use verifier::{JwtVerifier, TokenVerifier, VerifierConfig};
