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
//! algorithms (never HMAC, never `none`), `iss`, `aud`, `exp` and `nbf`. Amazon Cognito drops
//! in by configuration only (its issuer URL, its JWKS, RS256, and a merchant claim such as
//! `custom:merchant_id`); the built-in [`issuer`] is a small stand-in that mints the same kind
//! of token, so local runs exercise exactly the checks production does.
//!
//! # Layout
//! - [`scope`]: [`Scope`] and [`Scopes`], the permissions a token carries.
//! - [`principal`]: [`Principal`], its axum extractor and [`Principal::require`].
//! - [`verifier`]: [`TokenVerifier`] and the JWT/JWKS implementation [`JwtVerifier`].
//! - [`error`]: [`AuthError`], rendered as 401/403 problems with `WWW-Authenticate`.
//! - [`issuer`]: the built-in authorization server (`/oauth2/token`, JWKS, discovery).
//! - [`store`]: clients, users and the signing key of the built-in issuer, in SQLite or
//!   Postgres.

// Tests may unwrap: a panic is how they fail. The library build is still linted strictly.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod error;
pub mod issuer;
pub mod principal;
pub mod scope;
pub mod store;
pub mod verifier;

pub use error::AuthError;
pub use issuer::{Issuer, IssuerConfig, SigningKey};
pub use principal::{bearer_token, Principal};
pub use scope::{Scope, Scopes, UnknownScope};
pub use store::PostgresIdentityStore;
pub use store::{ClientGrant, IdentityStore, NewClient, SqliteIdentityStore, StoreError, UserGrant};
pub use verifier::{JwtVerifier, TokenVerifier, VerifierConfig};
