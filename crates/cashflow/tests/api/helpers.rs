use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt;

use cashflow::app::{AppConfig, Application};
use cashflow::backends::BackendArgs;
use cashflow_auth::{Scope, Scopes};
use cashflow_domain::{Currency, MerchantId, MerchantName, MerchantTimeZone};

/// A running application on its own data directory, with one merchant and a token for it.
pub struct TestApp {
    pub app: Application,
    pub router: Router,
    pub merchant: MerchantId,
    pub token: String,
    _dir: TempDir,
}

/// A response, read whole.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts a problem response of the given status and `type` slug.
    pub fn assert_problem(&self, status: StatusCode, slug: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        let body = self.json();
        assert_eq!(body["type"], format!("/problems/{slug}"), "{}", self.text);
        assert_eq!(body["status"], status.as_u16());
        assert!(body["request_id"].is_string(), "problem without request_id: {}", self.text);
    }
}

pub const ISSUER: &str = "http://cashflow.test";

impl TestApp {
    /// A fresh application with one BRL merchant in São Paulo.
    pub async fn spawn() -> Self {
        Self::spawn_with_cache(None).await
    }

    /// The same, with its reports cached at `cache_url` (`redis://…`) instead of in memory.
    pub async fn spawn_with_cache(cache_url: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut backends = BackendArgs::embedded(dir.path());
        if let Some(url) = cache_url {
            backends.cache_url = url.to_owned();
        }
        let config = AppConfig {
            backends,
            public_url: ISSUER.into(),
            audience: "cashflow".into(),
            token_ttl: Duration::from_secs(600),
            trust_forwarded_for: false,
            web_secret: None,
            oidc: Default::default(),
        };
        let app = Application::build(&config).await.expect("build app");
        let router = app.router();
        let merchant = app
            .ledger
            .create_merchant(MerchantName::parse("Padaria").unwrap(), Currency::BRL, MerchantTimeZone::DEFAULT)
            .await
            .expect("merchant")
            .id;
        let token = app.issuer.mint("test-client", merchant, Scopes::all()).expect("mint").0;
        let test_app = Self { app, router, merchant, token, _dir: dir };
        test_app.consolidate().await;
        test_app
    }

    /// Another merchant of the same application, with its own token.
    pub async fn another_merchant(&self) -> (MerchantId, String) {
        let m = self
            .app
            .ledger
            .create_merchant(MerchantName::parse("Outra loja").unwrap(), Currency::BRL, MerchantTimeZone::DEFAULT)
            .await
            .unwrap()
            .id;
        self.consolidate().await;
        (m, self.app.issuer.mint("other-client", m, Scopes::all()).unwrap().0)
    }

    /// A token for this merchant with only `scopes`.
    pub fn token_with(&self, scopes: &[Scope]) -> String {
        let mut set = Scopes::default();
        for s in scopes {
            set.insert(*s);
        }
        self.app.issuer.mint("scoped-client", self.merchant, set).unwrap().0
    }

    /// Relays the outbox to the queue and applies everything queued, as the background
    /// workers would.
    pub async fn consolidate(&self) {
        self.app.relay().drain().await.expect("relay");
        self.app.consumer().drain().await.expect("consumer");
    }

    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        let response = self.router.clone().oneshot(request).await.expect("router");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        TestResponse { status, headers, text: String::from_utf8_lossy(&bytes).into_owned() }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> TestResponse {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = match body {
            Some(b) => builder.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
            None => builder.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> TestResponse {
        self.call(Method::GET, path, Some(&self.token.clone()), None).await
    }

    pub async fn post_entry(&self, body: Value) -> TestResponse {
        self.call(Method::POST, "/v1/entries", Some(&self.token.clone()), Some(body)).await
    }

    pub async fn post_with_key(&self, key: &str, body: Value) -> TestResponse {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/entries")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
            .body(Body::from(body.to_string()))
            .unwrap();
        self.send(request).await
    }

    /// Records an entry and returns its JSON, asserting 201.
    pub async fn record(&self, kind: &str, amount: &str, occurred_at: &str) -> Value {
        let r = self
            .post_entry(json!({"type": kind, "amount": amount, "description": "test", "occurred_at": occurred_at}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json()
    }

    pub async fn balance(&self, date: &str) -> Value {
        let r = self.get(&format!("/v1/balances/daily/{date}")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json()
    }
}
