//! HTTP handlers of the issuer: the token endpoint (RFC 6749 §4.3, §4.4) and discovery.
//!
//! Errors are problem documents (like every other endpoint of ours) that also carry the
//! RFC 6749 §5.2 members `error` and `error_description`, so standard OAuth clients
//! understand them too.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cashflow_http::{Problem, ProblemType};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::Issuer;
use crate::error::REALM;
use crate::identities::ClientGrant;
use crate::store::StoreError;
use crate::throttle::ThrottleKey;
use crate::{AuthError, Scope, Scopes};

/// The form of `POST /oauth2/token`. No `Debug`: it holds secrets.
#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct TokenRequest {
    /// `client_credentials` or `password`.
    grant_type: Option<String>,
    /// Space-separated scopes wanted; all those allowed when absent.
    scope: Option<String>,
    /// Client authentication in the body (`client_secret_post`); prefer HTTP Basic.
    client_id: Option<String>,
    client_secret: Option<String>,
    /// For the `password` grant.
    username: Option<String>,
    password: Option<String>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
    /// The scopes granted, space-separated.
    pub scope: String,
}

/// An RFC 6749 §5.2 error.
#[derive(Debug)]
enum OAuthError {
    /// 400: a parameter is missing, repeated or malformed.
    InvalidRequest(String),
    /// 401: the client could not be authenticated. Unknown client and wrong secret look the
    /// same, so the endpoint cannot be used to discover client ids.
    InvalidClient,
    /// 400: wrong username or password (or they do not fit the authenticated client).
    InvalidGrant,
    /// 400: a grant type we do not implement.
    UnsupportedGrantType,
    /// 400: a scope unknown or beyond what the client or user is allowed.
    InvalidScope(String),
    /// 429: too many failed attempts for this account or address; retry after the delay.
    SlowDown(Duration),
    /// 500: the store or the signer failed; the cause is logged, not returned.
    Server,
}

impl From<StoreError> for OAuthError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "identity store failed during a token request");
        OAuthError::Server
    }
}

impl From<AuthError> for OAuthError {
    fn from(error: AuthError) -> Self {
        tracing::error!(%error, "could not mint a token");
        OAuthError::Server
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            OAuthError::SlowDown(wait) => Some(retry_after_secs(*wait)),
            _ => None,
        };
        let (status, slug, title, code, description) = match self {
            OAuthError::InvalidRequest(d) => {
                (StatusCode::BAD_REQUEST, ProblemType::InvalidRequest, "Invalid token request", "invalid_request", d)
            }
            OAuthError::InvalidClient => (
                StatusCode::UNAUTHORIZED,
                ProblemType::InvalidClient,
                "Client authentication failed",
                "invalid_client",
                "Unknown client or wrong client secret".to_owned(),
            ),
            OAuthError::InvalidGrant => (
                StatusCode::BAD_REQUEST,
                ProblemType::InvalidGrant,
                "Invalid grant",
                "invalid_grant",
                "Wrong username or password".to_owned(),
            ),
            OAuthError::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                ProblemType::UnsupportedGrantType,
                "Unsupported grant type",
                "unsupported_grant_type",
                "Supported grant types: client_credentials, password".to_owned(),
            ),
            OAuthError::InvalidScope(d) => {
                (StatusCode::BAD_REQUEST, ProblemType::InvalidScope, "Invalid scope", "invalid_scope", d)
            }
            OAuthError::SlowDown(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                ProblemType::SlowDown,
                "Too many failed attempts",
                "slow_down",
                format!("Too many failed attempts; retry in {} s", retry_after_secs(wait)),
            ),
            OAuthError::Server => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ProblemType::Internal,
                "Internal server error",
                "server_error",
                "The token could not be issued; try again later".to_owned(),
            ),
        };
        let basic_challenge = code == "invalid_client";
        let problem = Problem::new(status, slug, title)
            .detail(description.clone())
            .with("error", code)
            .with("error_description", description);
        let mut response = problem.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if basic_challenge {
            if let Ok(challenge) = HeaderValue::from_str(&format!("Basic realm=\"{REALM}\"")) {
                headers.insert(header::WWW_AUTHENTICATE, challenge);
            }
        }
        response
    }
}

/// Issues an access token.
#[utoipa::path(
    post,
    path = "/oauth2/token",
    tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Token issued", body = TokenResponse),
        (status = 400, description = "invalid_request, invalid_grant, unsupported_grant_type or invalid_scope", content_type = "application/problem+json"),
        (status = 401, description = "invalid_client", content_type = "application/problem+json"),
        (status = 429, description = "slow_down: too many failed attempts for the account or the address; see `Retry-After`", content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(grant_type))]
