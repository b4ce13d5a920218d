//! The web app through the router `serve` runs (`oneshot`, no socket): sign-in and its cookie,
//! CSRF, recording as a merchant types it, API validation shown in the page, reversal, live
//! events, languages and security headers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly, by design

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use secrecy::SecretString;
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

use cashflow::app::{AppConfig, Application};
use cashflow_auth::Scopes;
use cashflow_domain::MerchantId;
use common::{hidden, Site};

mod common;

struct Web {
    app: Application,
    router: Router,
    merchant: MerchantId,
    _dir: TempDir,
}

impl Site for Web {
    fn router(&self) -> &Router {
        &self.router
    }
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_owned()
}

const PASSWORD: &str = "correct horse battery";

impl Web {
    async fn spawn(public_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = AppConfig::embedded(dir.path(), public_url, Duration::from_secs(600));
        let app = Application::build(&config).await.unwrap();
        let merchant = common::create_merchant(&app).await;
        app.identity.create_user("maria", &SecretString::from(PASSWORD), merchant, Scopes::all()).await.unwrap();
        let router = app.router();
        let web = Self { app, router, merchant, _dir: dir };
        web.consolidate().await;
        web
    }

    /// Signs in through the page; returns the session cookie's `Set-Cookie`.
    async fn sign_in(&self) -> String {
        self.sign_in_as("maria").await
    }

    /// A user of the merchant allowed only `scopes`, and a session cookie header of theirs.
    async fn session_of(&self, username: &str, scopes: &str) -> String {
        let scopes = Scopes::parse_list(scopes).unwrap();
        self.app.identity.create_user(username, &SecretString::from(PASSWORD), self.merchant, scopes).await.unwrap();
        format!("cf_session={}", cookie_value(&self.sign_in_as(username).await))
    }

    /// Signs `username` in through the page; returns the session cookie's `Set-Cookie`.
    async fn sign_in_as(&self, username: &str) -> String {
        let page = self.get("/signin", "").await;
        let pre = cookie_value(&page.set_cookie("cf_pre").expect("a pre-session cookie"));
        let signed = self
            .post(
                "/signin",
                &format!("cf_pre={pre}"),
                &[("csrf", &page.csrf()), ("username", username), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(signed.status, StatusCode::SEE_OTHER, "{}", signed.text);
        assert_eq!(signed.location(), "/");
        signed.set_cookie("cf_session").expect("a session cookie")
    }

    /// A session cookie header and the CSRF token of its forms.
    async fn session(&self) -> (String, String) {
        let cookie = format!("cf_session={}", cookie_value(&self.sign_in().await));
        let today = self.get("/", &cookie).await;
        assert_eq!(today.status, StatusCode::OK, "{}", today.text);
        (cookie, today.csrf())
    }

    /// The merchant's entries of today, through the API.
    async fn entries_today(&self) -> Vec<Value> {
        let token = self.app.issuer.mint("test", self.merchant, Scopes::all()).unwrap().0;
        let today = chrono::Utc::now().with_timezone(&chrono_tz::America::Sao_Paulo).date_naive();
        let request = Request::get(format!("/v1/entries?date={today}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let page = self.send(request).await;
        let body: Value = serde_json::from_str(&page.text).unwrap();
        body["items"].as_array().unwrap().clone()
    }

    /// A token of the merchant with every scope, for calling the API directly.
    fn token(&self) -> String {
        self.app.issuer.mint("test", self.merchant, Scopes::all()).unwrap().0
    }

    async fn consolidate(&self) {
        self.app.relay().drain().await.unwrap();
        self.app.consumer().drain().await.unwrap();
    }
}

fn record_form<'a>(csrf: &'a str, amount: &'a str, key: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("idempotency_key", key),
        ("type", "credit"),
        ("amount", amount),
        ("description", "Venda balcão"),
        ("category", "sales"),
        ("occurred_at", ""),
        ("then", "today"),
    ]
}

/// `form` with `key` set to `value` instead.
fn with<'a>(mut form: Vec<(&'a str, &'a str)>, key: &'a str, value: &'a str) -> Vec<(&'a str, &'a str)> {
    form.retain(|(k, _)| *k != key);
    form.push((key, value));
    form
}

#[tokio::test]
async fn signing_in_sets_an_http_only_same_site_strict_session_cookie() {
    let web = Web::spawn("http://cashflow.test").await;
    let cookie = web.sign_in().await;
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    assert!(cookie.contains("Max-Age=600"), "lives as long as the token: {cookie}");
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");

    let https = Web::spawn("https://cashflow.example").await;
    assert!(https.sign_in().await.contains("; Secure"), "Secure when the public URL is https");
}

#[tokio::test]
async fn a_wrong_password_shows_the_sign_in_page_again_with_the_error() {
    let web = Web::spawn("http://cashflow.test").await;
    let page = web.get("/signin", "").await;
    let pre = cookie_value(&page.set_cookie("cf_pre").unwrap());
    let refused = web
        .post(
            "/signin",
            &format!("cf_pre={pre}"),
            &[("csrf", &page.csrf()), ("username", "maria"), ("password", "nope")],
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.text.contains("Usuário ou senha incorretos."), "{}", refused.text);
    assert!(refused.set_cookie("cf_session").is_none());
}

#[tokio::test]
async fn a_sign_in_without_the_pre_session_token_is_refused() {
    let web = Web::spawn("http://cashflow.test").await;
    let refused = web.post("/signin", "", &[("username", "maria"), ("password", PASSWORD)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.set_cookie("cf_session").is_none());
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused_and_records_nothing() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;

    let missing = web.post("/entries", &cookie, &record_form("", "10,00", "k1")).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN, "{}", missing.text);
    let forged = web.post("/entries", &cookie, &record_form("AAAA", "10,00", "k2")).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let another_sessions = web.session().await.1;
    assert_ne!(another_sessions, csrf);
    let foreign = web.post("/entries", &cookie, &record_form(&another_sessions, "10,00", "k3")).await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "a token is bound to its own session");

