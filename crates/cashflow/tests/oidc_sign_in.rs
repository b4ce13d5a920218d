//! The web app's sign-in through an OpenID Provider (authorization code + PKCE), through the
//! router `serve` runs, against a real, certified provider: npm's oidc-provider started from
//! `scripts/oidc-provider` (JWT access tokens shaped like Cognito's, PKCE required). The
//! provider's pages are driven with a plain HTTP client (its development login takes any
//! password); the callback goes to our router as the browser would send it.
//!
//! Needs node and `npm ci` in `scripts/oidc-provider`; runs with `CASHFLOW_TEST_OIDC_PROVIDER=1`,
//! and is reported as ignored otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use axum::Router;
use tempfile::TempDir;

use cashflow::app::{AppConfig, Application};
use cashflow::backends::BackendArgs;
use cashflow_auth::oidc::{default_discovery_url, parse_group_scopes, OidcConfig, OidcPolicy, WebClient, WebEndpoints};
use common::{Page, Site};

mod common;

const PUBLIC_URL: &str = "http://cashflow.test";
const CLIENT: &str = "cashflow-web";

/// The provider's process, stopped when dropped.
struct Provider {
    child: Child,
    issuer: String,
    accounts: PathBuf,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    fn start(dir: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/oidc-provider");
        assert!(script.join("node_modules/oidc-provider").exists(), "run `npm ci` in {}", script.display());
        let accounts = dir.join("accounts.json");
        let clients = serde_json::json!([{
            "client_id": CLIENT,
            "redirect_uris": [format!("{PUBLIC_URL}/auth/callback")],
            "post_logout_redirect_uris": [format!("{PUBLIC_URL}/signin")],
        }]);
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&script)
            .env("OIDC_CLIENTS", clients.to_string())
            .env("OIDC_ACCOUNTS_FILE", &accounts)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let started: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("no issuer: {line:?}"));
        Self { issuer: started["issuer"].as_str().unwrap().to_owned(), child, accounts }
    }

    /// What the access tokens of each login say besides who they are.
    fn accounts(&self, accounts: serde_json::Value) {
        std::fs::write(&self.accounts, accounts.to_string()).unwrap();
    }
}

/// The person's browser at the provider: its cookies there, no redirects followed by itself.
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, cookies: HashMap::new() }
    }

    async fn send(&mut self, method: Method, url: &str, form: Option<&[(&str, &str)]>) -> (StatusCode, String, String) {
        let cookies = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let mut request = self.http.request(method, url).header(header::COOKIE, cookies);
        if let Some(form) = form {
            request = request.form(form);
        }
        let response = request.send().await.unwrap();
        for set in response.headers().get_all(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status();
        let location = response.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
        let base = response.url().clone();
        let body = response.text().await.unwrap();
        let location = location.map(|l| base.join(&l).unwrap().to_string()).unwrap_or_default();
        (StatusCode::from_u16(status.as_u16()).unwrap(), location, body)
    }

    /// Follows the provider's redirects from `url` until one leaves it (to our callback) or a
    /// page is shown; returns that URL, or the page's URL.
    async fn follow(&mut self, mut url: String, issuer: &str) -> String {
        for _ in 0..10 {
            if !url.starts_with(issuer) {
                return url;
            }
            let (status, location, body) = self.send(Method::GET, &url, None).await;
            if !status.is_redirection() {
                assert_eq!(status, StatusCode::OK, "{url}: {body}");
                return url;
            }
            url = location;
        }
        panic!("too many redirects at {url}");
    }
}

/// The application `serve` builds, trusting the provider and signing in through it.
struct Web {
    /// Kept for its backends and workers' handles, as `serve` keeps them.
    _app: Application,
    router: Router,
    provider: Provider,
    _dir: TempDir,
}