pub(crate) async fn token(
    State(issuer): State<Arc<Issuer>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return form_problem(rejection).into_response(),
    };
    tracing::Span::current().record("grant_type", form.grant_type.as_deref().unwrap_or(""));
    let address = source_address(&issuer, peer.map(|Extension(ConnectInfo(peer))| peer.ip()), &headers);
    match issue(&issuer, &headers, address, form).await {
        Ok(body) => {
            let mut response = Json(body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => {
            tracing::info!(?error, "token request refused");
            error.into_response()
        }
    }
}

async fn issue(
    issuer: &Issuer,
    headers: &HeaderMap,
    address: Option<IpAddr>,
    form: TokenRequest,
) -> Result<TokenResponse, OAuthError> {
    let client = client_credentials(headers, &form)?;
    let (subject, client_id, merchant_id, scopes) = match form.grant_type.as_deref() {
        None | Some("") => return Err(OAuthError::InvalidRequest("missing `grant_type`".into())),
        Some("client_credentials") => {
            let Some((id, Some(secret))) = client else {
                return Err(OAuthError::InvalidClient);
            };
            let keys = throttle_keys(ThrottleKey::client(&id), address);
            let grant =
                throttled(issuer, "client_credentials", &keys, authenticate_client(issuer, &id, &secret)).await?;
            let scopes = granted(form.scope.as_deref(), grant.scopes)?;
            (grant.client_id.clone(), Some(grant.client_id), grant.merchant_id, scopes)
        }
        Some("password") => {
            let username = required(form.username.as_deref(), "username")?;
            let password = required(form.password.as_deref(), "password")?;
            let confidential = match &client {
                Some((id, Some(_))) => Some(id.as_str()),
                _ => None,
            };
            let keys = throttle_keys(ThrottleKey::user(confidential, username), address);
            let (user, client) = throttled(issuer, "password", &keys, async {
                // A confidential client may come along; a bare `client_id` (public client)
                // proves nothing, so it is not recorded in the token.
                let client = match &client {
                    Some((id, Some(secret))) => Some(authenticate_client(issuer, id, secret).await?),
                    _ => None,
                };
                let user =
                    issuer.identities().authenticate_user(username, password).await?.ok_or(OAuthError::InvalidGrant)?;
                match &client {
                    Some(client) if client.merchant_id != user.merchant_id => Err(OAuthError::InvalidGrant),
                    _ => Ok((user, client)),
                }
            })
            .await?;
            let mut allowed = user.scopes;
            if let Some(client) = &client {
                allowed = allowed.intersection(client.scopes);
            }
            let scopes = granted(form.scope.as_deref(), allowed)?;
            (user.username, client.map(|c| c.client_id), user.merchant_id, scopes)
        }
        Some(_) => return Err(OAuthError::UnsupportedGrantType),
    };
    let (access_token, expires_in) = issuer.mint_token(&subject, client_id.as_deref(), merchant_id, scopes)?;
    tracing::info!(%subject, %merchant_id, %scopes, "token issued");
    Ok(TokenResponse { access_token, token_type: "Bearer", expires_in, scope: scopes.to_string() })
}

/// Runs `authenticate` unless one of `keys` is throttled (then nothing is verified, no hash
/// is computed), and counts its failure under every key or clears the account's count.
async fn throttled<T>(
    issuer: &Issuer,
    grant: &'static str,
    keys: &[ThrottleKey],
    authenticate: impl std::future::Future<Output = Result<T, OAuthError>>,
) -> Result<T, OAuthError> {
    if let Some(wait) = issuer.throttle.wait(keys).await? {
        failure(grant, "throttled", keys);
        return Err(OAuthError::SlowDown(wait));
    }
    let result = authenticate.await;
    match &result {
        Ok(_) => issuer.throttle.succeeded(keys).await?,
        Err(OAuthError::InvalidClient) => {
            failure(grant, "invalid_client", keys);
            issuer.throttle.failed(keys).await?;
        }
        Err(OAuthError::InvalidGrant) => {
            failure(grant, "invalid_grant", keys);
            issuer.throttle.failed(keys).await?;
        }
        Err(_) => {}
    }
    result
}

/// Counts and logs a refused authentication. The keys name the account and address; the
/// secret or password is never logged.
fn failure(grant: &'static str, reason: &'static str, keys: &[ThrottleKey]) {
    metrics::counter!("cashflow_auth_failures_total", "grant" => grant, "reason" => reason).increment(1);
    // Attempts refused by the throttle are counted, not each logged: under attack they come in
    // thousands per second.
    if reason == "throttled" {
        tracing::debug!(grant, reason, keys = ?keys, "token request refused");
    } else {
        tracing::warn!(grant, reason, keys = ?keys, "token request refused");
    }
}

fn throttle_keys(account: ThrottleKey, address: Option<IpAddr>) -> Vec<ThrottleKey> {
    let mut keys = vec![account];
    keys.extend(address.map(|ip| ThrottleKey::Address(ip.to_string())));
    keys
}

/// The address a token request comes from: the peer's, or behind a trusted proxy the last
/// `X-Forwarded-For` entry (the one that proxy appended; earlier ones are the client's word).
fn source_address(issuer: &Issuer, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    if !issuer.config().trust_forwarded_for {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .next_back()
        .and_then(|ip| ip.trim().parse().ok());
    forwarded.or(peer)
}

/// Whole seconds, rounded up, and at least one: `Retry-After: 0` would invite a retry storm.
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1)
}

