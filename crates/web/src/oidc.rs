//! Signing in through an OpenID Provider's hosted UI (Amazon Cognito's): the authorization
//! code flow with PKCE (RFC 7636, `S256` only), ending in the same session as the built-in
//! issuer's password sign-in.
//!
//! `GET /auth/start` makes a [`Flow`] (random `state`, `nonce` and PKCE verifier), seals it into
//! a short-lived cookie ([`crate::session`]) and sends the browser to the provider with the
//! verifier's challenge. The provider sends it back to `GET /auth/callback` with a code; the
//! callback opens the flow from the cookie (so only the browser that started a sign-in can
//! finish it), checks `state`, exchanges the code and the verifier at the token endpoint (HTTP
//! Basic for a confidential app client), verifies the ID token (issuer, client, expiry,
//! `nonce`) with the issuer's keys, and the access token with the API's own verifier: what
//! that verifier grants (groups, resource-server scopes, an identity link's cap) is what the
//! pages show and what the API allows, because it is the same verifier. Nothing of the flow is
//! kept on the server: it travels in the cookie, sealed under the process's key like the CSRF
//! tokens, so a sign-in completes on the process that started it.
//!
//! The endpoints come from the provider's discovery document (fetched on the first sign-in and
//! kept), or from a Cognito hosted UI domain, whose logout endpoint takes Cognito's own
//! parameters.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cashflow_auth::oidc::{WebClient, WebEndpoints};
use cashflow_auth::{AuthError, OidcVerifier, Principal, TokenVerifier};
use ring::digest::{digest, SHA256};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::api::percent_encode;
use crate::session::{random_token, Sessions, FLOW_MAX_AGE_SECS};

/// How long a call to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sealed flow cookie is sealed for.
const FLOW_PURPOSE: &str = "oidc-flow";

/// Why a sign-in through the provider did not end in a session. Each is a page for the person
/// signing in (never a 5xx for what a browser or the provider's answer caused).
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// No flow cookie, a flow of another process or too old, or a `state` that is not the
    /// flow's: the callback was not the answer to a sign-in this browser started here.
    #[error("the callback is not the answer to this browser's sign-in")]
    State,
    /// The provider answered the authorization request with an error (`access_denied` when the
    /// person declined).
    #[error("the provider refused the sign-in: {0}")]
    Denied(String),
    /// The token endpoint refused the code: expired, used already, or not bound to this
    /// flow's PKCE verifier (`invalid_grant`).
    #[error("the code was refused: {0}")]
    Code(String),
    /// The tokens did not verify (issuer, client, expiry, nonce, signature).
    #[error("the tokens did not verify: {0}")]
    Tokens(String),
    /// The access token verified but names no merchant: no merchant claim and no identity link.
    #[error("no merchant for this identity")]
    NotLinked(String),
    /// The provider could not be reached or answered something that is not OAuth.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
}

/// The secrets of one sign-in in progress, sealed into the flow cookie.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Sent to the provider and back: the callback belongs to this flow.
    pub state: String,
    /// Sent to the provider, which writes it into the ID token: the ID token is this flow's.
    pub nonce: String,
    /// The PKCE verifier: only its hash goes to the provider; the verifier itself only to the
    /// token endpoint, so an intercepted code is useless without this cookie.
    pub verifier: String,
    /// When the flow started (seconds since the epoch).
    pub started: i64,
}

impl Flow {
    /// A fresh flow: 256 random bits each (the verifier is 43 characters, RFC 7636's minimum).
    pub fn new() -> Self {
        Self {
            state: random_token(),
            nonce: random_token(),
            verifier: random_token(),
            started: chrono::Utc::now().timestamp(),
        }
    }

    /// The `S256` code challenge of the verifier.
    pub fn challenge(&self) -> String {
        pkce_challenge(&self.verifier)
    }

