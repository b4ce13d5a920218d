//! The consolidation's HTTP API (`/v1/balances/daily`): routes, queries and the error mapping.
//! The report bodies themselves live in [`crate::report`], shared with the caches.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::SecondsFormat;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use cashflow_auth::{AuthError, Principal, Scope, TokenVerifier};
use cashflow_domain::{daily_balances, BusinessDate, Currency, MerchantId};
use cashflow_http::{ApiQuery, Problem, ProblemType};

use crate::cache::{Lookup, ReportCache};
use crate::report::{
    day_balance, AdjustmentResponse, CachedReport, DailyBalanceRange, DailyBalanceResponse, DayBalance,
};
use crate::store::{closed_day, ConsolidationStore, MerchantBooks, StoreError};

/// How long a client may keep a closed day's report without asking again (a day): it cannot
/// change until a reopen, after which its `ETag` changes, so a client that revalidates
/// (`If-None-Match`) sees the reopen at once.
pub const CLOSED_DAY_MAX_AGE_SECS: u64 = 86_400;

/// Longest range one report request may span.
pub const MAX_RANGE_DAYS: i64 = 366;

/// What the consolidation's handlers share.
#[derive(Clone)]
pub struct ConsolidationState {
    pub store: Arc<dyn ConsolidationStore>,
    pub cache: Arc<dyn ReportCache>,
    pub verifier: Arc<dyn TokenVerifier>,
}

impl FromRef<ConsolidationState> for Arc<dyn TokenVerifier> {
    fn from_ref(state: &ConsolidationState) -> Self {
        state.verifier.clone()
    }
}

/// The consolidation's routes.
pub fn router(state: ConsolidationState) -> Router {
    Router::new()
        .route("/v1/balances/daily", get(daily_range))
        .route("/v1/balances/daily/{date}", get(daily))
        .with_state(state)
}

/// The consolidation's part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(daily, daily_range),
    components(schemas(DailyBalanceResponse, DailyBalanceRange, DayBalance, AdjustmentResponse))
)]
pub struct ConsolidationApi;

/// Every way a report request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Problem(Problem),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        ApiError::Problem(p)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Auth(e) => e.into_response(),
            ApiError::Problem(p) => p.into_response(),
            ApiError::Store(StoreError::Unavailable(cause)) => {
                tracing::error!(%cause, "consolidation store unavailable");
                Problem::unavailable("the consolidation database is unavailable").into_response()
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "consolidation store failure");
                Problem::internal().into_response()
            }
        }
    }
}

impl IntoResponse for CachedReport {
    fn into_response(self) -> Response {
        let validators = closed_day_validators(&self);
        let mut response =
            ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], self.into_bytes()).into_response();
        response.headers_mut().extend(validators);
        response
    }
}

/// `ETag` and `Cache-Control` of a closed day's report; nothing for an open day.
fn closed_day_validators(report: &CachedReport) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(etag) = report.etag().and_then(|e| HeaderValue::from_str(e).ok()) {
        headers.insert(header::ETAG, etag);
        if let Ok(cache_control) = HeaderValue::from_str(&format!("private, max-age={CLOSED_DAY_MAX_AGE_SECS}")) {
            headers.insert(header::CACHE_CONTROL, cache_control);
        }
    }
    headers
}

/// Whether `If-None-Match` names the report's `ETag` (or is `*`): the client's copy is current.
/// Weak comparison, as RFC 9110 asks for `If-None-Match`.
fn not_modified(headers: &HeaderMap, report: &CachedReport) -> bool {
    let Some(etag) = report.etag() else { return false };
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The report, or 304 Not Modified (with its validators, no body) when the client has it.
fn answer(headers: &HeaderMap, report: CachedReport) -> Response {
    if not_modified(headers, &report) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        response.headers_mut().extend(closed_day_validators(&report));
        return response;
    }
    report.into_response()
}