impl Web {
    async fn spawn(trust_builtin: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let provider = Provider::start(dir.path());
        let issuer = provider.issuer.clone();
        let config = AppConfig {
            backends: BackendArgs::embedded(dir.path()),
            public_url: PUBLIC_URL.into(),
            audience: "cashflow".into(),
            token_ttl: Duration::from_secs(600),
            trust_forwarded_for: false,
            web_secret: None,
            oidc: OidcConfig {
                issuers: vec![(issuer.clone(), format!("{issuer}/jwks"))],
                policy: OidcPolicy {
                    client_ids: vec![CLIENT.into()],
                    group_scopes: vec![
                        parse_group_scopes("owner=entries:write entries:read reports:read days:close").unwrap(),
                        parse_group_scopes("cashier=entries:write entries:read").unwrap(),
                    ],
                    ..OidcPolicy::default()
                },
                trust_builtin,
                web: Some(WebClient {
                    issuer: issuer.clone(),
                    client_id: CLIENT.into(),
                    client_secret: None,
                    endpoints: WebEndpoints::Discovery(default_discovery_url(&issuer)),
                    scopes: "openid".into(),
                    display_name: "Cognito".into(),
                }),
            },
        };
        let app = Application::build(&config).await.unwrap();
        let merchant = common::create_merchant(&app).await;
        provider.accounts(serde_json::json!({
            "maria": {"custom:merchant_id": merchant.to_string(), "cognito:groups": ["owner"]},
            "joao": {"custom:merchant_id": merchant.to_string(), "cognito:groups": ["cashier"]},
        }));
        app.relay().drain().await.unwrap();
        app.consumer().drain().await.unwrap();
        let router = app.router();
        Self { _app: app, router, provider, _dir: dir }
    }

    /// `GET /auth/start`: the flow cookie's value and the provider's authorization URL.
    async fn start(&self) -> (String, String) {
        let started = self.get("/auth/start", "").await;
        assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.text);
        let flow = started.cookie("cf_oidc").expect("a flow cookie");
        (flow, started.location().to_owned())
    }

    /// Signs `login` in at the provider from `authorize`; returns the callback's path and query.
    async fn at_provider(&self, authorize: &str, login: &str) -> String {
        let mut browser = Browser::new();
        let interaction = browser.follow(authorize.to_owned(), &self.provider.issuer).await;
        assert!(interaction.contains("/interaction/"), "the provider's login page: {interaction}");
        let (status, resume, body) = browser
            .send(Method::POST, &interaction, Some(&[("prompt", "login"), ("login", login), ("password", "x")]))
            .await;
        assert!(status.is_redirection(), "{status}: {body}");
        let callback = browser.follow(resume, &self.provider.issuer).await;
        callback.strip_prefix(PUBLIC_URL).unwrap_or_else(|| panic!("not our callback: {callback}")).to_owned()
    }

    /// A whole sign-in of `login`: the callback's answer.
    async fn sign_in(&self, login: &str) -> Page {
        let (flow, authorize) = self.start().await;
        let callback = self.at_provider(&authorize, login).await;
        self.get(&callback, &format!("cf_oidc={flow}")).await
    }
}

impl Site for Web {
    fn router(&self) -> &Router {
        &self.router
    }
}

/// `query` with parameter `name` set to `value`.
fn with_param(path: &str, name: &str, value: &str) -> String {
    let (route, query) = path.split_once('?').unwrap();
    let mut pairs: Vec<String> =
        query.split('&').filter(|p| !p.starts_with(&format!("{name}="))).map(str::to_owned).collect();
    pairs.push(format!("{name}={value}"));
    format!("{route}?{}", pairs.join("&"))
}

fn param(path: &str, name: &str) -> String {
    let query = path.split_once('?').unwrap().1;
    query.split('&').find_map(|p| p.strip_prefix(&format!("{name}="))).unwrap().to_owned()
}