    assert!(web.entries_today().await.is_empty(), "nothing was recorded");
}

#[tokio::test]
async fn an_amount_typed_the_brazilian_way_records_those_minor_units() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;

    let recorded = web.post("/entries", &cookie, &record_form(&csrf, "1.234,56", "sale-1")).await;
    assert_eq!(recorded.status, StatusCode::SEE_OTHER, "{}", recorded.text);
    assert_eq!(recorded.location(), "/?recorded=1");

    let entries = web.entries_today().await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["amount"], "1234.56", "123456 minor units");
    assert_eq!(entries[0]["description"], "Venda balcão");

    let again = web.post("/entries", &cookie, &record_form(&csrf, "1.234,56", "sale-1")).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER);
    assert_eq!(web.entries_today().await.len(), 1, "a double submit replays the same idempotency key");

    web.consolidate().await;
    let today = web.get("/", &cookie).await;
    assert!(today.text.contains("R$ 1.234,56"), "{}", today.text);
}

#[tokio::test]
async fn save_and_add_another_comes_back_to_an_empty_form() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    let form = with(record_form(&csrf, "5,00", "k-another"), "then", "another");
    let recorded = web.post("/entries", &cookie, &form).await;
    assert_eq!(recorded.location(), "/record?recorded=1");
    let page = web.get("/record?recorded=1", &cookie).await;
    assert!(page.text.contains("Lançamento registrado."));
    assert_ne!(hidden(&page.text, "idempotency_key"), "k-another", "a new form gets a new key");
}