fn as_of(books: &MerchantBooks) -> String {
    books.as_of.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_date(field: &'static str, text: &str) -> Result<BusinessDate, Problem> {
    BusinessDate::parse(text).map_err(|e| Problem::invalid_field(ProblemType::InvalidDate, field, e.to_string()))
}

async fn books(state: &ConsolidationState, merchant: MerchantId) -> Result<MerchantBooks, ApiError> {
    state.store.merchant(merchant).await?.ok_or_else(|| {
        ApiError::Problem(
            Problem::new(
                StatusCode::NOT_FOUND,
                ProblemType::MerchantNotConsolidated,
                "No consolidated data for this merchant yet",
            )
            .detail("consolidation has not yet received this merchant's registration; retry in a moment"),
        )
    })
}

fn report_problem(e: cashflow_domain::ConsolidationError) -> ApiError {
    tracing::error!(error = %e, "daily balance overflow");
    ApiError::Problem(Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ProblemType::BalanceOverflow,
        "The balance exceeds the representable range",
    ))
}

/// The consolidated balance of one business date. A day without entries is reported with zero
/// totals and the previous day's closing as its opening and closing. A closed day's report
/// (`closed: true`) cannot change until a reopen: it carries an `ETag` and
/// `Cache-Control: private, max-age=86400`, and `If-None-Match` with that tag gets a 304.
#[utoipa::path(
    get, path = "/v1/balances/daily/{date}", tag = "consolidation",
    params(
        ("date" = chrono::NaiveDate, Path, description = "Business date, YYYY-MM-DD (1970 or later)", pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"),
        ("If-None-Match" = Option<String>, Header, description = "The `ETag` of a closed day's report the client holds"),
    ),
    responses(
        (status = 200, body = DailyBalanceResponse, headers(
            ("ETag" = String, description = "Closed days only: the report's entity tag"),
            ("Cache-Control" = String, description = "Closed days only: `private, max-age=86400`"),
        )),
        (status = 304, description = "Closed day: the report is the one `If-None-Match` names (no body)"),
        (status = 400, description = "Invalid date", content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reports:read"]))
)]
async fn daily(
    State(state): State<ConsolidationState>,
    principal: Principal,
    headers: HeaderMap,
    Path(date): Path<String>,
) -> Result<Response, ApiError> {
    let span = cashflow_http::context::request_span("report.read", || {
        tracing::debug_span!("report.read", cache = tracing::field::Empty)
    });
    span.clone().run(daily_report(state, principal, headers, date, span)).await
}

/// [`daily`], inside its `report.read` span (`span`, which it tells whether the cache answered).
async fn daily_report(
    state: ConsolidationState,
    principal: Principal,
    headers: HeaderMap,
    date: String,
    span: cashflow_http::context::RequestPathSpan,
) -> Result<Response, ApiError> {
    principal.require(Scope::ReportsRead)?;
    let date = parse_date("date", &date)?;
    let merchant = principal.merchant_id;
    let generation = match state.cache.get(merchant, date).await {
        Lookup::Hit(report) => {
            metrics::counter!("cashflow_report_cache_hits_total").increment(1);
            span.set("cache", "hit");
            return Ok(answer(&headers, report));
        }
        Lookup::Miss(generation) => {
            metrics::counter!("cashflow_report_cache_misses_total").increment(1);
            span.set("cache", "miss");
            generation
        }
    };
    let books = books(&state, merchant).await?;
    let (opening, days) = state.store.days(merchant, date, date).await?;
    let marks = state.store.day_marks(merchant, date, date).await?;
    let adjustments = state.store.adjustments(merchant, date, date).await?;
    let balances = daily_balances(opening, date, date, &days).map_err(report_problem)?;
    let day = balances
        .first()
        .map(|d| day_balance(d, books.currency, closed_day(&marks, date), &adjustments))
        .ok_or_else(|| ApiError::Problem(Problem::internal()))?;
    let report = DailyBalanceResponse {
        date: day.date,
        currency: books.currency.code().to_owned(),
        opening_balance: day.opening_balance,
        total_credits: day.total_credits,
        total_debits: day.total_debits,
        net: day.net,
        closing_balance: day.closing_balance,
        entry_count: day.entry_count,
        as_of: as_of(&books),
        closed: day.closed,
        closed_at: day.closed_at,
        counted_cash: day.counted_cash,
        difference: day.difference,
        adjustments: day.adjustments,
    };
    let report = CachedReport::of(&report).map_err(|e| {
        tracing::error!(error = %e, "report serialization failed");
        ApiError::Problem(Problem::internal())
    })?;
    state.cache.put(merchant, date, generation, report.clone()).await;
    Ok(answer(&headers, report))
}

/// Query of the range report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// First business date, inclusive.
    #[param(value_type = chrono::NaiveDate, pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    from: String,
    /// Last business date, inclusive (not before `from`, at most 365 days after it).
    #[param(value_type = chrono::NaiveDate, pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    to: String,
}

