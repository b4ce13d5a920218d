//! One function per route. Each reads the session and the language, calls the API, and renders
//! a page or redirects (POST, then redirect: reloading never sends a form twice).

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use chrono::{NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use maud::Markup;
use serde::Deserialize;

use crate::api::{ApiError, CloseDay, DailyBalanceRange, Entry, EntryQuery, Merchant, NewEntry};
use crate::chart::ReportDay;
use crate::i18n::Lang;
use crate::oidc::{Flow, OidcSignIn, SignInError};
use crate::pages::{self, Books, CloseForm, RecordForm, ReportView, View};
use crate::session::{self, cookie, random_token};
use crate::{money, WebState};

/// How many entries the "today" panel shows, newest first.
const LATEST: usize = 10;

fn lang_of(headers: &HeaderMap) -> Lang {
    cookie(headers, session::LANG)
        .and_then(Lang::from_tag)
        .unwrap_or_else(|| Lang::negotiate(headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok())))
}

fn session_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, session::SESSION)
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn with_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

impl WebState {
    fn view(&self, lang: Lang, token: Option<&str>, path: &str) -> View {
        let (can, user) = match (token, &self.sign_in.verifier) {
            (None, _) => (session::Can::default(), None),
            // What the API's verifier grants (an external issuer's groups, resource-server
            // scopes and identity link included), with the keys it has: the API decides alike.
            (Some(token), Some(verifier)) => match verifier.verify(token) {
                Ok(principal) => (session::Can::of_granted(principal.scopes), Some(principal.subject)),
                Err(_) => (session::Can::default(), session::subject(token)),
            },
            (Some(token), None) => (session::Can::of_token(token), session::subject(token)),
        };
        View {
            lang,
            csrf: token.map(|t| self.sessions.csrf(t)),
            path: path.to_owned(),
            can,
            user,
            poll_ms: self.poll.map(|every| every.as_millis()),
        }
    }

    /// The page for an API failure: sign in again, not allowed, the API's problem, or
    /// unavailable.
    fn failure(&self, view: &View, error: ApiError) -> Response {
        let m = view.m();
        match error {
            ApiError::Unauthorized => self.expired(),
            ApiError::Forbidden(_) => html(StatusCode::FORBIDDEN, pages::forbidden(view)),
            ApiError::Problem(problem) => {
                let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
                let message = problem_message(view, &problem);
                html(status, pages::error(view, &message))
            }
            ApiError::Transport(cause) => {
                tracing::error!(%cause, "web: the API call failed");
                html(StatusCode::SERVICE_UNAVAILABLE, pages::error(view, m.unavailable))
            }
        }
    }

    /// The session is over: back to the sign-in page, cookie cleared.
    fn expired(&self) -> Response {
        with_cookie(redirect("/signin?expired=1"), self.sessions.clear(session::SESSION))
    }
}

/// The page's text for a problem: ours for known types, else the API's detail or title.
fn problem_message(view: &View, problem: &crate::api::Problem) -> String {
    if problem.status >= 500 {
        return view.m().unavailable.to_owned();
    }
    problem
        .problem_type()
        .and_then(|kind| view.m().problem(kind))
        .map(str::to_owned)
        .or_else(|| problem.detail.clone())
        .unwrap_or_else(|| problem.title.clone())
}

fn time_zone(merchant: &Merchant) -> Tz {
    merchant.time_zone.parse().unwrap_or(chrono_tz::America::Sao_Paulo)
}

fn today_in(tz: Tz) -> NaiveDate {
    Utc::now().with_timezone(&tz).date_naive()
}

/// `?recorded=1` and the like, after a redirect.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    recorded: Option<String>,
    reversed: Option<String>,
    expired: Option<String>,
}

impl Notice {
    fn text(&self, lang: Lang) -> Option<&'static str> {
        let m = lang.messages();
        if self.recorded.is_some() {
            Some(m.recorded)
        } else if self.reversed.is_some() {
            Some(m.reversed)
        } else {
            None
        }
    }
}