#[tokio::test]
async fn an_api_validation_error_is_shown_next_to_its_field_with_what_was_typed() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;

    let zero = web.post("/entries", &cookie, &record_form(&csrf, "0,00", "k-zero")).await;
    assert_eq!(zero.status, StatusCode::BAD_REQUEST, "{}", zero.text);
    assert!(zero.text.contains(r#"id="amount-error""#), "{}", zero.text);
    assert!(zero.text.contains("Valor inválido"), "{}", zero.text);
    assert!(zero.text.contains(r#"aria-invalid="true""#));
    assert!(zero.text.contains(r#"value="Venda balcão""#), "what was typed stays");

    let future = with(record_form(&csrf, "1,00", "k-future"), "occurred_at", "2999-01-01T10:00");
    let refused = web.post("/entries", &cookie, &future).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.text);
    assert!(refused.text.contains(r#"id="occurred_at-error""#), "{}", refused.text);
    assert!(web.entries_today().await.is_empty());
}

#[tokio::test]
async fn a_backdated_entry_is_read_in_the_merchants_time_zone() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    let form = with(record_form(&csrf, "2,00", "k-back"), "occurred_at", "2026-11-23T22:30");
    assert_eq!(web.post("/entries", &cookie, &form).await.status, StatusCode::SEE_OTHER);
    let day = web.get("/entries?date=2026-11-23", &cookie).await;
    assert!(day.text.contains("23/11/2026 22:30"), "{}", day.text);
}

#[tokio::test]
async fn an_entry_is_reversed_after_a_confirmation_step() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    web.post("/entries", &cookie, &record_form(&csrf, "40,50", "k-rev")).await;
    let id = web.entries_today().await[0]["id"].as_str().unwrap().to_owned();

    let list = web.get("/entries", &cookie).await;
    let link = format!("/entries/{id}/reverse");
    assert!(list.text.contains(&link), "{}", list.text);
    let confirm = web.get(&link, &cookie).await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.text.contains("Confirmar estorno"));
    assert_eq!(web.entries_today().await.len(), 1, "asking records nothing");

    let done = web.post(&link, &cookie, &[("csrf", &confirm.csrf())]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    let entries = web.entries_today().await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["reversal_of"], id.as_str());

    let twice = web.post(&link, &cookie, &[("csrf", &confirm.csrf())]).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert!(twice.text.contains("já foi estornado"), "{}", twice.text);
}

#[tokio::test]
async fn entries_are_paginated_with_the_apis_cursor() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    for i in 0..51 {
        let key = format!("k{i}");
        web.post("/entries", &cookie, &record_form(&csrf, "1,00", &key)).await;
    }
    let first = web.get("/entries", &cookie).await;
    assert_eq!(first.text.matches("data-entry=").count(), 50);
    let start = first.text.find("rel=\"next\" href=\"").unwrap() + "rel=\"next\" href=\"".len();
    let next = first.text[start..].split('"').next().unwrap().replace("&amp;", "&");
    let second = web.get(&next, &cookie).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.text.matches("data-entry=").count(), 1);
}

#[tokio::test]
async fn an_expired_or_forged_session_goes_back_to_sign_in() {
    let web = Web::spawn("http://cashflow.test").await;
    let page = web.get("/", "cf_session=not-a-token").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), "/signin?expired=1");
    assert!(page.set_cookie("cf_session").unwrap().contains("Max-Age=0"), "the cookie is cleared");
    assert_eq!(web.get("/", "").await.location(), "/signin");
    assert_eq!(web.get("/today/panel", "cf_session=x").await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn signing_out_clears_the_session() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    let out = web.post("/signout", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(out.location(), "/signin");
    assert!(out.set_cookie("cf_session").unwrap().contains("Max-Age=0"));
}

#[tokio::test]
async fn pages_are_in_portuguese_by_default_and_english_on_request() {
    let web = Web::spawn("http://cashflow.test").await;
    let pt = web.get("/signin", "").await;
    for label in ["Usuário", "Senha", "Entrar", r#"lang="pt-BR""#] {
        assert!(pt.text.contains(label), "{label}");
    }
    let request =
        Request::get("/signin").header(header::ACCEPT_LANGUAGE, "en-US,en;q=0.9").body(Body::empty()).unwrap();
    let en = web.send(request).await;
    for label in ["Username", "Password", "Sign in"] {
        assert!(en.text.contains(label), "{label}");
    }
    let switched = web.get("/lang/en?next=/signin", "").await;
    assert_eq!(switched.location(), "/signin");
    assert!(switched.set_cookie("cf_lang").unwrap().starts_with("cf_lang=en"));
    assert_eq!(web.get("/lang/en?next=//evil.example", "").await.location(), "/", "no open redirect");

    let (cookie, _) = web.session().await;
    let today = web.get("/", &format!("{cookie}; cf_lang=en")).await;
    for label in ["Opening balance", "Credits", "Debits", "Closing balance", "Type", "Amount", "Record"] {
        assert!(today.text.contains(label), "{label}");
    }
    let pt_today = web.get("/", &cookie).await;
    for label in [
        "Saldo inicial",
        "Créditos",
        "Débitos",
        "Saldo final",
        "Tipo",
        "Crédito",
        "Débito",
        "Valor",
        "Descrição",
        "Categoria",
        "Data e hora",
        "Registrar",
    ] {
        assert!(pt_today.text.contains(label), "{label}");
    }
}

#[tokio::test]
async fn every_page_and_asset_carries_the_security_headers() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, _) = web.session().await;
    let css = web.get("/signin", "").await;
    let css_url = {
        let start = css.text.find("/assets/app.css").unwrap();
        css.text[start..].split('"').next().unwrap().to_owned()
    };
    for path in ["/signin", "/", "/record", "/entries", css_url.as_str(), "/manifest.webmanifest"] {
        let page = web.get(path, &cookie).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        let csp = page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}");
        assert_eq!(page.headers[header::REFERRER_POLICY], "no-referrer", "{path}");
        assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
    }
    let today = web.get("/", &cookie).await;
    assert_eq!(today.headers[header::CACHE_CONTROL], "no-store", "private pages are not stored");
    assert!(!today.text.contains("<script>") && !today.text.contains("style="), "no inline script or style");
}