    /// The flow sealed for its cookie.
    pub fn seal(&self, sessions: &Sessions) -> Option<String> {
        sessions.seal(FLOW_PURPOSE, &serde_json::to_vec(self).ok()?)
    }

    /// The flow of a cookie sealed by this process, if it is not older than the cookie's life.
    pub fn open(sessions: &Sessions, sealed: &str) -> Option<Self> {
        let flow: Flow = serde_json::from_slice(&sessions.open(FLOW_PURPOSE, sealed)?).ok()?;
        let age = chrono::Utc::now().timestamp().saturating_sub(flow.started);
        (0..=i64::try_from(FLOW_MAX_AGE_SECS).unwrap_or(i64::MAX)).contains(&age).then_some(flow)
    }

    /// Whether the callback's `state` is this flow's (constant time).
    pub fn state_is(&self, state: &str) -> bool {
        let (ours, theirs) = (self.state.as_bytes(), state.as_bytes());
        ours.len() == theirs.len() && ours.iter().zip(theirs).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
    }
}

impl Default for Flow {
    fn default() -> Self {
        Self::new()
    }
}

/// `BASE64URL(SHA256(verifier))`, the `S256` code challenge (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()))
}

/// The provider's endpoints.
#[derive(Debug, Clone)]
struct Endpoints {
    authorization: String,
    token: String,
    logout: Option<Logout>,
}

/// Where signing out of the provider goes, and in which dialect.
#[derive(Debug, Clone)]
enum Logout {
    /// Cognito's `/logout?client_id=…&logout_uri=…`.
    Cognito(String),
    /// OpenID Connect RP-initiated logout: `end_session_endpoint?client_id=…&post_logout_redirect_uri=…`.
    EndSession(String),
}

/// The part of a discovery document the sign-in uses.
#[derive(Deserialize)]
struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
    end_session_endpoint: Option<String>,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub id_token: Option<String>,
    /// Seconds the access token lives; the session lives as long.
    pub expires_in: Option<u64>,
}

/// The token endpoint's error (RFC 6749 §5.2).
#[derive(Deserialize)]
struct TokenError {
    error: String,
}

/// A session made by a completed sign-in.
#[derive(Debug)]
pub struct Signed {
    /// The access token: the session cookie's value, what every API call of the pages carries.
    pub access_token: String,
    /// How long the session lives: the access token's lifetime.
    pub max_age_secs: u64,
    /// What the API's verifier made of the access token.
    pub principal: Principal,
}

/// The app client the web app signs people in with, and what it needs to do so.
pub struct OidcSignIn {
    client: WebClient,
    /// `{public URL}/auth/callback`, registered at the provider.
    redirect_uri: String,
    /// `{public URL}/signin`, where the provider's logout sends the browser back.
    after_logout_uri: String,
    http: reqwest::Client,
    endpoints: tokio::sync::OnceCell<Endpoints>,
    /// The verifier of the client's issuer, for ID tokens.
    id_tokens: Arc<OidcVerifier>,
    /// The API's verifier, for access tokens.
    access_tokens: Arc<dyn TokenVerifier>,
}

impl OidcSignIn {
    /// Signs in with `client` for the app served at `public_url`; ID tokens verified by
    /// `id_tokens` (the client's issuer's verifier), access tokens by the API's verifier.
    pub fn new(
        client: WebClient,
        public_url: &str,
        id_tokens: Arc<OidcVerifier>,
        access_tokens: Arc<dyn TokenVerifier>,
    ) -> Result<Self, SignInError> {
        let base = public_url.trim_end_matches('/');
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            // The token endpoint answers directly; a redirect there is not OAuth.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SignInError::Unavailable(e.to_string()))?;
        Ok(Self {
            redirect_uri: format!("{base}{}", crate::session::FLOW_PATH),
            after_logout_uri: format!("{base}/signin"),
            client,
            http,
            endpoints: tokio::sync::OnceCell::new(),
            id_tokens,
            access_tokens,
        })
    }