/// The "today" panel of the signed-in merchant: figures (if the role may read reports) and
/// the latest entries (if it may read entries).
async fn panel(state: &WebState, view: &View, token: &str) -> Result<Markup, ApiError> {
    let merchant = state.client.merchant(token).await?;
    let tz = time_zone(&merchant);
    let date = today_in(tz);
    let query = EntryQuery { from: date, to: date, limit: 500, cursor: None };
    let (balance, entries) = tokio::join!(state.client.daily_balance(token, date), state.client.entries(token, &query));
    let m = view.m();
    let balance = match balance {
        Ok(balance) => Ok(balance),
        Err(ApiError::Forbidden(_)) => Err(m.no_report_access),
        // A merchant whose registration consolidation has not applied yet has no report.
        Err(ApiError::Problem(p)) if p.status == 404 => Err(m.balance_pending),
        Err(e) => return Err(e),
    };
    let latest: Option<Vec<Entry>> = allowed(entries)?.map(|page| page.items.into_iter().rev().take(LATEST).collect());
    let books = Books { merchant: &merchant, tz };
    Ok(pages::today_panel(view, &books, date, balance.as_ref().map_err(|e| *e), latest.as_deref()))
}

/// `Ok(None)` for what the user's role may not see.
fn allowed<T>(result: Result<T, ApiError>) -> Result<Option<T>, ApiError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(ApiError::Forbidden(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn fresh_form() -> RecordForm {
    RecordForm { kind: "credit".into(), idempotency_key: random_token(), ..RecordForm::default() }
}

/// `GET /`: today's balance, live, with the record form.
pub async fn today(State(state): State<WebState>, headers: HeaderMap, Query(notice): Query<Notice>) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return redirect("/signin") };
    let view = state.view(lang, Some(token), "/");
    match panel(&state, &view, token).await {
        Ok(panel) => html(StatusCode::OK, pages::today(&view, panel, &fresh_form(), notice.text(lang))),
        Err(e) => state.failure(&view, e),
    }
}

/// `GET /today/panel`: the panel alone, for the page script; 401 (not a redirect) when the
/// session is over, so the script can send the user to sign in. It carries an `ETag` of its
/// content, and answers `304 Not Modified` to an `If-None-Match` naming it: a polling page
/// (where events cannot be streamed) transfers the panel only when a figure changed.
pub async fn today_panel(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return StatusCode::UNAUTHORIZED.into_response() };
    let view = state.view(lang, Some(token), "/");
    match panel(&state, &view, token).await {
        Ok(panel) => {
            let body = panel.into_string();
            let etag = etag(&body);
            let mut response = if if_none_match(&headers, &etag) {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                (StatusCode::OK, Html(body)).into_response()
            };
            if let Ok(value) = HeaderValue::from_str(&etag) {
                response.headers_mut().insert(header::ETAG, value);
            }
            response
        }
        Err(ApiError::Unauthorized) => StatusCode::UNAUTHORIZED.into_response(),
        Err(e) => state.failure(&view, e),
    }
}

/// A strong `ETag` of `body`: 64-bit FNV-1a, the same in every process and function instance.
fn etag(body: &str) -> String {
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("\"{hash:016x}\"")
}

/// Whether the request's `If-None-Match` names `etag` (or is `*`).
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == etag || tag == "*")
}

/// `?last_id=`: the id to resume after, for a script that reconnects by itself (a new
/// `EventSource` does not send `Last-Event-ID`).
#[derive(Debug, Default, Deserialize)]
pub struct Resume {
    last_id: Option<String>,
}

