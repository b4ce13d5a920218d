//! The issuer's HTTP contract, driven through `router()` with a real SQLite store.

use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use cashflow_domain::MerchantId;
use http_body_util::BodyExt;
use jsonwebtoken::jwk::JwkSet;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::identities::{Identities, NewClient};
use crate::store::SqliteIdentityStore;
use crate::{Scope, TokenVerifier};

const ISSUER: &str = "http://issuer.test";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<Identities>,
    issuer: Arc<Issuer>,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("identity.db").display());
        let rows = SqliteIdentityStore::open(&url).await.unwrap();
        let fast = argon2::Params::new(argon2::Params::MIN_M_COST, 1, 1, None).unwrap();
        let store = Arc::new(Identities::new(Arc::new(rows)).with_password_params(fast));
        let key = store.signing_key().await.unwrap();
        let issuer = Arc::new(Issuer::new(IssuerConfig::new(ISSUER, "cashflow"), key, store.clone()));
        Self { _dir: dir, store, issuer }
    }

    fn app(&self) -> Router {
        router(Arc::clone(&self.issuer))
    }

    async fn client(&self, merchant: MerchantId, scopes: Scopes) -> NewClient {
        self.store.create_client(merchant, scopes, Some("test client")).await.unwrap()
    }

    async fn user(&self, username: &str, password: &str, merchant: MerchantId, scopes: Scopes) {
        let password = SecretString::from(password);
        self.store.create_user(username, &password, merchant, scopes).await.unwrap();
    }

    /// `POST /oauth2/token` with a form body and optional HTTP Basic credentials.
    async fn token(&self, form: &str, basic: Option<(&str, &str)>) -> Reply {
        let mut request =
            Request::post("/oauth2/token").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some((id, secret)) = basic {
            request =
                request.header(header::AUTHORIZATION, format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))));
        }
        send(self.app(), request.body(Body::from(form.to_owned())).unwrap()).await
    }

    async fn get(&self, uri: &str) -> Reply {
        send(self.app(), Request::get(uri).body(Body::empty()).unwrap()).await
    }

    fn verifier(&self) -> JwtVerifier {
        self.issuer.verifier().unwrap()
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn access_token(&self) -> &str {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        self.body["access_token"].as_str().unwrap()
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Asserts an OAuth error problem and returns it.
    fn oauth_error(&self, status: StatusCode, error: &str) -> &Value {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.header(header::CONTENT_TYPE), "application/problem+json");
        assert_eq!(self.body["error"], error, "{}", self.body);
        assert_eq!(self.body["type"], format!("/problems/{}", error.replace('_', "-")));
        assert!(self.body["error_description"].is_string());
        &self.body
    }
}

async fn send(app: Router, request: Request<Body>) -> Reply {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, headers, body }
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
}

// --- client_credentials ---------------------------------------------------------------------

#[tokio::test]
async fn given_a_client_using_http_basic_when_it_asks_for_a_token_then_it_gets_one_for_its_merchant() {
    let fx = Fixture::new().await;
    let merchant = MerchantId::new();
    let client = fx.client(merchant, Scopes::all()).await;

    let reply = fx
        .token("grant_type=client_credentials", Some((&client.client_id, client.client_secret.expose_secret())))
        .await;

    let principal = fx.verifier().verify(reply.access_token()).unwrap();
    assert_eq!(principal.merchant_id, merchant);
    assert_eq!(principal.subject, client.client_id);
    assert_eq!(principal.scopes, Scopes::all());
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], 3600);
    assert_eq!(reply.body["scope"], "entries:write entries:read reports:read");
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
}

#[tokio::test]
async fn given_a_client_using_form_fields_when_it_asks_for_a_token_then_it_gets_one() {
    let fx = Fixture::new().await;
    let merchant = MerchantId::new();
    let client = fx.client(merchant, Scope::EntriesWrite.into()).await;
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        client.client_id,
        client.client_secret.expose_secret()
    );

    let reply = fx.token(&form, None).await;

    let principal = fx.verifier().verify(reply.access_token()).unwrap();
    assert_eq!(principal.merchant_id, merchant);
    assert_eq!(principal.scopes, Scope::EntriesWrite.into());
}

