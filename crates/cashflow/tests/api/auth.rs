//! Authentication and authorization: every /v1 call needs a valid token of the merchant, with
//! the scope the call needs. Tokens are checked as in production: signature against the JWKS,
//! algorithm allow-list, issuer, audience, expiry.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use cashflow_auth::{Scope, Scopes, SigningKey};

use crate::helpers::{TestApp, ISSUER};

fn claims(app: &TestApp, overrides: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({
        "iss": ISSUER, "aud": "cashflow", "sub": "t", "iat": now, "nbf": now, "exp": now + 300,
        "scope": "entries:write entries:read reports:read", "merchant_id": app.merchant.to_string(),
    });
    for (k, v) in overrides.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn sign(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid().to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(key.pkcs8_der())).unwrap()
}

async fn real_key(app: &TestApp) -> SigningKey {
    app.app.identity.signing_key().await.unwrap()
}

async fn entry_with(app: &TestApp, token: Option<&str>) -> crate::helpers::TestResponse {
    app.call(Method::POST, "/v1/entries", token, Some(json!({"type": "credit", "amount": "1.00", "description": "x"})))
        .await
}

#[tokio::test]
async fn a_call_without_a_token_is_401_with_a_bearer_challenge() {
    let app = TestApp::spawn().await;
    let r = entry_with(&app, None).await;
    r.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(r.headers[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
    let r = app.call(Method::GET, "/v1/balances/daily/2026-11-23", None, None).await;
    r.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn invalid_tokens_are_401() {
    let app = TestApp::spawn().await;
    let key = real_key(&app).await;
    let now = chrono::Utc::now().timestamp();
    let forger = SigningKey::generate().unwrap();
    let none_token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims(&app, json!({})).to_string())
    );
    // HS/RS confusion: an HMAC token keyed with the public key.
    let public_x = key.public_jwk();
    let public_bytes = serde_json::to_vec(&public_x).unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(key.kid().to_owned());
    let hs_token =
        jsonwebtoken::encode(&hs_header, &claims(&app, json!({})), &EncodingKey::from_secret(&public_bytes)).unwrap();
    let forged = {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid().to_owned());
        jsonwebtoken::encode(&header, &claims(&app, json!({})), &EncodingKey::from_ed_der(forger.pkcs8_der())).unwrap()
    };
    let cases = [
        ("garbage", "not.a.jwt".to_owned()),
        ("expired", sign(&key, &claims(&app, json!({"exp": now - 3600, "iat": now - 7200, "nbf": now - 7200})))),
        ("wrong issuer", sign(&key, &claims(&app, json!({"iss": "https://evil.example"})))),
        ("wrong audience", sign(&key, &claims(&app, json!({"aud": "someone-else"})))),
        ("no merchant", sign(&key, &claims(&app, json!({"merchant_id": null})))),
        ("forged signature", forged),
        ("alg none", none_token),
        ("HS256 with the public key", hs_token),
    ];
    for (what, token) in cases {
        let r = entry_with(&app, Some(&token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
        r.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // The real key with valid claims works: the cases above fail for the reason named.
    let good = sign(&key, &claims(&app, json!({})));
    assert_eq!(entry_with(&app, Some(&good)).await.status, StatusCode::CREATED);
    // A malformed scheme is not a bearer token.
    let request = Request::builder()
        .method(Method::GET)
        .uri("/v1/balances/daily/2026-11-23")
        .header(header::AUTHORIZATION, format!("Basic {good}"))
        .body(Body::empty())
        .unwrap();
    app.send(request).await.assert_problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_token_without_the_needed_scope_is_403() {
    let app = TestApp::spawn().await;
    let reader = app.token_with(&[Scope::ReportsRead]);
    entry_with(&app, Some(&reader)).await.assert_problem(StatusCode::FORBIDDEN, "insufficient-scope");
    let r = app.call(Method::GET, "/v1/entries?date=2026-11-23", Some(&reader), None).await;
    r.assert_problem(StatusCode::FORBIDDEN, "insufficient-scope");
    let writer = app.token_with(&[Scope::EntriesWrite]);
    let r = app.call(Method::GET, "/v1/balances/daily/2026-11-23", Some(&writer), None).await;
    r.assert_problem(StatusCode::FORBIDDEN, "insufficient-scope");
    assert_eq!(
        app.call(Method::GET, "/v1/balances/daily/2026-11-23", Some(&reader), None).await.status,
        StatusCode::OK
    );
}

async fn token_request(app: &TestApp, basic: Option<(&str, &str)>, form: &str) -> crate::helpers::TestResponse {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri("/oauth2/token")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some((id, secret)) = basic {
        builder = builder.header(header::AUTHORIZATION, format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))));
    }
    app.send(builder.body(Body::from(form.to_owned())).unwrap()).await
}

#[tokio::test]
async fn a_client_gets_a_token_with_its_credentials_and_uses_it() {
    let app = TestApp::spawn().await;
    let client = app.app.identity.create_client(app.merchant, Scopes::all(), Some("pos")).await.unwrap();
    let id = client.client_id.clone();
    let secret = secrecy::ExposeSecret::expose_secret(&client.client_secret).to_owned();

    let basic = token_request(&app, Some((&id, &secret)), "grant_type=client_credentials").await;
    assert_eq!(basic.status, StatusCode::OK, "{}", basic.text);
    assert_eq!(basic.json()["token_type"], "Bearer");
    let token = basic.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(entry_with(&app, Some(&token)).await.status, StatusCode::CREATED);

    let form = token_request(
        &app,
        None,
        &format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&scope=reports:read"),
    )
    .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.text);
    assert_eq!(form.json()["scope"], "reports:read");
    let narrow = form.json()["access_token"].as_str().unwrap().to_owned();
    entry_with(&app, Some(&narrow)).await.assert_problem(StatusCode::FORBIDDEN, "insufficient-scope");

    let wrong = token_request(&app, Some((&id, "not-the-secret")), "grant_type=client_credentials").await;
    wrong.assert_problem(StatusCode::UNAUTHORIZED, "invalid-client");
    assert_eq!(wrong.json()["error"], "invalid_client");
    let unknown = token_request(&app, None, "grant_type=authorization_code&code=x").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.text);
    assert_eq!(unknown.json()["error"], "unsupported_grant_type");
}

#[tokio::test]
async fn a_user_gets_a_token_with_the_password_grant() {
    let app = TestApp::spawn().await;
    let password = secrecy::SecretString::from("correct horse battery staple".to_owned());
    app.app.identity.create_user("maria", &password, app.merchant, Scopes::all()).await.unwrap();
    let ok =
        token_request(&app, None, "grant_type=password&username=maria&password=correct+horse+battery+staple").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    let token = ok.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(entry_with(&app, Some(&token)).await.status, StatusCode::CREATED);
    let bad = token_request(&app, None, "grant_type=password&username=maria&password=wrong").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert_eq!(bad.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn discovery_documents_point_at_the_issuer_and_its_keys() {
    let app = TestApp::spawn().await;
    let config = app.get("/.well-known/openid-configuration").await.json();
    assert_eq!(config["issuer"], ISSUER);
    assert_eq!(config["token_endpoint"], format!("{ISSUER}/oauth2/token"));
    assert_eq!(config["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
    let jwks = app.get("/.well-known/jwks.json").await.json();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["alg"], "EdDSA");
    assert!(key.get("d").is_none(), "the JWKS must never contain private key material");
}