/// `GET /events`: server-sent events of the signed-in merchant's consolidation commits.
pub async fn events(State(state): State<WebState>, headers: HeaderMap, Query(resume): Query<Resume>) -> Response {
    let Some(token) = session_token(&headers) else { return StatusCode::UNAUTHORIZED.into_response() };
    let merchant = match state.client.merchant(token).await {
        Ok(merchant) => merchant,
        Err(ApiError::Unauthorized) => return StatusCode::UNAUTHORIZED.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "web: no merchant for the event stream");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    let Ok(merchant) = cashflow_domain::MerchantId::parse(&merchant.id) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(resume.last_id.as_deref())
        .and_then(|id| id.trim().parse::<u64>().ok());
    crate::live::events(&state.live, merchant, last_id).into_response()
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// The sign-in page, bound to a pre-session cookie (made here when there is none).
fn sign_in_form(
    state: &WebState,
    headers: &HeaderMap,
    status: StatusCode,
    username: &str,
    error: Option<&str>,
) -> Response {
    let lang = lang_of(headers);
    let view = state.view(lang, None, "/signin");
    let (pre, cookie) = match cookie(headers, session::PRE_SESSION) {
        Some(pre) => (pre.to_owned(), None),
        None => state.sessions.pre_session_cookie(),
    };
    let csrf = state.sessions.csrf(&pre);
    let offers = pages::SignInOptions {
        password: state.sign_in.password,
        provider: state.sign_in.oidc.as_ref().map(OidcSignIn::display_name),
    };
    with_cookie(html(status, pages::sign_in(&view, &csrf, username, error, &offers)), cookie)
}

/// `GET /signin`.
pub async fn sign_in_page(State(state): State<WebState>, headers: HeaderMap, Query(notice): Query<Notice>) -> Response {
    let lang = lang_of(&headers);
    let error = notice.expired.as_ref().map(|_| lang.messages().session_expired);
    sign_in_form(&state, &headers, StatusCode::OK, "", error)
}

/// `POST /signin`: the built-in issuer's password grant, done by the server; the token goes
/// into the session cookie and nowhere else.
pub async fn sign_in(
    State(state): State<WebState>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    let m = lang_of(&headers).messages();
    if !state.sign_in.password {
        // The built-in issuer's tokens are not trusted here: its password grant signs no one in.
        return redirect("/signin");
    }
    let Ok(Form(form)) = form else { return sign_in_form(&state, &headers, StatusCode::BAD_REQUEST, "", None) };
    let bound = cookie(&headers, session::PRE_SESSION).is_some_and(|pre| state.sessions.csrf_ok(pre, &form.csrf));
    if !bound {
        return sign_in_form(&state, &headers, StatusCode::FORBIDDEN, &form.username, Some(m.form_expired));
    }
    match state.client.sign_in(&form.username, &form.password).await {
        Ok(token) => {
            let response =
                with_cookie(redirect("/"), state.sessions.session_cookie(&token.access_token, token.expires_in));
            with_cookie(response, state.sessions.clear(session::PRE_SESSION))
        }
        Err(ApiError::Problem(p)) if p.status < 500 => {
            sign_in_form(&state, &headers, StatusCode::BAD_REQUEST, &form.username, Some(m.sign_in_failed))
        }
        Err(ApiError::Unauthorized) => {
            sign_in_form(&state, &headers, StatusCode::BAD_REQUEST, &form.username, Some(m.sign_in_failed))
        }
        Err(e) => {
            tracing::error!(error = %e, "web: sign-in failed");
            sign_in_form(&state, &headers, StatusCode::SERVICE_UNAVAILABLE, &form.username, Some(m.unavailable))
        }
    }
}

/// A form with only its CSRF token.
#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `POST /signout`: clears the session cookie; a session made through the OpenID Provider
/// then signs out of the provider too (its logout endpoint sends the browser back to
/// `/signin`), else back to `/signin` directly.
pub async fn sign_out(
    State(state): State<WebState>,
    headers: HeaderMap,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Response {
    let Some(token) = session_token(&headers) else { return redirect("/signin") };
    match form {
        Ok(Form(form)) if state.sessions.csrf_ok(token, &form.csrf) => {
            let cleared = state.sessions.clear(session::SESSION);
            let provider =
                state.sign_in.oidc.as_ref().filter(|oidc| session::issuer(token).as_deref() == Some(oidc.issuer()));
            let logout = match provider {
                Some(oidc) => oidc.logout_url().await,
                None => None,
            };
            match logout {
                Some(url) => {
                    let view = state.view(lang_of(&headers), None, "/signin");
                    with_cookie(html(StatusCode::OK, pages::moving_on(&view, view.m().signing_out, &url)), cleared)
                }
                None => with_cookie(redirect("/signin"), cleared),
            }
        }
        _ => redirect("/"),
    }
}

/// `GET /auth/start`: a sign-in through the OpenID Provider. A fresh flow goes into its sealed
/// cookie and the browser to the provider's authorization endpoint. A link, not a form: it
/// changes nothing here but that cookie, and a form's redirect to another origin is what
/// `form-action 'self'` forbids.
pub async fn auth_start(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let Some(oidc) = &state.sign_in.oidc else { return redirect("/signin") };
    let m = lang_of(&headers).messages();
    let flow = Flow::new();
    let Some(sealed) = flow.seal(&state.sessions) else {
        return sign_in_form(&state, &headers, StatusCode::SERVICE_UNAVAILABLE, "", Some(m.unavailable));
    };
    match oidc.authorization_url(&flow).await {
        Ok(url) => with_cookie(redirect(&url), state.sessions.flow_cookie(&sealed)),
        Err(error) => {
            tracing::error!(%error, "web: cannot start a sign-in at the OpenID Provider");
            sign_in_form(&state, &headers, StatusCode::SERVICE_UNAVAILABLE, "", Some(m.unavailable))
        }
    }
}

/// The provider's answer at the callback.
#[derive(Debug, Default, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    /// `access_denied` and the like (RFC 6749 §4.1.2.1).
    error: Option<String>,
    /// The issuer that answered, when the provider says (RFC 9207): an answer from another
    /// issuer than the one this flow went to is refused (a mix-up attack).
    iss: Option<String>,
}

/// `GET /auth/callback`: finishes the sign-in the flow cookie holds, then moves on to `/`
/// with the session cookie (a page, not a redirect: see [`pages::moving_on`]). The flow
/// cookie is cleared whatever happens: a flow is used once.
pub async fn auth_callback(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(callback): Query<Callback>,
) -> Response {
    let Some(oidc) = &state.sign_in.oidc else { return redirect("/signin") };
    let view = state.view(lang_of(&headers), None, "/signin");
    let m = view.m();
    let result = async {
        let flow = cookie(&headers, session::FLOW)
            .and_then(|sealed| Flow::open(&state.sessions, sealed))
            .filter(|flow| callback.state.as_deref().is_some_and(|s| flow.state_is(s)))
            .filter(|_| callback.iss.as_deref().is_none_or(|iss| iss == oidc.issuer()))
            .ok_or(SignInError::State)?;
        if let Some(error) = &callback.error {
            return Err(SignInError::Denied(error.chars().take(64).collect()));
        }
        let code = callback.code.as_deref().filter(|c| !c.is_empty()).ok_or(SignInError::State)?;
        oidc.complete(&flow, code).await
    }
    .await;
    let cleared = state.sessions.clear_flow();
    match result {
        Ok(signed) => {
            tracing::info!(subject = %signed.principal.subject, merchant = %signed.principal.merchant_id, "web: signed in through the OpenID Provider");
            let page = html(StatusCode::OK, pages::moving_on(&view, m.signed_in, "/"));
            let page = with_cookie(page, state.sessions.session_cookie(&signed.access_token, signed.max_age_secs));
            with_cookie(with_cookie(page, cleared), state.sessions.clear(session::PRE_SESSION))
        }
        Err(error) => {
            let (status, message, detail) = match &error {
                SignInError::State => (StatusCode::BAD_REQUEST, m.oidc_state, None),
                SignInError::Denied(_) => (StatusCode::FORBIDDEN, m.oidc_denied, None),
                SignInError::Code(_) => (StatusCode::BAD_REQUEST, m.oidc_code, None),
                SignInError::Tokens(_) => (StatusCode::BAD_REQUEST, m.oidc_tokens, None),
                SignInError::NotLinked(detail) => (StatusCode::FORBIDDEN, m.oidc_not_linked, Some(detail.as_str())),
                SignInError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, m.unavailable, None),
            };
            if status.is_server_error() {
                tracing::error!(%error, "web: sign-in through the OpenID Provider failed");
            } else {
                tracing::info!(%error, "web: sign-in through the OpenID Provider refused");
            }
            with_cookie(html(status, pages::sign_in_failed(&view, message, detail)), cleared)
        }
    }
}