#[tokio::test]
async fn given_basic_credentials_that_are_form_urlencoded_when_authenticating_then_they_are_decoded() {
    let fx = Fixture::new().await;
    let client = fx.client(MerchantId::new(), Scopes::all()).await;
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before going into Basic.
    let id = client.client_id.replace('_', "%5F");
    let secret = client.client_secret.expose_secret().replace('-', "%2D");

    let reply = fx.token("grant_type=client_credentials", Some((&id, &secret))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn given_a_wrong_secret_or_an_unknown_client_when_asking_for_a_token_then_both_get_the_same_401() {
    let fx = Fixture::new().await;
    let client = fx.client(MerchantId::new(), Scopes::all()).await;

    let wrong_secret = fx.token("grant_type=client_credentials", Some((&client.client_id, "not-the-secret"))).await;
    let unknown =
        fx.token("grant_type=client_credentials", Some(("cf_nobody", client.client_secret.expose_secret()))).await;

    for reply in [&wrong_secret, &unknown] {
        reply.oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        assert_eq!(reply.header(header::WWW_AUTHENTICATE), r#"Basic realm="cashflow""#);
    }
    assert_eq!(wrong_secret.body, unknown.body);
}

#[tokio::test]
async fn given_no_client_authentication_when_asking_for_client_credentials_then_401() {
    let fx = Fixture::new().await;

    let reply = fx.token("grant_type=client_credentials", None).await;

    reply.oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test]
async fn given_a_client_authenticating_twice_over_when_asking_for_a_token_then_the_request_is_invalid() {
    let fx = Fixture::new().await;
    let client = fx.client(MerchantId::new(), Scopes::all()).await;
    let secret = client.client_secret.expose_secret();

    let reply = fx
        .token(&format!("grant_type=client_credentials&client_secret={secret}"), Some((&client.client_id, secret)))
        .await;

    reply.oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
}

// --- scopes ---------------------------------------------------------------------------------

#[tokio::test]
async fn given_a_requested_subset_of_the_allowed_scopes_when_issuing_then_only_those_are_granted() {
    let fx = Fixture::new().await;
    let client = fx.client(MerchantId::new(), Scopes::all()).await;

    let reply = fx
        .token(
            "grant_type=client_credentials&scope=reports:read+entries:read",
            Some((&client.client_id, client.client_secret.expose_secret())),
        )
        .await;

    assert_eq!(reply.body["scope"], "entries:read reports:read");
    let principal = fx.verifier().verify(reply.access_token()).unwrap();
    assert_eq!(principal.scopes, Scopes::from_iter([Scope::EntriesRead, Scope::ReportsRead]));
}

#[tokio::test]
async fn given_a_requested_scope_beyond_the_allowed_ones_when_issuing_then_invalid_scope() {
    let fx = Fixture::new().await;
    let client = fx.client(MerchantId::new(), Scope::EntriesRead.into()).await;
    let credentials = Some((client.client_id.as_str(), client.client_secret.expose_secret()));

    let superset = fx.token("grant_type=client_credentials&scope=entries:read%20entries:write", credentials).await;
    let unknown = fx.token("grant_type=client_credentials&scope=admin", credentials).await;

    let body = superset.oauth_error(StatusCode::BAD_REQUEST, "invalid_scope");
    assert!(body["error_description"].as_str().unwrap().contains("entries:write"), "{body}");
    let body = unknown.oauth_error(StatusCode::BAD_REQUEST, "invalid_scope");
    assert!(body["error_description"].as_str().unwrap().contains("admin"), "{body}");
}

// --- password grant -------------------------------------------------------------------------

#[tokio::test]
async fn given_a_user_with_the_right_password_when_asking_for_a_token_then_it_is_issued_to_them() {
    let fx = Fixture::new().await;
    let merchant = MerchantId::new();
    fx.user("alice", "correct horse", merchant, Scope::ReportsRead.into()).await;

    let reply = fx.token("grant_type=password&username=alice&password=correct+horse", None).await;

    let principal = fx.verifier().verify(reply.access_token()).unwrap();
    assert_eq!(principal.merchant_id, merchant);
    assert_eq!(principal.subject, "alice");
    assert_eq!(principal.scopes, Scope::ReportsRead.into());
}

#[tokio::test]
async fn given_a_wrong_password_or_unknown_user_when_asking_for_a_token_then_invalid_grant() {
    let fx = Fixture::new().await;
    fx.user("alice", "correct horse", MerchantId::new(), Scopes::all()).await;

    let wrong = fx.token("grant_type=password&username=alice&password=wrong", None).await;
    let unknown = fx.token("grant_type=password&username=bob&password=correct+horse", None).await;

    wrong.oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    unknown.oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(wrong.body, unknown.body);
}

#[tokio::test]
async fn given_a_password_grant_without_a_password_when_asking_for_a_token_then_invalid_request() {
    let fx = Fixture::new().await;

    let reply = fx.token("grant_type=password&username=alice", None).await;

    reply.oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn given_a_user_and_a_confidential_client_of_the_same_merchant_when_logging_in_then_scopes_are_intersected() {
    let fx = Fixture::new().await;
    let merchant = MerchantId::new();
    fx.user("alice", "pw", merchant, Scopes::all()).await;
    let client = fx.client(merchant, Scope::EntriesRead.into()).await;

    let reply = fx
        .token(
            "grant_type=password&username=alice&password=pw",
            Some((&client.client_id, client.client_secret.expose_secret())),
        )
        .await;

    assert_eq!(reply.body["scope"], "entries:read");
    assert_eq!(claims_of(reply.access_token())["client_id"], client.client_id.as_str());
}

#[tokio::test]
async fn given_a_client_of_another_merchant_when_a_user_logs_in_through_it_then_invalid_grant() {
    let fx = Fixture::new().await;
    fx.user("alice", "pw", MerchantId::new(), Scopes::all()).await;
    let client = fx.client(MerchantId::new(), Scopes::all()).await;

    let reply = fx
        .token(
            "grant_type=password&username=alice&password=pw",
            Some((&client.client_id, client.client_secret.expose_secret())),
        )
        .await;

    reply.oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
}

// --- malformed requests ---------------------------------------------------------------------

#[tokio::test]
async fn given_an_unsupported_grant_type_when_asking_for_a_token_then_400_unsupported_grant_type() {
    let fx = Fixture::new().await;

    let reply = fx.token("grant_type=authorization_code&code=abc", None).await;

    reply.oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
}

#[tokio::test]
async fn given_no_grant_type_when_asking_for_a_token_then_invalid_request() {
    let fx = Fixture::new().await;

    let reply = fx.token("scope=entries:read", None).await;

    reply.oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn given_a_json_body_when_asking_for_a_token_then_invalid_request() {
    let fx = Fixture::new().await;
    let request = Request::post("/oauth2/token")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"grant_type":"client_credentials"}"#))
        .unwrap();

    let reply = send(fx.app(), request).await;

    reply.oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test]
async fn given_a_repeated_parameter_when_asking_for_a_token_then_invalid_request() {
    let fx = Fixture::new().await;

    let reply = fx.token("grant_type=password&grant_type=client_credentials", None).await;

    reply.oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
}

// --- keys and discovery ---------------------------------------------------------------------

#[tokio::test]
async fn given_the_served_jwks_when_a_verifier_is_built_from_it_then_minted_tokens_verify() {
    let fx = Fixture::new().await;
    let merchant = MerchantId::new();
    let client = fx.client(merchant, Scopes::all()).await;
    let token = fx
        .token("grant_type=client_credentials", Some((&client.client_id, client.client_secret.expose_secret())))
        .await
        .access_token()
        .to_owned();

    let reply = fx.get("/.well-known/jwks.json").await;
    let jwks: JwkSet = serde_json::from_value(reply.body.clone()).unwrap();
    let verifier = JwtVerifier::new(fx.issuer.verifier_config(), jwks).unwrap();

    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(verifier.verify(&token).unwrap().merchant_id, merchant);
    assert_eq!(reply.body["keys"][0]["kty"], "OKP");
    assert_eq!(reply.body["keys"][0]["kid"], header_of(&token)["kid"]);
}

#[tokio::test]
async fn given_a_minted_token_when_decoded_then_it_has_every_claim_and_a_typed_header() {
    let fx = Fixture::new().await;
    let client = fx.client(MerchantId::new(), Scopes::all()).await;
    let token = fx
        .token("grant_type=client_credentials", Some((&client.client_id, client.client_secret.expose_secret())))
        .await
        .access_token()
        .to_owned();

    let header = header_of(&token);
    let claims = claims_of(&token);

    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], fx.issuer.jwks().keys[0].common.key_id.clone().unwrap());
    for claim in ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "merchant_id", "client_id"] {
        assert!(!claims[claim].is_null(), "missing {claim} in {claims}");
    }
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], "cashflow");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 3600);
}