#[tokio::test]
#[cfg_attr(
    not(oidc_provider_tests),
    ignore = "set CASHFLOW_TEST_OIDC_PROVIDER=1 (node, npm ci in scripts/oidc-provider)"
)]
async fn the_sign_in_page_offers_the_provider_and_sends_the_browser_there_with_an_s256_challenge() {
    let web = Web::spawn(true).await;
    let page = web.get("/signin", "").await;
    assert!(page.text.contains("Entrar com Cognito") && page.text.contains("href=\"/auth/start\""), "{}", page.text);
    assert!(page.text.contains("name=\"password\""), "the built-in issuer is trusted: the password form too");

    let started = web.get("/auth/start", "").await;
    let flow = started.set_cookie("cf_oidc").unwrap();
    assert!(flow.contains("Path=/auth/callback; HttpOnly; SameSite=Lax; Max-Age=600"), "{flow}");
    let authorize = started.location();
    assert!(authorize.starts_with(&format!("{}/auth?", web.provider.issuer)), "{authorize}");
    assert_eq!(param(authorize, "code_challenge_method"), "S256");
    assert_eq!(param(authorize, "code_challenge").len(), 43, "a SHA-256, base64url");
    assert_eq!(param(authorize, "redirect_uri"), "http%3A%2F%2Fcashflow.test%2Fauth%2Fcallback");
    assert!(!authorize.contains("code_verifier"), "the verifier never leaves the server but sealed");
    let cookie = started.cookie("cf_oidc").unwrap();
    assert!(!cookie.contains(&param(authorize, "state")), "the flow cookie is sealed, not readable");
}

#[tokio::test]
#[cfg_attr(
    not(oidc_provider_tests),
    ignore = "set CASHFLOW_TEST_OIDC_PROVIDER=1 (node, npm ci in scripts/oidc-provider)"
)]
async fn signing_in_through_the_provider_makes_a_session_whose_pages_show_what_the_api_grants() {
    let web = Web::spawn(false).await;
    let signed = web.sign_in("maria").await;
    assert_eq!(signed.status, StatusCode::OK, "{}", signed.text);
    assert!(signed.text.contains("http-equiv=\"refresh\" content=\"0; url=/\""), "moves on to / by itself");
    let session = signed.set_cookie("cf_session").unwrap();
    assert!(session.contains("HttpOnly; SameSite=Strict"), "{session}");
    assert_eq!(signed.cookie("cf_oidc"), None, "the flow is used once: its cookie is cleared");
    let cookie = format!("cf_session={}", signed.cookie("cf_session").unwrap());

    // maria is in the owner group: every page; she records an entry through the page.
    let today = web.get("/", &cookie).await;
    assert_eq!(today.status, StatusCode::OK, "{}", today.text);
    for nav in ["href=\"/reports\"", "href=\"/close\"", "href=\"/record\""] {
        assert!(today.text.contains(nav), "owner sees {nav}");
    }
    let csrf = today.csrf();
    let form = [
        ("csrf", csrf.as_str()),
        ("idempotency_key", "oidc-1"),
        ("type", "credit"),
        ("amount", "12,50"),
        ("description", "Venda"),
        ("category", ""),
        ("occurred_at", ""),
    ];
    let recorded = web.post("/entries", &cookie, &form).await;
    assert_eq!(recorded.status, StatusCode::SEE_OTHER, "{}", recorded.text);
    let listed = web.get("/entries", &cookie).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text);
    assert!(listed.text.contains("Venda") && listed.text.contains("R$ 12,50"), "{}", listed.text);

    // joao is a cashier: records, but no reports, and the server refuses them whatever he types.
    let signed = web.sign_in("joao").await;
    let cookie = format!("cf_session={}", signed.cookie("cf_session").unwrap());
    let today = web.get("/", &cookie).await;
    assert_eq!(today.status, StatusCode::OK, "{}", today.text);
    assert!(today.text.contains("href=\"/record\"") && !today.text.contains("href=\"/reports\""), "{}", today.text);
    assert_eq!(web.get("/reports", &cookie).await.status, StatusCode::FORBIDDEN);

    // Without the built-in issuer, no password form, and its grant signs no one in.
    let page = web.get("/signin", "").await;
    assert!(!page.text.contains("name=\"password\""), "{}", page.text);
    let refused = web.post("/signin", "", &[("username", "maria"), ("password", "x")]).await;
    assert_eq!((refused.status, refused.location()), (StatusCode::SEE_OTHER, "/signin"));
    assert_eq!(refused.set_cookie("cf_session"), None);
}