/// The record form as posted.
#[derive(Deserialize)]
pub struct RecordInput {
    #[serde(default)]
    csrf: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    amount: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    occurred_at: String,
    #[serde(default)]
    idempotency_key: String,
    /// `another` for "save and add another".
    then: Option<String>,
}

impl RecordInput {
    fn form(&self, errors: Vec<(String, String)>) -> RecordForm {
        RecordForm {
            kind: self.kind.clone(),
            amount: self.amount.clone(),
            description: self.description.clone(),
            category: self.category.clone(),
            occurred_at: self.occurred_at.clone(),
            idempotency_key: if self.idempotency_key.is_empty() {
                random_token()
            } else {
                self.idempotency_key.clone()
            },
            errors,
        }
    }

    /// The API request. What the page cannot read (an amount or a date typed some other way)
    /// goes to the API as typed, so the API's validation answers it.
    fn entry(&self, merchant: &Merchant, lang: Lang) -> NewEntry {
        let typed = self.amount.trim();
        let amount = money::parse(typed, &merchant.currency, merchant.minor_digits, lang)
            .map(|minor| money::to_api(minor, merchant.minor_digits))
            .unwrap_or_else(|_| typed.to_owned());
        let occurred_at = Some(self.occurred_at.trim())
            .filter(|t| !t.is_empty())
            .map(|text| local_instant(text, time_zone(merchant)).unwrap_or_else(|| text.to_owned()));
        NewEntry {
            kind: self.kind.clone(),
            amount,
            description: self.description.trim().to_owned(),
            occurred_at,
            category: Some(self.category.trim().to_owned()).filter(|c| !c.is_empty()),
        }
    }
}