    /// The provider's name on the sign-in button.
    pub fn display_name(&self) -> &str {
        &self.client.display_name
    }

    /// The `iss` of the provider's tokens.
    pub fn issuer(&self) -> &str {
        &self.client.issuer
    }

    /// The callback URL the provider must have registered.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The endpoints: Cognito's from its domain, else the discovery document's, fetched on the
    /// first sign-in and kept (a failed fetch is tried again by the next sign-in).
    async fn endpoints(&self) -> Result<&Endpoints, SignInError> {
        self.endpoints
            .get_or_try_init(|| async {
                match &self.client.endpoints {
                    WebEndpoints::CognitoDomain(domain) => {
                        let domain = domain.trim_end_matches('/');
                        Ok(Endpoints {
                            authorization: format!("{domain}/oauth2/authorize"),
                            token: format!("{domain}/oauth2/token"),
                            logout: Some(Logout::Cognito(format!("{domain}/logout"))),
                        })
                    }
                    WebEndpoints::Discovery(url) => {
                        let response = self
                            .http
                            .get(url)
                            .send()
                            .await
                            .map_err(|e| SignInError::Unavailable(format!("discovery at {url}: {e}")))?;
                        if !response.status().is_success() {
                            return Err(SignInError::Unavailable(format!(
                                "discovery at {url} answered {}",
                                response.status()
                            )));
                        }
                        let document: Discovery = response
                            .json()
                            .await
                            .map_err(|e| SignInError::Unavailable(format!("discovery at {url}: {e}")))?;
                        Ok(Endpoints {
                            authorization: document.authorization_endpoint,
                            token: document.token_endpoint,
                            logout: document.end_session_endpoint.map(Logout::EndSession),
                        })
                    }
                }
            })
            .await
    }

    /// Where to send the browser to sign in for `flow`.
    pub async fn authorization_url(&self, flow: &Flow) -> Result<String, SignInError> {
        let endpoints = self.endpoints().await?;
        let query = [
            ("response_type", "code"),
            ("client_id", self.client.client_id.as_str()),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("scope", self.client.scopes.as_str()),
            ("state", flow.state.as_str()),
            ("nonce", flow.nonce.as_str()),
            ("code_challenge", &flow.challenge()),
            ("code_challenge_method", "S256"),
        ];
        Ok(with_query(&endpoints.authorization, &query))
    }

    /// Where to send the browser to sign out of the provider too, if it has a logout endpoint.
    pub async fn logout_url(&self) -> Option<String> {
        let endpoints = self.endpoints().await.ok()?;
        let client_id = self.client.client_id.as_str();
        Some(match endpoints.logout.as_ref()? {
            Logout::Cognito(url) => {
                with_query(url, &[("client_id", client_id), ("logout_uri", &self.after_logout_uri)])
            }
            Logout::EndSession(url) => {
                with_query(url, &[("client_id", client_id), ("post_logout_redirect_uri", &self.after_logout_uri)])
            }
        })
    }

    /// Finishes `flow` with the provider's answer: exchanges the code, verifies both tokens,
    /// and returns the session to make.
    pub async fn complete(&self, flow: &Flow, code: &str) -> Result<Signed, SignInError> {
        let tokens = self.exchange(code, &flow.verifier).await?;
        let id_token = tokens.id_token.as_deref().ok_or_else(|| SignInError::Tokens("no ID token".into()))?;
        let person = self
            .id_tokens
            .verify_id_token(id_token, &self.client.client_id, &flow.nonce)
            .await
            .map_err(|e| SignInError::Tokens(format!("ID token: {e}")))?;
        let principal = match self.access_tokens.verify_async(&tokens.access_token).await {
            Ok(principal) => principal,
            Err(AuthError::NoMerchant(detail)) => return Err(SignInError::NotLinked(detail)),
            Err(e) => return Err(SignInError::Tokens(format!("access token: {e}"))),
        };
        if principal.subject != person.subject {
            return Err(SignInError::Tokens("the access and ID tokens are of different subjects".into()));
        }
        Ok(Signed {
            access_token: tokens.access_token,
            max_age_secs: tokens.expires_in.unwrap_or(3600).max(1),
            principal,
        })
    }

