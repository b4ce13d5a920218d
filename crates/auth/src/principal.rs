//! Who is calling: the verified identity behind a request, and the axum extractor that
//! produces it from `Authorization: Bearer <jwt>`.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use cashflow_domain::MerchantId;

use crate::{AuthError, Scope, Scopes, TokenVerifier};

/// The verified caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The tenant the token is bound to: every read and write is confined to it.
    pub merchant_id: MerchantId,
    /// The token's `sub` (a username or client id), for audit logs.
    pub subject: String,
    /// The OAuth client the token was issued to (its `client_id` claim), if it says.
    pub client_id: Option<String>,
    /// What the token allows.
    pub scopes: Scopes,
}

impl Principal {
    /// `Ok` when the token carries `scope`, else the 403 to return.
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(AuthError::InsufficientScope(scope))
        }
    }
}

/// Verifies the bearer token with the state's `Arc<dyn TokenVerifier>`.
///
/// Handlers then call [`Principal::require`] for the scope they need; keeping that explicit in
/// each handler makes the permission visible where the operation is.
impl<S> FromRequestParts<S> for Principal
where
    Arc<dyn TokenVerifier>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<dyn TokenVerifier>::from_ref(state);
        let token = bearer_token(&parts.headers)?;
        let span =
            cashflow_http::context::request_span("auth.verify_token", || tracing::debug_span!("auth.verify_token"));
        span.run(verifier.verify_async(token)).await
    }
}

/// The token of `Authorization: Bearer <token>`. The scheme is case-insensitive (RFC 7235);
/// another scheme, or none, counts as no token at all (RFC 6750 §3.1).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AuthError::MissingToken);
    };
    let value =
        value.to_str().map_err(|_| AuthError::InvalidToken("authorization header is not visible ASCII".into()))?;
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Err(AuthError::MissingToken);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// Accepts exactly one token, `good`, for a fixed merchant with read access.
    struct FixedVerifier(MerchantId);

    impl TokenVerifier for FixedVerifier {
        fn verify(&self, token: &str) -> Result<Principal, AuthError> {
            if token == "good" {
                Ok(Principal {
                    merchant_id: self.0,
                    subject: "tester".into(),
                    client_id: None,
                    scopes: Scope::EntriesRead.into(),
                })
            } else {
                Err(AuthError::InvalidToken("not the good token".into()))
            }
        }
    }

    async fn whoami(principal: Principal) -> Result<String, AuthError> {
        principal.require(Scope::EntriesRead)?;
        Ok(principal.merchant_id.to_string())
    }

    async fn write(principal: Principal) -> Result<&'static str, AuthError> {
        principal.require(Scope::EntriesWrite)?;
        Ok("written")
    }

    fn app(merchant: MerchantId) -> Router {
        let verifier: Arc<dyn TokenVerifier> = Arc::new(FixedVerifier(merchant));
        Router::new().route("/me", get(whoami)).route("/write", get(write)).with_state(verifier)
    }

    async fn call(app: Router, uri: &str, authorization: Option<&str>) -> axum::response::Response {
        let mut request = Request::get(uri);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
    }

    async fn json(response: axum::response::Response) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn challenge(response: &axum::response::Response) -> &str {
        response.headers().get(header::WWW_AUTHENTICATE).unwrap().to_str().unwrap()
    }

    #[tokio::test]
    async fn given_no_authorization_header_when_calling_then_401_with_a_bearer_challenge() {
        let response = call(app(MerchantId::new()), "/me", None).await;

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&response), r#"Bearer realm="cashflow""#);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        let body = json(response).await;
        assert_eq!(body["type"], "/problems/unauthorized");
        assert_eq!(body["title"], "Authentication required");
    }

    #[tokio::test]
    async fn given_a_basic_scheme_when_calling_then_401_as_if_no_token_was_sent() {
        let response = call(app(MerchantId::new()), "/me", Some("Basic Z29vZDpnb29k")).await;

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&response), r#"Bearer realm="cashflow""#);
    }

    #[tokio::test]
    async fn given_an_invalid_token_when_calling_then_401_invalid_token_without_the_reason() {
        let response = call(app(MerchantId::new()), "/me", Some("Bearer forged")).await;

        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(challenge(&response), r#"Bearer realm="cashflow", error="invalid_token""#);
        let body = json(response).await.to_string();
        assert!(body.contains("Invalid or expired token"));
        assert!(!body.contains("not the good token"), "internal reason leaked: {body}");
        assert!(!body.contains("forged"), "token leaked: {body}");
    }

    #[tokio::test]
    async fn given_a_valid_token_with_a_lowercase_scheme_when_calling_then_the_principal_is_extracted() {
        let merchant = MerchantId::new();
        let response = call(app(merchant), "/me", Some("bearer good")).await;

        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(bytes, merchant.to_string().as_bytes());
    }

    #[tokio::test]
    async fn given_a_token_without_the_needed_scope_when_calling_then_403_naming_the_scope() {
        let response = call(app(MerchantId::new()), "/write", Some("Bearer good")).await;

        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(challenge(&response), r#"Bearer error="insufficient_scope", scope="entries:write""#);
        let body = json(response).await;
        assert_eq!(body["type"], "/problems/insufficient-scope");
        assert_eq!(body["scope"], "entries:write");
    }
}