/// A `datetime-local` value (`2026-12-01T10:15`) in the merchant's time zone, as RFC 3339.
fn local_instant(text: &str, tz: Tz) -> Option<String> {
    let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S"))
        .ok()?;
    let local = tz.from_local_datetime(&naive).earliest()?;
    Some(local.to_rfc3339_opts(SecondsFormat::Secs, false))
}

/// Renders the record form again with `errors`, on the page it was sent from.
async fn record_again(
    state: &WebState,
    view: &View,
    token: &str,
    input: &RecordInput,
    status: StatusCode,
    errors: Vec<(String, String)>,
) -> Response {
    let form = input.form(errors);
    if input.then.as_deref() == Some("another") {
        return html(status, pages::record(view, &form, None));
    }
    match panel(state, view, token).await {
        Ok(panel) => html(status, pages::today(view, panel, &form, None)),
        Err(e) => state.failure(view, e),
    }
}

/// `POST /entries`: records an entry through the API.
pub async fn record(
    State(state): State<WebState>,
    headers: HeaderMap,
    form: Result<Form<RecordInput>, FormRejection>,
) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return state.expired() };
    let view = state.view(lang, Some(token), "/");
    let m = view.m();
    let Ok(Form(input)) = form else { return html(StatusCode::BAD_REQUEST, pages::error(&view, m.invalid_field)) };
    if !state.sessions.csrf_ok(token, &input.csrf) {
        let errors = vec![("form".to_owned(), m.form_expired.to_owned())];
        return record_again(&state, &view, token, &input, StatusCode::FORBIDDEN, errors).await;
    }
    let merchant = match state.client.merchant(token).await {
        Ok(merchant) => merchant,
        Err(e) => return state.failure(&view, e),
    };
    let key = Some(input.idempotency_key.as_str()).filter(|k| !k.is_empty());
    match state.client.record(token, &input.entry(&merchant, lang), key).await {
        Ok(_) if input.then.as_deref() == Some("another") => redirect("/record?recorded=1"),
        Ok(_) => redirect("/?recorded=1"),
        Err(ApiError::Problem(problem)) if problem.status < 500 => {
            let field = problem.field.clone().unwrap_or_else(|| "form".to_owned());
            let field = if ["type", "amount", "description", "category", "occurred_at"].contains(&field.as_str()) {
                field
            } else {
                "form".to_owned()
            };
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            record_again(&state, &view, token, &input, status, vec![(field, problem_message(&view, &problem))]).await
        }
        Err(e) => state.failure(&view, e),
    }
}

/// `GET /record`: the record form alone ("save and add another" comes back here).
pub async fn record_page(State(state): State<WebState>, headers: HeaderMap, Query(notice): Query<Notice>) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return redirect("/signin") };
    let view = state.view(lang, Some(token), "/record");
    if !view.can.record {
        return html(StatusCode::FORBIDDEN, pages::forbidden(&view));
    }
    html(StatusCode::OK, pages::record(&view, &fresh_form(), notice.text(lang)))
}