    /// The authorization code grant with the PKCE verifier (RFC 6749 §4.1.3, RFC 7636 §4.5).
    async fn exchange(&self, code: &str, verifier: &str) -> Result<Tokens, SignInError> {
        let endpoints = self.endpoints().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        let mut request = self.http.post(&endpoints.token);
        match &self.client.client_secret {
            // RFC 6749 §2.3.1: the id and secret form-encoded, then Basic.
            Some(secret) => {
                request = request
                    .basic_auth(percent_encode(&self.client.client_id), Some(percent_encode(secret.expose_secret())));
            }
            None => form.push(("client_id", self.client.client_id.as_str())),
        }
        let body = form.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect::<Vec<_>>().join("&");
        let response = request
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| SignInError::Unavailable(format!("token endpoint: {e}")))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| SignInError::Unavailable(format!("token endpoint: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| SignInError::Unavailable(format!("token endpoint answered no tokens: {e}")));
        }
        match serde_json::from_slice::<TokenError>(&bytes) {
            // A client error is a misconfiguration the operator must see; the rest (an
            // expired, replayed or unbound code) is the person's to retry.
            Ok(error) if status.is_client_error() && error.error == "invalid_client" => {
                Err(SignInError::Unavailable(format!("the token endpoint refused the app client ({status})")))
            }
            Ok(error) if status.is_client_error() => Err(SignInError::Code(error.error)),
            _ => Err(SignInError::Unavailable(format!("token endpoint answered {status}"))),
        }
    }
}

/// `url` with `pairs` added to its query.
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let query = pairs.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect::<Vec<_>>().join("&");
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_challenge_is_rfc_7636s_s256_of_the_verifier() {
        // RFC 7636, Appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let flow = Flow::new();
        assert_eq!(flow.verifier.len(), 43, "RFC 7636's shortest verifier, 256 bits");
        assert_ne!(flow.challenge(), flow.verifier);
    }

    #[test]
    fn a_flow_opens_from_its_own_cookie_only_and_only_while_it_is_fresh() {
        let sessions = Sessions::new(false);
        let flow = Flow::new();
        let sealed = flow.seal(&sessions).unwrap_or_default();
        assert_eq!(Flow::open(&sessions, &sealed), Some(flow.clone()));
        assert!(flow.state_is(&flow.state) && !flow.state_is("forged") && !flow.state_is(""));
        assert_eq!(Flow::open(&Sessions::new(false), &sealed), None, "another process's cookie");
        let other_purpose = sessions.seal("csrf", &serde_json::to_vec(&flow).unwrap_or_default()).unwrap_or_default();
        assert_eq!(Flow::open(&sessions, &other_purpose), None, "a value sealed for something else");
        let stale = Flow { started: flow.started - 601, ..flow.clone() };
        assert_eq!(Flow::open(&sessions, &stale.seal(&sessions).unwrap_or_default()), None, "older than ten minutes");
        let future = Flow { started: flow.started + 3600, ..flow };
        assert_eq!(Flow::open(&sessions, &future.seal(&sessions).unwrap_or_default()), None, "from the future");
    }

    #[test]
    fn query_parameters_are_encoded_and_joined_to_an_existing_query() {
        assert_eq!(
            with_query("https://idp/authorize", &[("a", "x y"), ("b", "1&2")]),
            "https://idp/authorize?a=x%20y&b=1%262"
        );
        assert_eq!(with_query("https://idp/authorize?p=1", &[("a", "b")]), "https://idp/authorize?p=1&a=b");
    }
}