#[tokio::test]
#[cfg_attr(
    not(oidc_provider_tests),
    ignore = "set CASHFLOW_TEST_OIDC_PROVIDER=1 (node, npm ci in scripts/oidc-provider)"
)]
async fn a_callback_with_another_state_is_refused_before_its_code_is_spent() {
    let web = Web::spawn(true).await;
    let (flow, authorize) = web.start().await;
    let callback = web.at_provider(&authorize, "maria").await;

    let forged = web.get(&with_param(&callback, "state", "forged"), &format!("cf_oidc={flow}")).await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST, "{}", forged.text);
    assert!(forged.text.contains("iniciada em outro navegador"), "{}", forged.text);
    assert_eq!(forged.cookie("cf_session"), None);
    let no_state = web.get(&with_param(&callback, "state", ""), &format!("cf_oidc={flow}")).await;
    assert_eq!((no_state.status, no_state.cookie("cf_session")), (StatusCode::BAD_REQUEST, None));
    // The provider names itself (RFC 9207); an answer naming another issuer is a mix-up.
    assert!(param(&callback, "iss").starts_with("http%3A%2F%2F127.0.0.1"), "{callback}");
    let mixed_up = web.get(&with_param(&callback, "iss", "https%3A%2F%2Fevil.test"), &format!("cf_oidc={flow}")).await;
    assert_eq!((mixed_up.status, mixed_up.cookie("cf_session")), (StatusCode::BAD_REQUEST, None));

    // The code was not exchanged: the genuine callback still signs in.
    let genuine = web.get(&callback, &format!("cf_oidc={flow}")).await;
    assert_eq!(genuine.status, StatusCode::OK, "{}", genuine.text);
    assert!(genuine.cookie("cf_session").is_some());
}

#[tokio::test]
#[cfg_attr(
    not(oidc_provider_tests),
    ignore = "set CASHFLOW_TEST_OIDC_PROVIDER=1 (node, npm ci in scripts/oidc-provider)"
)]
async fn a_replayed_code_is_refused_by_the_provider_and_makes_no_second_session() {
    let web = Web::spawn(true).await;
    let (flow, authorize) = web.start().await;
    let callback = web.at_provider(&authorize, "maria").await;
    let first = web.get(&callback, &format!("cf_oidc={flow}")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);

    // The same request again (a stolen copy of the callback and its cookie).
    let replayed = web.get(&callback, &format!("cf_oidc={flow}")).await;
    assert_eq!(replayed.status, StatusCode::BAD_REQUEST, "{}", replayed.text);
    assert!(replayed.text.contains("expirou ou já foi usado"), "{}", replayed.text);
    assert_eq!(replayed.cookie("cf_session"), None);
}