/// The query of the entries page.
#[derive(Debug, Default, Deserialize)]
pub struct EntriesParams {
    date: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    reversed: Option<String>,
}

fn date_param(text: Option<&str>) -> Option<NaiveDate> {
    text.and_then(|t| NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d").ok())
}

/// `GET /entries`: a day (`date`) or a range (`from`, `to`; today by default), one page of
/// the API's cursor at a time.
pub async fn entries(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(params): Query<EntriesParams>,
) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return redirect("/signin") };
    let view = state.view(lang, Some(token), "/entries");
    let merchant = match state.client.merchant(token).await {
        Ok(merchant) => merchant,
        Err(e) => return state.failure(&view, e),
    };
    let tz = time_zone(&merchant);
    let today = today_in(tz);
    let day = date_param(params.date.as_deref());
    let from = day.or(date_param(params.from.as_deref())).unwrap_or(today);
    let to = day.or(date_param(params.to.as_deref())).unwrap_or(from.max(today));
    let query = EntryQuery { from, to, limit: 50, cursor: params.cursor.clone() };
    match state.client.entries(token, &query).await {
        Ok(page) => {
            let books = Books { merchant: &merchant, tz };
            let shown = pages::EntriesQueryView { from, to, next_cursor: page.next_cursor };
            let notice = params.reversed.as_ref().map(|_| view.m().reversed);
            let body = pages::entries(&view, &books, &shown, &page.items, notice);
            html(StatusCode::OK, pages::layout(&view, view.m().entries, body))
        }
        Err(e) => state.failure(&view, e),
    }
}

/// The confirmation page of a reversal, with `error` when it was refused.
async fn confirm(
    state: &WebState,
    view: &View,
    token: &str,
    id: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let (merchant, entry) = tokio::join!(state.client.merchant(token), state.client.entry(token, id));
    match (merchant, entry) {
        (Ok(merchant), Ok(entry)) => {
            let books = Books { tz: time_zone(&merchant), merchant: &merchant };
            let body = pages::reverse_confirm(view, &books, &entry, error);
            html(status, pages::layout(view, view.m().reverse, body))
        }
        (Err(e), _) | (_, Err(e)) => state.failure(view, e),
    }
}

/// `GET /entries/{id}/reverse`: asks before reversing.
pub async fn reverse_page(State(state): State<WebState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return redirect("/signin") };
    let view = state.view(lang, Some(token), "/entries");
    if !view.can.record {
        return html(StatusCode::FORBIDDEN, pages::forbidden(&view));
    }
    confirm(&state, &view, token, &id, StatusCode::OK, None).await
}

/// `POST /entries/{id}/reverse`: records the reversal through the API.
pub async fn reverse(
    State(state): State<WebState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    form: Result<Form<CsrfOnly>, FormRejection>,
) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return state.expired() };
    let view = state.view(lang, Some(token), "/entries");
    let csrf_ok = form.as_ref().is_ok_and(|Form(f)| state.sessions.csrf_ok(token, &f.csrf));
    if !csrf_ok {
        return confirm(&state, &view, token, &id, StatusCode::FORBIDDEN, Some(view.m().form_expired)).await;
    }
    match state.client.reverse(token, &id).await {
        Ok(reversal) => {
            redirect(&format!("/entries?date={}&reversed=1", crate::api::percent_encode(&reversal.business_date)))
        }
        Err(ApiError::Problem(problem)) if problem.status < 500 => {
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            confirm(&state, &view, token, &id, status, Some(&problem_message(&view, &problem))).await
        }
        Err(e) => state.failure(&view, e),
    }
}

/// `?next=` of the language switch.
#[derive(Debug, Default, Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// `GET /lang/{tag}`: remembers the language and goes back to the page (only to a path of
/// ours: never an open redirect).
pub async fn switch_lang(State(state): State<WebState>, Path(tag): Path<String>, Query(next): Query<Next>) -> Response {
    let next = next
        .next
        .filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or_else(|| "/".to_owned());
    match Lang::from_tag(&tag) {
        Some(lang) => with_cookie(redirect(&next), state.sessions.lang_cookie(lang.tag())),
        None => redirect(&next),
    }
}

/// The period of the reports page and of its CSV.
#[derive(Debug, Default, Deserialize)]
pub struct Period {
    from: Option<String>,
    to: Option<String>,
}

