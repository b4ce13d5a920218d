//! Why a request was not authorized, and how that looks on the wire (RFC 6750 §3).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cashflow_http::{Problem, ProblemType};

use crate::Scope;

/// The realm in every `WWW-Authenticate` challenge.
pub const REALM: &str = "cashflow";

/// An authentication or authorization failure.
///
/// The reasons carried by [`AuthError::InvalidToken`] and the 500 variants are for logs: the
/// response tells the client only what it can act on, never why a signature failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// 401: the request carries no bearer token.
    #[error("no bearer token")]
    MissingToken,
    /// 401: a token was sent but is malformed, forged, expired or not meant for us.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// 401: the token is valid but names no merchant: no merchant claim and no identity link
    /// for its subject or client. The message says which claim and link are missing, for the
    /// caller (it only echoes what the verified token says).
    #[error("{0}")]
    NoMerchant(String),
    /// 403: the token is valid but lacks a scope the operation needs.
    #[error("the token lacks the `{0}` scope")]
    InsufficientScope(Scope),
    /// 500: the verifier or issuer is misconfigured (HMAC algorithms, no usable key, ...).
    #[error("authentication misconfigured: {0}")]
    Config(String),
    /// 500: something failed while minting a token.
    #[error("authentication failure: {0}")]
    Internal(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (problem, challenge) = match &self {
            AuthError::MissingToken => (
                Problem::new(StatusCode::UNAUTHORIZED, ProblemType::Unauthorized, "Authentication required")
                    .detail("Send an OAuth 2.0 access token: `Authorization: Bearer <token>`"),
                format!("Bearer realm=\"{REALM}\""),
            ),
            AuthError::InvalidToken(reason) => {
                tracing::debug!(%reason, "rejected bearer token");
                (
                    Problem::new(StatusCode::UNAUTHORIZED, ProblemType::Unauthorized, "Invalid or expired token")
                        .detail("The access token is invalid or has expired; obtain a new one"),
                    format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
                )
            }
            AuthError::NoMerchant(missing) => (
                Problem::new(StatusCode::UNAUTHORIZED, ProblemType::Unauthorized, "No merchant for this identity")
                    .detail(missing.clone()),
                format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
            ),
            AuthError::InsufficientScope(scope) => (
                Problem::new(StatusCode::FORBIDDEN, ProblemType::InsufficientScope, "Insufficient scope")
                    .detail(format!("This operation requires the `{scope}` scope"))
                    .with("scope", scope.as_str()),
                format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\""),
            ),
            AuthError::Config(_) | AuthError::Internal(_) => {
                tracing::error!(error = %self, "authentication failed internally");
                return Problem::internal().into_response();
            }
        };
        let mut response = problem.into_response();
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