#[tokio::test]
#[cfg_attr(
    not(oidc_provider_tests),
    ignore = "set CASHFLOW_TEST_OIDC_PROVIDER=1 (node, npm ci in scripts/oidc-provider)"
)]
async fn a_code_without_its_pkce_verifier_is_useless() {
    let web = Web::spawn(true).await;

    // No flow cookie (where the verifier is): refused before any exchange.
    let (_, authorize) = web.start().await;
    let callback = web.at_provider(&authorize, "maria").await;
    let bare = web.get(&callback, "").await;
    assert_eq!((bare.status, bare.cookie("cf_session")), (StatusCode::BAD_REQUEST, None), "{}", bare.text);
    let garbled = web.get(&callback, "cf_oidc=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!((garbled.status, garbled.cookie("cf_session")), (StatusCode::BAD_REQUEST, None));

    // That code at the token endpoint without a verifier: the provider requires PKCE.
    let code = param(&callback, "code");
    let token_endpoint = format!("{}/token", web.provider.issuer);
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", CLIENT),
        ("redirect_uri", "http://cashflow.test/auth/callback"),
    ];
    let answer = reqwest::Client::new().post(&token_endpoint).form(&form).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    let error: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(error["error"], "invalid_grant", "{error}");

    // A code injected into another browser's flow (its own state, its own verifier): the
    // state matches that browser's cookie, but the code is bound to the first verifier.
    let (victim_flow, victim_authorize) = web.start().await;
    let (_, attacker_authorize) = web.start().await;
    let attackers = web.at_provider(&attacker_authorize, "maria").await;
    let injected = with_param(&attackers, "state", &param(&victim_authorize, "state"));
    let page = web.get(&injected, &format!("cf_oidc={victim_flow}")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text);
    assert!(page.text.contains("expirou ou já foi usado"), "{}", page.text);
    assert_eq!(page.cookie("cf_session"), None);
}

#[tokio::test]
#[cfg_attr(
    not(oidc_provider_tests),
    ignore = "set CASHFLOW_TEST_OIDC_PROVIDER=1 (node, npm ci in scripts/oidc-provider)"
)]
async fn cancelling_at_the_provider_or_an_unlinked_identity_is_a_clear_4xx_page() {
    let web = Web::spawn(true).await;

    let (flow, authorize) = web.start().await;
    let mut browser = Browser::new();
    let interaction = browser.follow(authorize, &web.provider.issuer).await;
    let (_, resume, _) = browser.send(Method::GET, &format!("{interaction}/abort"), None).await;
    let callback = browser.follow(resume, &web.provider.issuer).await;
    let callback = callback.strip_prefix(PUBLIC_URL).unwrap().to_owned();
    assert_eq!(param(&callback, "error"), "access_denied");
    let denied = web.get(&callback, &format!("cf_oidc={flow}")).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.text);
    assert!(denied.text.contains("não autorizou a entrada") && denied.text.contains("href=\"/signin\""));
    assert_eq!(denied.cookie("cf_session"), None);

    // Someone the provider knows but no merchant does: the page says what to link.
    let unlinked = web.sign_in("ninguem").await;
    assert_eq!(unlinked.status, StatusCode::FORBIDDEN, "{}", unlinked.text);
    assert!(unlinked.text.contains("cashflow identity link --merchant M --subject ninguem"), "{}", unlinked.text);
    assert_eq!(unlinked.cookie("cf_session"), None);
}

#[tokio::test]
#[cfg_attr(
    not(oidc_provider_tests),
    ignore = "set CASHFLOW_TEST_OIDC_PROVIDER=1 (node, npm ci in scripts/oidc-provider)"
)]
async fn signing_out_of_a_provider_session_clears_it_and_visits_the_providers_logout() {
    let web = Web::spawn(true).await;
    let signed = web.sign_in("maria").await;
    let cookie = format!("cf_session={}", signed.cookie("cf_session").unwrap());
    let today = web.get("/", &cookie).await;
    let out = web.post("/signout", &cookie, &[("csrf", &today.csrf())]).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.text);
    assert!(out.set_cookie("cf_session").unwrap().contains("Max-Age=0"), "the session cookie is cleared");
    let logout = format!(
        "{}/session/end?client_id={CLIENT}&amp;post_logout_redirect_uri=http%3A%2F%2Fcashflow.test%2Fsignin",
        web.provider.issuer
    );
    assert!(out.text.contains(&format!("content=\"0; url={logout}\"")), "{}", out.text);

    // The provider takes that logout request (its confirmation page, not an error).
    let mut browser = Browser::new();
    let (status, _, body) = browser.send(Method::GET, &logout.replace("&amp;", "&"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("logout"), "{body}");
}
