//! The web app's view of the `/v1` API: it is a client of the contract, never of the stores,
//! so every rule and every validation message is the API's.
//!
//! [`Api`] is the one thing a deployment provides: a way to send an HTTP request to the API.
//! [`InProcessApi`] hands it to the combined API `Router` with `tower::oneshot` (no socket;
//! what `serve` uses); an HTTP implementation for the split deployment only has to send the
//! same request over the network. [`Client`] turns the contract's JSON into typed results.

use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use cashflow_http::ProblemType;
use chrono::NaiveDate;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

/// Sends one request to the API and reads its whole answer.
#[async_trait]
pub trait Api: Send + Sync + 'static {
    async fn send(&self, request: Request<Body>) -> Result<(StatusCode, Bytes), ApiError>;
}

/// The API in the same process: the combined `/v1` + `/oauth2` router, called without a socket.
pub struct InProcessApi {
    router: Router,
}

impl InProcessApi {
    pub fn new(router: Router) -> Self {
        Self { router }
    }
}

#[async_trait]
impl Api for InProcessApi {
    async fn send(&self, request: Request<Body>) -> Result<(StatusCode, Bytes), ApiError> {
        let response = match self.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| ApiError::Transport(e.to_string()))?.to_bytes();
        Ok((status, body))
    }
}

/// A problem document (RFC 9457) as the API returns it.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Problem {
    /// `/problems/<slug>`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub status: u16,
    pub detail: Option<String>,
    /// The request field at fault, for validation problems.
    pub field: Option<String>,
}

impl Problem {
    /// The `type`, when it is one the API documents.
    pub fn problem_type(&self) -> Option<ProblemType> {
        ProblemType::parse(&self.kind)
    }
}

/// Why an API call did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: no session, or the token expired or is no longer trusted: sign in again.
    #[error("not signed in")]
    Unauthorized,
    /// 403: the user's scopes do not allow it.
    #[error("forbidden")]
    Forbidden(Problem),
    /// Another 4xx or a 5xx problem, to show to the user.
    #[error("{} ({})", .0.title, .0.kind)]
    Problem(Problem),
    /// The API could not be reached or answered something that is not the contract.
    #[error("API call failed: {0}")]
    Transport(String),
}

/// `POST /oauth2/token` answer.
#[derive(Debug, Deserialize)]
pub struct Token {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// `GET /v1/merchant`.
#[derive(Debug, Clone, Deserialize)]
pub struct Merchant {
    pub id: String,
    pub name: String,
    pub currency: String,
    pub minor_digits: u8,
    pub time_zone: String,
}

/// `GET /v1/balances/daily/{date}`.
#[derive(Debug, Clone, Deserialize)]
pub struct DailyBalance {
    pub date: String,
    pub opening_balance: String,
    pub total_credits: String,
    pub total_debits: String,
    pub closing_balance: String,
    pub entry_count: u64,
    pub as_of: String,
}

/// One day of `GET /v1/balances/daily?from=&to=`.
#[derive(Debug, Clone, Deserialize)]
pub struct DayBalance {
    pub date: String,
    pub opening_balance: String,
    pub total_credits: String,
    pub total_debits: String,
    pub closing_balance: String,
    pub entry_count: u64,
}

/// `GET /v1/balances/daily?from=&to=`.
#[derive(Debug, Clone, Deserialize)]
pub struct DailyBalanceRange {
    pub as_of: String,
    pub days: Vec<DayBalance>,
}

/// `POST /v1/days/{date}/close` body.
#[derive(Debug, Clone, Serialize)]
pub struct CloseDay {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counted_cash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `POST /v1/days/{date}/close` answer: what the ledger expected and what was counted.
#[derive(Debug, Clone, Deserialize)]
pub struct DayClose {
    pub date: String,
    pub closed_at: String,
    pub credits: String,
    pub debits: String,
    pub entry_count: u64,
    pub expected_balance: String,
    pub counted_cash: Option<String>,
    /// Counted minus expected ("quebra de caixa").
    pub difference: Option<String>,
    pub note: Option<String>,
}

/// An entry.
#[derive(Debug, Clone, Deserialize)]
pub struct Entry {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub amount: String,
    pub description: String,
    pub category: Option<String>,
    pub occurred_at: String,
    pub business_date: String,
    pub reversal_of: Option<String>,
}

/// A page of entries.
#[derive(Debug, Clone, Deserialize)]
pub struct EntryPage {
    pub items: Vec<Entry>,
    pub next_cursor: Option<String>,
}

/// `POST /v1/entries` body, exactly the contract's.
#[derive(Debug, Clone, Serialize)]
pub struct NewEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub amount: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// Which entries to list.
#[derive(Debug, Clone)]
pub struct EntryQuery {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub limit: u32,
    pub cursor: Option<String>,
}

/// The typed calls the pages make.
#[derive(Clone)]
pub struct Client {
    api: std::sync::Arc<dyn Api>,
}

impl Client {
    pub fn new(api: std::sync::Arc<dyn Api>) -> Self {
        Self { api }
    }