/// Daily balances of a range of business dates, as JSON or, with `Accept: text/csv`, as CSV.
#[utoipa::path(
    get, path = "/v1/balances/daily", tag = "consolidation",
    params(RangeParams),
    responses(
        (status = 200, description = "The days as JSON, or with `Accept: text/csv` as CSV with a header row: date, currency, opening_balance, total_credits, total_debits, net, closing_balance, entry_count, closed, closed_at, counted_cash, difference (the last three empty when null)",
            content((DailyBalanceRange = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Invalid range", content_type = "application/problem+json"),
    ),
    security(("bearer" = ["reports:read"]))
)]
async fn daily_range(
    State(state): State<ConsolidationState>,
    principal: Principal,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<RangeParams>,
) -> Result<Response, ApiError> {
    principal.require(Scope::ReportsRead)?;
    let from = parse_date("from", &params.from)?;
    let to = parse_date("to", &params.to)?;
    if from > to {
        return Err(
            Problem::invalid_field(ProblemType::InvalidDateRange, "from", "`from` must not be after `to`").into()
        );
    }
    if from.days_until(to) >= MAX_RANGE_DAYS {
        return Err(Problem::invalid_field(
            ProblemType::DateRangeTooLong,
            "to",
            format!("a report spans at most {MAX_RANGE_DAYS} days"),
        )
        .into());
    }
    let books = books(&state, principal.merchant_id).await?;
    let (opening, days) = state.store.days(principal.merchant_id, from, to).await?;
    let marks = state.store.day_marks(principal.merchant_id, from, to).await?;
    let adjustments = state.store.adjustments(principal.merchant_id, from, to).await?;
    let balances = daily_balances(opening, from, to, &days).map_err(report_problem)?;
    let days: Vec<DayBalance> =
        balances.iter().map(|d| day_balance(d, books.currency, closed_day(&marks, d.date), &adjustments)).collect();
    if wants_csv(&headers) {
        return Ok(csv(books.currency, &days));
    }
    Ok(Json(DailyBalanceRange { currency: books.currency.code().to_owned(), as_of: as_of(&books), days })
        .into_response())
}

fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| media.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv")))
}

/// Every field is a date, a timestamp, a currency code, a decimal, an integer or a boolean:
/// nothing needs quoting. A null (an open day's close fields) is an empty field.
fn csv(currency: Currency, days: &[DayBalance]) -> Response {
    let mut body = String::from(
        "date,currency,opening_balance,total_credits,total_debits,net,closing_balance,entry_count,\
         closed,closed_at,counted_cash,difference\r\n",
    );
    let or_empty = |v: &Option<String>| v.clone().unwrap_or_default();
    for d in days {
        body.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
            d.date,
            currency,
            d.opening_balance,
            d.total_credits,
            d.total_debits,
            d.net,
            d.closing_balance,
            d.entry_count,
            d.closed,
            or_empty(&d.closed_at),
            or_empty(&d.counted_cash),
            or_empty(&d.difference),
        ));
    }
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    response
        .headers_mut()
        .insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"daily-balances.csv\""));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_is_chosen_only_when_asked_for() {
        let mut h = HeaderMap::new();
        assert!(!wants_csv(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/csv;q=0.5"));
        assert!(wants_csv(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/csvx"));
        assert!(!wants_csv(&h));
    }

    #[test]
    fn a_corrupt_store_row_is_a_500_problem() {
        let response = ApiError::Store(StoreError::Corrupt("total_credits: not an integer".into())).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
    }
}