#[tokio::test]
async fn a_consolidation_commit_is_pushed_to_the_merchants_event_stream() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    let request = Request::get("/events").header(header::COOKIE, &cookie).body(Body::empty()).unwrap();
    let response = web.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = response.into_body();

    web.post("/entries", &cookie, &record_form(&csrf, "3,00", "k-live")).await;
    web.consolidate().await;

    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !seen.contains("event: balance") {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await.expect("an event in time").unwrap().unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(seen.contains("\nid: "), "{seen}");

    let unsigned = web.get("/events", "").await;
    assert_eq!(unsigned.status, StatusCode::UNAUTHORIZED);
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().with_timezone(&chrono_tz::America::Sao_Paulo).date_naive()
}

/// Records `amount` (pt-BR) of `kind` through the page, then lets consolidation apply it.
async fn record(web: &Web, cookie: &str, csrf: &str, kind: &str, amount: &str, key: &str) {
    let form = with(record_form(csrf, amount, key), "type", kind);
    let recorded = web.post("/entries", cookie, &form).await;
    assert_eq!(recorded.status, StatusCode::SEE_OTHER, "{}", recorded.text);
}

/// The text of the element with `id`, up to its closing tag.
fn text_of(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no #{id} in {html}"));
    let open_end = html[start..].find('>').unwrap() + start + 1;
    html[open_end..].split('<').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_report_shows_the_periods_figures_a_chart_and_a_table_of_its_days() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    let yesterday = today() - chrono::Days::new(1);
    let backdated = format!("{yesterday}T09:00");
    let form = with(record_form(&csrf, "100,00", "k-y"), "occurred_at", &backdated);
    assert_eq!(web.post("/entries", &cookie, &form).await.status, StatusCode::SEE_OTHER);
    record(&web, &cookie, &csrf, "credit", "1.234,56", "k-c").await;
    record(&web, &cookie, &csrf, "debit", "40,50", "k-d").await;
    web.consolidate().await;

    let page = web.get(&format!("/reports?from={yesterday}&to={}", today()), &cookie).await;

    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    for label in ["Saldo inicial", "Créditos", "Débitos", "Saldo final", "Exportar CSV"] {
        assert!(page.text.contains(label), "{label}");
    }
    assert_eq!(text_of(&page.text, "report-opening"), "R$ 0,00");
    assert_eq!(text_of(&page.text, "report-credits"), "R$ 1.334,56");
    assert_eq!(text_of(&page.text, "report-debits"), "R$ 40,50");
    assert_eq!(text_of(&page.text, "report-closing"), "R$ 1.294,06");
    assert!(page.text.contains(r#"role="img""#) && page.text.contains(r#"<title id="chart-title">"#));
    assert!(page.text.contains(r#"<desc id="chart-desc">"#));
    assert_eq!(page.text.matches("class=\"bar-credit\"").count(), 2, "a credit bar per day");
    assert_eq!(page.text.matches("data-day=").count(), 2, "a table row per day");
    assert!(page.text.contains(&format!("/reports/export?from={yesterday}&amp;to={}", today())));

    let en = web.get(&format!("/reports?from={yesterday}&to={}", today()), &format!("{cookie}; cf_lang=en")).await;
    for label in ["Opening balance", "Credits", "Debits", "Closing balance", "Export CSV"] {
        assert!(en.text.contains(label), "{label}");
    }
}

#[tokio::test]
async fn the_csv_export_is_the_apis_csv_as_a_download() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    record(&web, &cookie, &csrf, "credit", "10,00", "k-1").await;
    web.consolidate().await;
    let from = today() - chrono::Days::new(2);

    let csv = web.get(&format!("/reports/export?from={from}&to={}", today()), &cookie).await;

    assert_eq!(csv.status, StatusCode::OK, "{}", csv.text);
    assert!(csv.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/csv"));
    let disposition = csv.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
    assert_eq!(disposition, format!("attachment; filename=\"cashflow-{from}-{}.csv\"", today()));
    let api = Request::get(format!("/v1/balances/daily?from={from}&to={}", today()))
        .header(header::AUTHORIZATION, format!("Bearer {}", web.token()))
        .header(header::ACCEPT, "text/csv")
        .body(Body::empty())
        .unwrap();
    assert_eq!(csv.text, web.send(api).await.text, "byte for byte the API's");
    let lines: Vec<&str> = csv.text.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three days: {}", csv.text);
    assert!(lines[3].starts_with(&format!("{},BRL,0.00,10.00,0.00,10.00,10.00,1", today())), "{}", lines[3]);
}

#[tokio::test]
async fn a_period_the_api_refuses_is_a_4xx_page_with_the_reason() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, _) = web.session().await;
    let reversed = web.get("/reports?from=2026-12-05&to=2026-12-01", &cookie).await;
    assert_eq!(reversed.status, StatusCode::BAD_REQUEST, "{}", reversed.text);
    assert!(reversed.text.contains("Período inválido"), "{}", reversed.text);
    let too_long = web.get("/reports?from=2024-01-01&to=2026-01-01", &cookie).await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    let csv = web.get("/reports/export?from=2026-12-05&to=2026-12-01", &cookie).await;
    assert_eq!(csv.status, StatusCode::BAD_REQUEST, "{}", csv.text);
}

#[tokio::test]
async fn a_cashier_sees_no_reports_and_is_refused_them() {
    let web = Web::spawn("http://cashflow.test").await;
    let cashier = web.session_of("caixa", "entries:write entries:read").await;

    let today = web.get("/", &cashier).await;
    assert_eq!(today.status, StatusCode::OK, "{}", today.text);
    assert!(!today.text.contains(r#"href="/reports""#), "no Reports in the navigation");
    assert!(!today.text.contains(r#"href="/close""#), "no Close the till either");
    assert!(today.text.contains(r#"action="/entries""#), "the record form is there");

    let reports = web.get("/reports", &cashier).await;
    assert_eq!(reports.status, StatusCode::FORBIDDEN);
    assert!(reports.text.contains("Seu perfil não permite"), "{}", reports.text);
    assert_eq!(web.get("/reports/export", &cashier).await.status, StatusCode::FORBIDDEN, "the API refuses it");
    assert_eq!(web.get("/close", &cashier).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_accountant_sees_no_record_form_and_cannot_record_or_reverse() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    record(&web, &cookie, &csrf, "credit", "5,00", "k-acc").await;
    let id = web.entries_today().await[0]["id"].as_str().unwrap().to_owned();
    let accountant = web.session_of("contador", "entries:read reports:read").await;

    let today = web.get("/", &accountant).await;
    assert_eq!(today.status, StatusCode::OK, "{}", today.text);
    assert!(!today.text.contains(r#"id="record""#), "no record form");
    assert!(!today.text.contains(r#"href="/record""#));
    assert!(today.text.contains(r#"href="/reports""#));
    let entries = web.get("/entries", &accountant).await;
    assert!(entries.text.contains("data-entry=") && !entries.text.contains("/reverse"), "no reversal links");
    assert_eq!(web.get("/record", &accountant).await.status, StatusCode::FORBIDDEN);
    assert_eq!(web.get(&format!("/entries/{id}/reverse"), &accountant).await.status, StatusCode::FORBIDDEN);
    assert_eq!(web.get("/reports", &accountant).await.status, StatusCode::OK);

    // The server enforces it whatever the page showed: a form posted by hand is refused.
    let csrf = {
        let page = web.get("/reports", &accountant).await;
        page.csrf()
    };
    let posted = web.post("/entries", &accountant, &record_form(&csrf, "9,00", "k-forged")).await;
    assert_eq!(posted.status, StatusCode::FORBIDDEN, "{}", posted.text);
    let reversed = web.post(&format!("/entries/{id}/reverse"), &accountant, &[("csrf", &csrf)]).await;
    assert_eq!(reversed.status, StatusCode::FORBIDDEN, "{}", reversed.text);
    assert_eq!(web.entries_today().await.len(), 1, "nothing was recorded");
}

const MANAGER: &str = "entries:write entries:read reports:read days:close";

#[tokio::test]
async fn closing_the_till_shows_expected_counted_and_the_difference() {
    let web = Web::spawn("http://cashflow.test").await;
    let manager = web.session_of("gerente", MANAGER).await;
    let form = web.get("/close", &manager).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.text);
    assert!(form.text.contains("Fechar o caixa") && form.text.contains("Dinheiro contado"));
    assert!(form.text.contains(&format!(r#"value="{}""#, today())), "today by default");
    let csrf = form.csrf();
    record(&web, &manager, &csrf, "credit", "150,00", "k-1").await;
    record(&web, &manager, &csrf, "debit", "20,00", "k-2").await;

    let closed = web
        .post(
            "/close",
            &manager,
            &[("csrf", &csrf), ("date", &today().to_string()), ("counted_cash", "1.125,50"), ("note", "Conferido")],
        )
        .await;

    assert_eq!(closed.status, StatusCode::OK, "{}", closed.text);
    assert!(closed.text.contains("Caixa fechado."));
    assert_eq!(text_of(&closed.text, "expected"), "R$ 130,00");
    assert_eq!(text_of(&closed.text, "counted"), "R$ 1.125,50");
    assert_eq!(text_of(&closed.text, "difference"), "R$ 995,50", "counted minus expected");
    assert!(closed.text.contains("Diferença (quebra de caixa)"));

    let again = web.post("/close", &manager, &[("csrf", &csrf), ("date", &today().to_string())]).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert!(again.text.contains("Este dia já está fechado."), "{}", again.text);
    let late = web.post("/entries", &manager, &record_form(&csrf, "1,00", "k-late")).await;
    assert_eq!(late.status, StatusCode::CONFLICT, "a closed day takes no entries: {}", late.text);
    assert!(late.text.contains("O dia deste lançamento já está fechado."), "{}", late.text);
}

#[tokio::test]
async fn a_short_till_shows_a_negative_difference_and_bad_input_closes_nothing() {
    let web = Web::spawn("http://cashflow.test").await;
    let manager = web.session_of("gerente", MANAGER).await;
    let csrf = web.get("/close", &manager).await.csrf();
    record(&web, &manager, &csrf, "credit", "50,00", "k-1").await;
    let date = today().to_string();

    let unreadable = web.post("/close", &manager, &[("csrf", &csrf), ("date", &date), ("counted_cash", "abc")]).await;
    assert_eq!(unreadable.status, StatusCode::BAD_REQUEST, "{}", unreadable.text);
    assert!(unreadable.text.contains(r#"id="counted_cash-error""#), "{}", unreadable.text);
    assert!(unreadable.text.contains(r#"value="abc""#), "what was typed stays");
    let future = (today() + chrono::Days::new(2)).to_string();
    let early = web.post("/close", &manager, &[("csrf", &csrf), ("date", &future)]).await;
    assert_eq!(early.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", early.text);
    let forged = web.post("/close", &manager, &[("csrf", "forged"), ("date", &date)]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    let short = web.post("/close", &manager, &[("csrf", &csrf), ("date", &date), ("counted_cash", "45,00")]).await;
    assert_eq!(short.status, StatusCode::OK, "nothing was closed before: {}", short.text);
    assert_eq!(text_of(&short.text, "difference"), "-R$ 5,00");
    assert!(short.text.contains(r#"<div class="debit"><dt>Diferença"#), "a short till is shown as a loss");
}

#[tokio::test]
async fn only_a_role_with_days_close_may_close_the_till() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    let page = web.get("/", &cookie).await;
    assert!(!page.text.contains(r#"href="/close""#), "entries and reports only: no Close the till");
    assert_eq!(web.get("/close", &cookie).await.status, StatusCode::FORBIDDEN);
    let posted = web.post("/close", &cookie, &[("csrf", &csrf), ("date", &today().to_string())]).await;
    assert_eq!(posted.status, StatusCode::FORBIDDEN, "the API refuses it: {}", posted.text);
    let manager = web.session_of("gerente", MANAGER).await;
    assert!(web.get("/", &manager).await.text.contains(r#"href="/close""#));
}

#[tokio::test]
async fn the_service_worker_is_served_from_the_root_with_this_builds_asset_version() {
    let web = Web::spawn("http://cashflow.test").await;
    let page = web.get("/signin", "").await;
    let version = {
        let start = page.text.find("/assets/app.js?v=").unwrap() + "/assets/app.js?v=".len();
        page.text[start..].split('"').next().unwrap().to_owned()
    };

    let sw = web.get("/sw.js", "").await;

    assert_eq!(sw.status, StatusCode::OK);
    assert!(sw.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/javascript"));
    assert_eq!(sw.headers[header::CACHE_CONTROL], "no-cache", "updates are checked on every navigation");
    assert!(sw.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
    assert!(sw.text.contains(&format!("const VERSION = '{version}'")), "caches the assets the pages link");
    assert!(!sw.text.contains("__VERSION__"));
    let js = web.get(&format!("/assets/app.js?v={version}"), "").await;
    assert!(js.text.contains("serviceWorker.register('/sw.js', { scope: '/' })"));
}

#[tokio::test]
async fn the_manifest_lists_png_icons_that_are_served_and_a_shortcut_to_record() {
    let web = Web::spawn("http://cashflow.test").await;
    let manifest: Value = serde_json::from_str(&web.get("/manifest.webmanifest", "").await.text).unwrap();
    let icons = manifest["icons"].as_array().unwrap();
    for size in ["192x192", "512x512"] {
        let icon = icons.iter().find(|i| i["sizes"] == size).unwrap_or_else(|| panic!("no {size} icon"));
        let png = web
            .router
            .clone()
            .oneshot(Request::get(icon["src"].as_str().unwrap()).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(png.status(), StatusCode::OK, "{size}");
        assert_eq!(png.headers()[header::CONTENT_TYPE], "image/png");
        let bytes = png.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let (width, height) = (
            u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
            u32::from_be_bytes(bytes[20..24].try_into().unwrap()),
        );
        assert_eq!(format!("{width}x{height}"), size, "the size it claims");
    }
    assert_eq!(manifest["shortcuts"][0]["url"], "/record");
}

#[tokio::test]
async fn the_offline_queue_is_on_the_pages_of_those_who_record_and_names_its_user() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, _) = web.session().await;
    for path in ["/", "/record"] {
        let page = web.get(path, &cookie).await;
        assert!(page.text.contains(r#"<section class="card" id="outbox" hidden"#), "{path}: {}", page.text);
        assert!(page.text.contains(r#"data-owner="maria""#), "{path}");
    }
    let accountant = web.session_of("contador", "entries:read reports:read").await;
    assert!(!web.get("/", &accountant).await.text.contains(r#"id="outbox""#));
}

#[tokio::test]
async fn an_entry_sent_from_the_offline_queue_keeps_its_time_and_a_replay_records_it_once() {
    let web = Web::spawn("http://cashflow.test").await;
    let (cookie, csrf) = web.session().await;
    // What the page script sends: the device's key and the instant it was typed, in UTC.
    let made = (chrono::Utc::now() - chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let key = "6f1c2d9e-3b7a-4c51-9d0e-5a8b7c6d5e4f";
    let form = with(with(record_form(&csrf, "12,34", key), "occurred_at", &made), "description", "Offline 1");

    let first = web.post("/entries", &cookie, &form).await;
    let replay = web.post("/entries", &cookie, &form).await;

    assert_eq!(first.status, StatusCode::SEE_OTHER, "{}", first.text);
    assert_eq!(replay.status, StatusCode::SEE_OTHER, "a replay is answered like the first: {}", replay.text);
    let entries = web.entries_today().await;
    assert_eq!(entries.len(), 1, "recorded once");
    assert_eq!(entries[0]["amount"], "12.34");
    let occurred = chrono::DateTime::parse_from_rfc3339(entries[0]["occurred_at"].as_str().unwrap()).unwrap();
    assert_eq!(occurred.to_utc().format("%Y-%m-%dT%H:%M:%SZ").to_string(), made, "dated when it was made");
}