impl Period {
    /// The dates asked for; the last seven days by default. Unreadable dates are the default.
    fn dates(&self, today: NaiveDate) -> (NaiveDate, NaiveDate) {
        let to = date_param(self.to.as_deref()).unwrap_or(today);
        let week_before = to.checked_sub_days(chrono::Days::new(6)).unwrap_or(to);
        let from = date_param(self.from.as_deref()).unwrap_or(week_before);
        (from, to)
    }
}

/// The API's report in minor units; `None` when an amount is not one the API writes.
fn report_days(range: &DailyBalanceRange, digits: u8) -> Option<Vec<ReportDay>> {
    range
        .days
        .iter()
        .map(|d| {
            Some(ReportDay {
                date: NaiveDate::parse_from_str(&d.date, "%Y-%m-%d").ok()?,
                opening: money::parse_api(&d.opening_balance, digits)?,
                credits: money::parse_api(&d.total_credits, digits)?,
                debits: money::parse_api(&d.total_debits, digits)?,
                closing: money::parse_api(&d.closing_balance, digits)?,
                entry_count: d.entry_count,
            })
        })
        .collect()
}

/// `GET /reports`: a period's opening balance, credits, debits and closing balance, a chart
/// and the days as a table (`reports:read`).
pub async fn reports(State(state): State<WebState>, headers: HeaderMap, Query(period): Query<Period>) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return redirect("/signin") };
    let view = state.view(lang, Some(token), "/reports");
    if !view.can.read_reports {
        return html(StatusCode::FORBIDDEN, pages::forbidden(&view));
    }
    let merchant = match state.client.merchant(token).await {
        Ok(merchant) => merchant,
        Err(e) => return state.failure(&view, e),
    };
    let tz = time_zone(&merchant);
    let (from, to) = period.dates(today_in(tz));
    let books = Books { merchant: &merchant, tz };
    let page = |status, days: &[ReportDay], error: Option<&str>| {
        let credits = days.iter().try_fold(0i64, |sum, d| sum.checked_add(d.credits));
        let debits = days.iter().try_fold(0i64, |sum, d| sum.checked_add(d.debits));
        let report = ReportView { from, to, days, credits, debits };
        html(status, pages::layout(&view, view.m().reports, pages::reports(&view, &books, &report, error)))
    };
    match state.client.daily_range(token, from, to).await {
        Ok(range) => match report_days(&range, merchant.minor_digits) {
            Some(days) => page(StatusCode::OK, &days, None),
            None => state.failure(&view, ApiError::Transport("a report amount is not a decimal".into())),
        },
        Err(ApiError::Problem(problem)) if problem.status < 500 => {
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            page(status, &[], Some(&problem_message(&view, &problem)))
        }
        Err(e) => state.failure(&view, e),
    }
}

/// `GET /reports/export`: the period as the API's CSV, downloaded as a file.
pub async fn reports_export(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(period): Query<Period>,
) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return redirect("/signin") };
    let view = state.view(lang, Some(token), "/reports");
    let merchant = match state.client.merchant(token).await {
        Ok(merchant) => merchant,
        Err(e) => return state.failure(&view, e),
    };
    let (from, to) = period.dates(today_in(time_zone(&merchant)));
    match state.client.daily_range_csv(token, from, to).await {
        Ok(csv) => {
            let disposition = format!("attachment; filename=\"cashflow-{from}-{to}.csv\"");
            let mut response = (StatusCode::OK, csv).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(value) = HeaderValue::from_str(&disposition) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        Err(e) => state.failure(&view, e),
    }
}

/// `GET /close`: the "close the till" form, for today by default (`days:close`).
pub async fn close_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return redirect("/signin") };
    let view = state.view(lang, Some(token), "/close");
    if !view.can.close_day {
        return html(StatusCode::FORBIDDEN, pages::forbidden(&view));
    }
    let merchant = match state.client.merchant(token).await {
        Ok(merchant) => merchant,
        Err(e) => return state.failure(&view, e),
    };
    let form = CloseForm { date: today_in(time_zone(&merchant)).to_string(), ..CloseForm::default() };
    html(StatusCode::OK, pages::layout(&view, view.m().close_till, pages::close_form(&view, &form)))
}