#[tokio::test]
async fn given_a_token_from_another_issuer_instance_when_verified_then_it_is_rejected() {
    let ours = Fixture::new().await;
    let theirs = Fixture::new().await;
    let (token, _) = theirs.issuer.mint("mallory", MerchantId::new(), Scopes::all()).unwrap();

    let result = ours.verifier().verify(&token);

    assert!(matches!(result, Err(AuthError::InvalidToken(_))), "{result:?}");
}

#[tokio::test]
async fn given_the_discovery_document_when_fetched_then_it_describes_the_token_endpoint() {
    let fx = Fixture::new().await;

    let reply = fx.get("/.well-known/openid-configuration").await;

    assert_eq!(reply.status, StatusCode::OK);
    let body = &reply.body;
    assert_eq!(body["issuer"], ISSUER);
    assert_eq!(body["token_endpoint"], format!("{ISSUER}/oauth2/token"));
    assert_eq!(body["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    assert_eq!(body["grant_types_supported"], serde_json::json!(["client_credentials", "password"]));
    assert_eq!(
        body["scopes_supported"],
        serde_json::json!([
            "entries:write",
            "entries:read",
            "reports:read",
            "ledger:read",
            "days:close",
            "days:reopen"
        ])
    );
    assert_eq!(
        body["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(body["id_token_signing_alg_values_supported"], serde_json::json!(["EdDSA"]));
    assert_eq!(body["response_types_supported"], serde_json::json!([]));
}