    /// The password grant of the built-in issuer.
    pub async fn sign_in(&self, username: &str, password: &str) -> Result<Token, ApiError> {
        let body = form_encode(&[("grant_type", "password"), ("username", username), ("password", password)]);
        let request = Request::builder()
            .method(Method::POST)
            .uri("/oauth2/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        self.call(request).await
    }

    pub async fn merchant(&self, token: &str) -> Result<Merchant, ApiError> {
        self.get(token, "/v1/merchant".into()).await
    }

    pub async fn daily_balance(&self, token: &str, date: NaiveDate) -> Result<DailyBalance, ApiError> {
        self.get(token, format!("/v1/balances/daily/{date}")).await
    }

    /// The daily balances of `from..=to` (the API refuses more than 366 days).
    pub async fn daily_range(
        &self,
        token: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<DailyBalanceRange, ApiError> {
        self.get(token, format!("/v1/balances/daily?from={from}&to={to}")).await
    }

    /// The same report as the API's CSV (`Accept: text/csv`), byte for byte.
    pub async fn daily_range_csv(&self, token: &str, from: NaiveDate, to: NaiveDate) -> Result<Bytes, ApiError> {
        let uri = format!("/v1/balances/daily?from={from}&to={to}");
        let request = authorized(Method::GET, &uri, token)?
            .header(header::ACCEPT, "text/csv")
            .body(Body::empty())
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        self.call_raw(request).await
    }

    /// Closes the books through `date`, with the cash counted in the drawer.
    pub async fn close_day(&self, token: &str, date: NaiveDate, close: &CloseDay) -> Result<DayClose, ApiError> {
        let body = serde_json::to_vec(close).map_err(|e| ApiError::Transport(e.to_string()))?;
        let request = authorized(Method::POST, &format!("/v1/days/{date}/close"), token)?
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        self.call(request).await
    }

    pub async fn entries(&self, token: &str, query: &EntryQuery) -> Result<EntryPage, ApiError> {
        let mut uri = if query.from == query.to {
            format!("/v1/entries?date={}&limit={}", query.from, query.limit)
        } else {
            format!("/v1/entries?from={}&to={}&limit={}", query.from, query.to, query.limit)
        };
        if let Some(cursor) = &query.cursor {
            uri.push_str("&cursor=");
            uri.push_str(&percent_encode(cursor));
        }
        self.get(token, uri).await
    }

    pub async fn entry(&self, token: &str, id: &str) -> Result<Entry, ApiError> {
        self.get(token, format!("/v1/entries/{}", percent_encode(id))).await
    }

    /// Records an entry; the same `idempotency_key` again returns the first one (a double
    /// submit or a retry never records twice).
    pub async fn record(
        &self,
        token: &str,
        entry: &NewEntry,
        idempotency_key: Option<&str>,
    ) -> Result<Entry, ApiError> {
        let body = serde_json::to_vec(entry).map_err(|e| ApiError::Transport(e.to_string()))?;
        let mut builder =
            authorized(Method::POST, "/v1/entries", token)?.header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = idempotency_key {
            builder = builder.header("idempotency-key", key);
        }
        self.call(builder.body(Body::from(body)).map_err(|e| ApiError::Transport(e.to_string()))?).await
    }

    pub async fn reverse(&self, token: &str, id: &str) -> Result<Entry, ApiError> {
        let uri = format!("/v1/entries/{}/reversal", percent_encode(id));
        let request = authorized(Method::POST, &uri, token)?
            .body(Body::empty())
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        self.call(request).await
    }

    async fn get<T: DeserializeOwned>(&self, token: &str, uri: String) -> Result<T, ApiError> {
        let request = authorized(Method::GET, &uri, token)?
            .body(Body::empty())
            .map_err(|e| ApiError::Transport(e.to_string()))?;
        self.call(request).await
    }

    async fn call<T: DeserializeOwned>(&self, request: Request<Body>) -> Result<T, ApiError> {
        let body = self.call_raw(request).await?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Transport(format!("unexpected answer: {e}")))
    }

    /// The body of a successful answer, or the problem.
    async fn call_raw(&self, request: Request<Body>) -> Result<Bytes, ApiError> {
        let (status, body) = self.api.send(request).await?;
        if status.is_success() {
            return Ok(body);
        }
        let problem: Problem = serde_json::from_slice(&body).unwrap_or_else(|_| Problem {
            status: status.as_u16(),
            title: status.canonical_reason().unwrap_or("error").to_owned(),
            ..Problem::default()
        });
        Err(match status {
            StatusCode::UNAUTHORIZED if problem.problem_type() != Some(ProblemType::InvalidClient) => {
                ApiError::Unauthorized
            }
            StatusCode::FORBIDDEN => ApiError::Forbidden(problem),
            _ => ApiError::Problem(problem),
        })
    }
}

fn authorized(method: Method, uri: &str, token: &str) -> Result<axum::http::request::Builder, ApiError> {
    let bearer = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ApiError::Unauthorized)?;
    Ok(Request::builder().method(method).uri(uri).header(header::AUTHORIZATION, bearer))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect::<Vec<_>>().join("&")
}