async fn authenticate_client(issuer: &Issuer, id: &str, secret: &str) -> Result<ClientGrant, OAuthError> {
    issuer.identities().authenticate_client(id, secret).await?.ok_or(OAuthError::InvalidClient)
}

fn required<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str, OAuthError> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| OAuthError::InvalidRequest(format!("missing `{name}`")))
}

/// The scopes to grant: those requested, if all are allowed; all allowed ones if none are.
fn granted(requested: Option<&str>, allowed: Scopes) -> Result<Scopes, OAuthError> {
    let requested =
        Scopes::parse_list(requested.unwrap_or_default()).map_err(|e| OAuthError::InvalidScope(e.to_string()))?;
    if requested.is_empty() {
        return Ok(allowed);
    }
    match requested.iter().find(|scope| !allowed.contains(*scope)) {
        Some(scope) => Err(OAuthError::InvalidScope(format!("scope `{scope}` is not allowed for this client"))),
        None => Ok(requested),
    }
}

/// The client id and secret, from HTTP Basic (`client_secret_basic`) or the form
/// (`client_secret_post`). Using both at once is an error (RFC 6749 §2.3).
fn client_credentials(
    headers: &HeaderMap,
    form: &TokenRequest,
) -> Result<Option<(String, Option<String>)>, OAuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let (id, secret) = basic_credentials(value).ok_or(OAuthError::InvalidClient)?;
        if form.client_secret.is_some() {
            return Err(OAuthError::InvalidRequest("use one client authentication method, not two".into()));
        }
        if form.client_id.as_deref().is_some_and(|form_id| form_id != id) {
            return Err(OAuthError::InvalidRequest("`client_id` differs from the authenticated client".into()));
        }
        return Ok(Some((id, Some(secret))));
    }
    match (&form.client_id, &form.client_secret) {
        (Some(id), secret) => Ok(Some((id.clone(), secret.clone()))),
        (None, Some(_)) => Err(OAuthError::InvalidRequest("`client_secret` without `client_id`".into())),
        (None, None) => Ok(None),
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let (scheme, encoded) = value.to_str().ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut input = s.bytes();
    while let Some(b) = input.next() {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hi = char::from(input.next()?).to_digit(16)?;
                let lo = char::from(input.next()?).to_digit(16)?;
                bytes.push(u8::try_from(hi * 16 + lo).ok()?);
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).ok()
}

fn form_problem(rejection: FormRejection) -> OAuthError {
    match rejection {
        FormRejection::InvalidFormContentType(_) => {
            OAuthError::InvalidRequest("the body must be `application/x-www-form-urlencoded`".into())
        }
        other => OAuthError::InvalidRequest(format!("malformed form: {}", other.body_text())),
    }
}

/// The issuer's public keys.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", responses((status = 200, description = "JSON Web Key Set")))]
pub(crate) async fn jwks(State(issuer): State<Arc<Issuer>>) -> Response {
    let mut response = Json(issuer.jwks()).into_response();
    // Verifiers may cache it a little; a rotation is announced ahead of use.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// Discovery metadata (OpenID Connect Discovery / RFC 8414).
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "auth", responses((status = 200, description = "Authorization server metadata")))]
pub(crate) async fn openid_configuration(State(issuer): State<Arc<Issuer>>) -> Json<Value> {
    let config = issuer.config();
    let base = config.base_url();
    Json(json!({
        "issuer": config.issuer,
        "token_endpoint": format!("{base}/oauth2/token"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials", "password"],
        "scopes_supported": Scope::ALL.map(Scope::as_str),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
        "response_types_supported": [],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_handles_plus_and_percent_escapes() {
        assert_eq!(form_decode("a+b%3Ac%25").as_deref(), Some("a b:c%"));
        assert_eq!(form_decode("plain").as_deref(), Some("plain"));
        assert_eq!(form_decode("%zz"), None);
        assert_eq!(form_decode("%4"), None);
    }

    #[test]
    fn basic_credentials_are_split_at_the_first_colon_and_decoded() {
        let value = HeaderValue::from_str(&format!("basic {}", STANDARD.encode("cf_x:s%3Ae:cret"))).unwrap();
        assert_eq!(basic_credentials(&value), Some(("cf_x".into(), "s:e:cret".into())));
        assert_eq!(basic_credentials(&HeaderValue::from_static("Bearer abc")), None);
        assert_eq!(basic_credentials(&HeaderValue::from_static("Basic !!!")), None);
    }
}