/// The close form as posted.
#[derive(Deserialize)]
pub struct CloseInput {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    date: String,
    #[serde(default)]
    counted_cash: String,
    #[serde(default)]
    note: String,
}

/// `POST /close`: closes the books through the day with the cash counted, and shows what was
/// expected, what was counted and the difference. The answer is the result page itself (the
/// API has no read of a close to redirect to); sending it again is refused as already closed.
pub async fn close(
    State(state): State<WebState>,
    headers: HeaderMap,
    form: Result<Form<CloseInput>, FormRejection>,
) -> Response {
    let lang = lang_of(&headers);
    let Some(token) = session_token(&headers) else { return state.expired() };
    let view = state.view(lang, Some(token), "/close");
    let m = view.m();
    let Ok(Form(input)) = form else { return html(StatusCode::BAD_REQUEST, pages::error(&view, m.invalid_field)) };
    let again = |status, field: &str, message: &str| {
        let form = CloseForm {
            date: input.date.clone(),
            counted_cash: input.counted_cash.clone(),
            note: input.note.clone(),
            errors: vec![(field.to_owned(), message.to_owned())],
        };
        html(status, pages::layout(&view, m.close_till, pages::close_form(&view, &form)))
    };
    if !state.sessions.csrf_ok(token, &input.csrf) {
        return again(StatusCode::FORBIDDEN, "form", m.form_expired);
    }
    let Some(date) = date_param(Some(&input.date)) else {
        return again(StatusCode::BAD_REQUEST, "date", m.invalid_field);
    };
    let merchant = match state.client.merchant(token).await {
        Ok(merchant) => merchant,
        Err(e) => return state.failure(&view, e),
    };
    // What the page cannot read goes to the API as typed, so the API's validation answers it.
    let typed = input.counted_cash.trim();
    let counted_cash = Some(typed).filter(|t| !t.is_empty()).map(|t| {
        money::parse(t, &merchant.currency, merchant.minor_digits, lang)
            .map(|minor| money::to_api(minor, merchant.minor_digits))
            .unwrap_or_else(|_| t.to_owned())
    });
    let note = Some(input.note.trim().to_owned()).filter(|n| !n.is_empty());
    match state.client.close_day(token, date, &CloseDay { counted_cash, note }).await {
        Ok(close) => {
            let books = Books { tz: time_zone(&merchant), merchant: &merchant };
            html(StatusCode::OK, pages::layout(&view, m.close_till, pages::closed(&view, &books, &close)))
        }
        Err(ApiError::Problem(problem)) if problem.status < 500 => {
            let field = match problem.field.as_deref() {
                Some(f @ ("counted_cash" | "note" | "date")) => f.to_owned(),
                _ => "form".to_owned(),
            };
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            again(status, &field, &problem_message(&view, &problem))
        }
        Err(e) => state.failure(&view, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_the_last_seven_days_by_default_and_never_panics_at_the_calendars_edge() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 6).unwrap_or_default();
        let default = Period::default().dates(today);
        assert_eq!(default, (NaiveDate::from_ymd_opt(2026, 11, 30).unwrap_or_default(), today));
        let edge = Period { from: None, to: Some(NaiveDate::MIN.to_string()) };
        assert_eq!(edge.dates(today), (NaiveDate::MIN, NaiveDate::MIN), "{:?}", NaiveDate::MIN.to_string());
        let unreadable = Period { from: Some("30/11/2026".into()), to: Some("x".into()) };
        assert_eq!(unreadable.dates(today), default);
    }

    #[test]
    fn the_panels_etag_follows_its_content_and_if_none_match_names_it() {
        let (before, after) = (etag("<dd>R$ 1,00</dd>"), etag("<dd>R$ 2,00</dd>"));
        assert_ne!(before, after, "a changed figure is a new ETag");
        assert_eq!(before, etag("<dd>R$ 1,00</dd>"), "the same content, the same ETag in any process");
        assert!(before.starts_with('"') && before.ends_with('"'), "{before}");
        let mut headers = HeaderMap::new();
        assert!(!if_none_match(&headers, &before));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"x\", W/{before}")).unwrap_or(HeaderValue::from_static("")),
        );
        assert!(if_none_match(&headers, &before));
        assert!(!if_none_match(&headers, &after));
    }
}
