//! The ledger's HTTP API (`/v1/entries`). Handlers are thin: authenticate, parse the request
//! into domain types, call [`Ledger`], render.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRef, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, OpenApi, ToSchema};

use cashflow_auth::{AuthError, Principal, Scope, TokenVerifier};
use cashflow_domain::{
    Amount, BusinessDate, Category, Description, Entry, EntryError, EntryId, MerchantTimeZone, MoneyError, NewEntry,
};
use cashflow_http::{context, ApiJson, ApiQuery, Problem, ProblemType};

use crate::service::{ClosedDay, Ledger, LedgerError};
use crate::store::{EntryQuery, Idempotency, Recorded, StoreError};

/// What the ledger's handlers share.
#[derive(Clone)]
pub struct LedgerState {
    pub ledger: Arc<Ledger>,
    pub verifier: Arc<dyn TokenVerifier>,
}

impl FromRef<LedgerState> for Arc<dyn TokenVerifier> {
    fn from_ref(state: &LedgerState) -> Self {
        state.verifier.clone()
    }
}

/// The ledger's routes.
pub fn router(state: LedgerState) -> Router {
    Router::new()
        .route("/v1/entries", post(create_entry).get(list_entries))
        .route("/v1/entries/{id}", get(get_entry))
        .route("/v1/entries/{id}/reversal", post(reverse_entry))
        .route("/v1/merchant", get(get_merchant))
        .route("/v1/days/{date}/close", post(close_day))
        .route("/v1/days/{date}/reopen", post(reopen_day))
        .route("/v1/days", get(list_days))
        .with_state(state)
}

/// The ledger's part of the OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    paths(create_entry, list_entries, get_entry, reverse_entry, get_merchant, close_day, reopen_day, list_days),
    components(schemas(
        CreateEntryRequest,
        ReversalRequest,
        EntryResponse,
        EntryPage,
        MerchantResponse,
        CloseDayRequest,
        DayCloseResponse,
        ReopenDayRequest,
        DayAuditResponse,
        DaysResponse
    ))
)]
pub struct LedgerApi;

/// Every way a ledger request can fail, one variant per kind of answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401/403 with `WWW-Authenticate`.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A 4xx built by the handler (validation).
    #[error("{0}")]
    Problem(Problem),
    /// A use case failed; mapped to its status in one place below.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
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
            ApiError::Ledger(e) => ledger_problem(e).into_response(),
        }
    }
}

fn ledger_problem(e: LedgerError) -> Problem {
    match e {
        LedgerError::UnknownMerchant => {
            Problem::new(StatusCode::FORBIDDEN, ProblemType::UnknownMerchant, "Unknown merchant")
                .detail("the token's merchant is not registered in this ledger")
        }
        LedgerError::EntryNotFound => Problem::not_found("entry"),
        LedgerError::Entry(EntryError::ReversalOfReversal) => {
            Problem::new(StatusCode::CONFLICT, ProblemType::CannotReverseAReversal, "A reversal cannot be reversed")
                .detail(EntryError::ReversalOfReversal.to_string())
        }
        LedgerError::Entry(e @ (EntryError::OccursInFuture | EntryError::OccursTooEarly)) => {
            Problem::invalid_field(ProblemType::InvalidOccurredAt, "occurred_at", e.to_string())
        }
        LedgerError::Entry(e) => {
            Problem::new(StatusCode::BAD_REQUEST, ProblemType::InvalidEntry, "The entry is invalid")
                .detail(e.to_string())
        }
        LedgerError::Store(StoreError::IdempotencyConflict) => Problem::new(
            StatusCode::CONFLICT,
            ProblemType::IdempotencyKeyReused,
            "Idempotency-Key already used with a different request",
        )
        .detail("send a new Idempotency-Key for a different entry; nothing was written"),
        LedgerError::FutureDay(date) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ProblemType::DayNotOver,
            "A day can only be closed once it has begun",
        )
        .detail(format!("{date} is after today in the merchant's time zone")),
        LedgerError::Store(StoreError::AlreadyClosed { through }) => {
            Problem::new(StatusCode::CONFLICT, ProblemType::DayAlreadyClosed, "The day is already closed")
                .detail(format!("the books are closed through {through}; reopen first to close again"))
        }
        LedgerError::Store(StoreError::NotClosed { closed_through }) => {
            let detail = match closed_through {
                Some(through) => {
                    format!("the books are closed through {through}; only a day on or before it can be reopened")
                }
                None => "no day of this merchant is closed".to_owned(),
            };
            Problem::new(StatusCode::CONFLICT, ProblemType::DayNotClosed, "The day is not closed").detail(detail)
        }
        LedgerError::Store(StoreError::DayClosed { first_open }) => {
            Problem::new(StatusCode::CONFLICT, ProblemType::DayClosed, "The entry's business day is closed")
                .detail(format!("the first open day is {first_open}"))
        }
        LedgerError::Store(StoreError::AlreadyReversed) => {
            Problem::new(StatusCode::CONFLICT, ProblemType::AlreadyReversed, "The entry has already been reversed")
        }
        LedgerError::Store(StoreError::Unavailable(cause)) => {
            tracing::error!(%cause, "ledger store unavailable");
            Problem::unavailable("the ledger database is unavailable; retry with the same Idempotency-Key")
        }
        LedgerError::Store(e) => {
            tracing::error!(error = %e, "ledger store failure");
            Problem::internal()
        }
    }
}

/// A new entry. Amounts are decimal strings in the merchant's currency.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEntryRequest {
    /// `credit` (money in) or `debit` (money out).
    #[serde(rename = "type")]
    #[schema(example = "credit", pattern = "^(credit|debit)$")]
    pub kind: String,
    /// Positive decimal string with at most the merchant currency's minor digits
    /// (`GET /v1/merchant`: 2 for BRL) and at most 999999999999999 minor units.
    #[schema(example = "150.00", pattern = r"^[0-9]+(\.[0-9]{1,3})?$")]
    pub amount: String,
    /// 1 to 280 characters, not only spaces, no control characters.
    #[schema(
        example = "Venda balcão",
        min_length = 1,
        max_length = 280,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub description: String,
    /// RFC 3339 with offset; defaults to now. Backdating is allowed (to 1970); more than
    /// 5 minutes in the future is not.
    #[serde(default)]
    #[schema(value_type = Option<chrono::DateTime<chrono::Utc>>, example = "2026-11-23T10:15:00-03:00")]
    pub occurred_at: Option<String>,
    /// 1 to 64 characters, not only spaces, no control characters.
    #[serde(default)]
    #[schema(
        example = "sales",
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub category: Option<String>,
    /// When the entry's business day is closed: `true` records it on the first open day, with
    /// `adjusts_date` set to the day it was meant for; otherwise (the default) it is refused
    /// with 409 `day-closed`. No effect on an open day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjust_into_open_day: Option<bool>,
}

/// Optional body of a reversal.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReversalRequest {
    /// 1 to 280 characters, not only spaces, no control characters; defaults to
    /// "Reversal of …".
    #[schema(
        min_length = 1,
        max_length = 280,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub description: Option<String>,
}

/// An entry as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct EntryResponse {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub amount: String,
    pub currency: String,
    pub description: String,
    pub category: Option<String>,
    /// In the merchant's local offset.
    pub occurred_at: String,
    /// The day of `occurred_at` in the merchant's time zone.
    pub business_date: String,
    pub recorded_at: String,
    pub reversal_of: Option<String>,
    /// Set on an adjustment: the closed day (YYYY-MM-DD) this entry was meant for. It counts
    /// on `business_date`, the first day that was open when it was recorded.
    #[schema(example = json!(null))]
    pub adjusts_date: Option<String>,
}

impl EntryResponse {
    fn from_entry(entry: &Entry, tz: MerchantTimeZone) -> Self {
        Self {
            id: entry.id.to_string(),
            kind: entry.kind.as_str().to_owned(),
            amount: entry.currency.format_minor(entry.amount.minor()),
            currency: entry.currency.code().to_owned(),
            description: entry.description.as_str().to_owned(),
            category: entry.category.as_ref().map(|c| c.as_str().to_owned()),
            occurred_at: entry.occurred_at.with_timezone(&tz.tz()).to_rfc3339_opts(SecondsFormat::AutoSi, false),
            business_date: entry.business_date.to_string(),
            recorded_at: entry.recorded_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            reversal_of: entry.reversal_of.map(|id| id.to_string()),
            adjusts_date: entry.adjusts_date.map(|d| d.to_string()),
        }
    }
}

/// The caller's merchant: the settings a client needs to show and enter amounts and dates
/// (the web app renders "today" and reads a typed date and time in this time zone).
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct MerchantResponse {
    pub id: String,
    pub name: String,
    /// ISO 4217 code; every amount of this merchant is in it.
    #[schema(example = "BRL")]
    pub currency: String,
    /// Minor digits of the currency (BRL: 2).
    pub minor_digits: u8,
    /// IANA time zone that decides business dates.
    #[schema(example = "America/Sao_Paulo")]
    pub time_zone: String,
}

/// A page of entries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EntryPage {
    pub items: Vec<EntryResponse>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

fn parse_new_entry(req: &CreateEntryRequest, currency: cashflow_domain::Currency) -> Result<NewEntry, Problem> {
    let kind = req
        .kind
        .parse()
        .map_err(|e: EntryError| Problem::invalid_field(ProblemType::InvalidType, "type", e.to_string()))?;
    let amount = Amount::parse(&req.amount, currency).map_err(|e| {
        let slug = match e {
            MoneyError::TooLarge { .. } | MoneyError::Overflow => ProblemType::AmountTooLarge,
            _ => ProblemType::InvalidAmount,
        };
        Problem::invalid_field(slug, "amount", e.to_string())
    })?;
    let description = Description::parse(&req.description)
        .map_err(|e| Problem::invalid_field(ProblemType::InvalidDescription, "description", e.to_string()))?;
    let category = req
        .category
        .as_deref()
        .map(Category::parse)
        .transpose()
        .map_err(|e| Problem::invalid_field(ProblemType::InvalidCategory, "category", e.to_string()))?;
    let occurred_at = req.occurred_at.as_deref().map(parse_instant).transpose()?;
    Ok(NewEntry { kind, amount, description, category, occurred_at })
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, Problem> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc).trunc_subsecs(6)).map_err(|_| {
        Problem::invalid_field(
            ProblemType::InvalidOccurredAt,
            "occurred_at",
            "occurred_at must be an RFC 3339 date-time with an offset, such as 2026-11-23T10:15:00-03:00",
        )
    })
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let invalid = || {
        Problem::new(StatusCode::BAD_REQUEST, ProblemType::InvalidIdempotencyKey, "Invalid Idempotency-Key")
            .detail("Idempotency-Key must be 1 to 255 visible ASCII characters")
    };
    let key = value.to_str().map_err(|_| invalid())?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(Some(key.to_owned()))
}

fn request_hash(req: &CreateEntryRequest) -> String {
    let canonical = serde_json::to_vec(req).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_entry_id(text: &str) -> Result<EntryId, Problem> {
    EntryId::parse(text).map_err(|e| Problem::invalid_field(ProblemType::InvalidId, "id", e.to_string()))
}

fn created(entry: &Entry, tz: MerchantTimeZone, replayed: bool) -> Response {
    let location = format!("/v1/entries/{}", entry.id);
    let mut response = (StatusCode::CREATED, Json(EntryResponse::from_entry(entry, tz))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    if replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Record a debit or credit.
#[utoipa::path(
    post, path = "/v1/entries", tag = "ledger",
    request_body = CreateEntryRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retry-safe key: the same key and body return the original entry")),
    responses(
        (status = 201, description = "Recorded (or replayed: header Idempotent-Replayed)", body = EntryResponse),
        (status = 400, description = "Invalid input", content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid token"),
        (status = 403, description = "Missing scope entries:write"),
        (status = 409, description = "Idempotency-Key reused with a different body (`idempotency-key-reused`), or the entry's business day is closed and `adjust_into_open_day` is not true (`day-closed`, naming the first open day)", content_type = "application/problem+json"),
        (status = 413, description = "Body too large"),
    ),
    security(("bearer" = ["entries:write"]))
)]
async fn create_entry(
    State(state): State<LedgerState>,
    principal: Principal,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateEntryRequest>,
) -> Result<Response, ApiError> {
    principal.require(Scope::EntriesWrite)?;
    let merchant = state.ledger.merchant(principal.merchant_id).await?;
    let key = idempotency_key(&headers)?;
    let new = parse_new_entry(&req, merchant.currency)?;
    let idempotency = key.map(|key| Idempotency { key, request_hash: request_hash(&req) });
    let closed_day =
        if req.adjust_into_open_day == Some(true) { ClosedDay::AdjustIntoOpenDay } else { ClosedDay::Refuse };
    let recorded = state.ledger.record_with(merchant.id, new, idempotency, context::traceparent(), closed_day).await?;
    let (entry, replayed) = match recorded {
        Recorded::Created(e) => (e, false),
        Recorded::Replayed(e) => (e, true),
    };
    Ok(created(&entry, merchant.time_zone, replayed))
}

/// One entry.
#[utoipa::path(
    get, path = "/v1/entries/{id}", tag = "ledger",
    params(("id" = uuid::Uuid, Path, description = "Entry id")),
    responses((status = 200, body = EntryResponse), (status = 404, description = "No such entry for this merchant")),
    security(("bearer" = ["entries:read"]))
)]
async fn get_entry(
    State(state): State<LedgerState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<EntryResponse>, ApiError> {
    principal.require(Scope::EntriesRead)?;
    let id = parse_entry_id(&id)?;
    let merchant = state.ledger.merchant(principal.merchant_id).await?;
    let entry = state.ledger.entry(merchant.id, id).await?;
    Ok(Json(EntryResponse::from_entry(&entry, merchant.time_zone)))
}

/// Reverse an entry: records the opposite entry; the original stays as it was. The reversal
/// of an entry of a closed day is dated on the first open day, with `adjusts_date` set to the
/// original's business date.
#[utoipa::path(
    post, path = "/v1/entries/{id}/reversal", tag = "ledger",
    params(("id" = uuid::Uuid, Path, description = "Entry to reverse")),
    request_body(content = Option<ReversalRequest>, description = "Optional description of the reversal"),
    responses(
        (status = 201, body = EntryResponse),
        (status = 404, description = "No such entry for this merchant"),
        (status = 409, description = "Already reversed, or the entry is itself a reversal"),
    ),
    security(("bearer" = ["entries:write"]))
)]
async fn reverse_entry(
    State(state): State<LedgerState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require(Scope::EntriesWrite)?;
    let id = parse_entry_id(&id)?;
    let request: Option<ReversalRequest> = optional_body(&body)?;
    let description = request
        .and_then(|r| r.description)
        .map(|d| Description::parse(&d))
        .transpose()
        .map_err(|e| Problem::invalid_field(ProblemType::InvalidDescription, "description", e.to_string()))?;
    let merchant = state.ledger.merchant(principal.merchant_id).await?;
    let reversal = state.ledger.reverse(merchant.id, id, description, context::traceparent()).await?;
    Ok(created(&reversal, merchant.time_zone, false))
}

/// The token's merchant. Any valid token may read it: it is what every client needs to format
/// the merchant's amounts and dates.
#[utoipa::path(
    get, path = "/v1/merchant", tag = "ledger",
    responses((status = 200, body = MerchantResponse), (status = 401, description = "Missing or invalid token")),
    security(("bearer" = []))
)]
async fn get_merchant(
    State(state): State<LedgerState>,
    principal: Principal,
) -> Result<Json<MerchantResponse>, ApiError> {
    let merchant = state.ledger.merchant(principal.merchant_id).await?;
    Ok(Json(MerchantResponse {
        id: merchant.id.to_string(),
        name: merchant.name.as_str().to_owned(),
        currency: merchant.currency.code().to_owned(),
        minor_digits: merchant.currency.minor_digits(),
        time_zone: merchant.time_zone.name().to_owned(),
    }))
}

/// The optional body of `POST /v1/days/{date}/close`.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseDayRequest {
    /// What was counted in the drawer, a decimal string in the merchant's currency (the
    /// amount rules of `POST /v1/entries`).
    #[schema(example = "1234.56", pattern = r"^[0-9]+(\.[0-9]{1,3})?$")]
    pub counted_cash: Option<String>,
    /// At most 500 characters.
    #[schema(max_length = 500)]
    pub note: Option<String>,
}

/// A close record: what the ledger's own entries said when the day was closed.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DayCloseResponse {
    /// The day closed; every earlier day is closed with it.
    #[schema(example = "2026-11-23")]
    pub date: String,
    pub closed_at: String,
    /// The token's subject (user or client).
    pub closed_by: String,
    pub currency: String,
    /// Credits and debits dated on `date`, and how many entries that is.
    pub credits: String,
    pub debits: String,
    pub entry_count: u64,
    /// Credits minus debits of every entry dated on or before `date`.
    pub expected_balance: String,
    pub counted_cash: Option<String>,
    /// Counted minus expected ("quebra de caixa").
    pub difference: Option<String>,
    pub note: Option<String>,
}

impl DayCloseResponse {
    fn of(close: &crate::store::DayClose, currency: cashflow_domain::Currency) -> Self {
        Self {
            date: close.date.to_string(),
            closed_at: close.closed_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            closed_by: close.closed_by.clone(),
            currency: currency.code().to_owned(),
            credits: currency.format_minor(close.credits_minor),
            debits: currency.format_minor(close.debits_minor),
            entry_count: close.entry_count,
            expected_balance: currency.format_minor(close.expected_balance_minor),
            counted_cash: close.counted_cash_minor.map(|m| currency.format_minor(m)),
            difference: close.difference_minor().map(|m| currency.format_minor(m)),
            note: close.note.clone(),
        }
    }
}

/// The most characters a close's note may have.
const NOTE_MAX_CHARS: usize = 500;

/// Close the books through a day: that day and every earlier one take no more entries.
#[utoipa::path(
    post, path = "/v1/days/{date}/close", tag = "ledger",
    params(("date" = chrono::NaiveDate, Path, description = "Business day to close, YYYY-MM-DD (1970 or later)", pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")),
    request_body(content = Option<CloseDayRequest>, description = "Counted cash and a note, both optional"),
    responses(
        (status = 201, body = DayCloseResponse),
        (status = 400, description = "Invalid input", content_type = "application/problem+json"),
        (status = 403, description = "Missing scope days:close"),
        (status = 409, description = "Already closed (that day or a later one)", content_type = "application/problem+json"),
        (status = 422, description = "The day is after today in the merchant's time zone", content_type = "application/problem+json"),
    ),
    security(("bearer" = ["days:close"]))
)]
async fn close_day(
    State(state): State<LedgerState>,
    principal: Principal,
    Path(date): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    principal.require(Scope::DaysClose)?;
    let date = parse_date("date", &date)?;
    let request: CloseDayRequest = optional_body(&body)?.unwrap_or_default();
    if request.note.as_ref().is_some_and(|n| n.chars().count() > NOTE_MAX_CHARS) {
        return Err(Problem::invalid_field(
            ProblemType::InvalidNote,
            "note",
            format!("at most {NOTE_MAX_CHARS} characters"),
        )
        .into());
    }
    let merchant = state.ledger.merchant(principal.merchant_id).await?;
    let counted_cash = request
        .counted_cash
        .as_deref()
        .map(|text| Amount::parse_count(text, merchant.currency))
        .transpose()
        .map_err(|e| Problem::invalid_field(ProblemType::InvalidCountedCash, "counted_cash", e.to_string()))?;
    let closed_by = principal.subject.clone();
    let close = state.ledger.close_day(merchant.id, date, counted_cash, request.note, closed_by).await?;
    Ok((StatusCode::CREATED, Json(DayCloseResponse::of(&close, merchant.currency))).into_response())
}

/// The body of `POST /v1/days/{date}/reopen`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReopenDayRequest {
    /// Why the day is reopened: 1 to 500 characters, required (it goes to the audit trail).
    #[schema(
        example = "venda de sábado lançada no dia errado",
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub reason: String,
}

/// One close or reopen of the audit trail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DayAuditResponse {
    /// `close` or `reopen`.
    #[schema(example = "reopen")]
    pub action: String,
    /// The day closed, or the first day reopened.
    #[schema(example = "2026-11-23")]
    pub date: String,
    /// When it happened.
    pub at: String,
    /// The token's subject (user or client).
    pub by: String,
    /// The reopen's reason, or the close's note.
    pub reason: Option<String>,
    /// The watermark before and after: the books were closed through these days.
    pub closed_through_before: Option<String>,
    pub closed_through_after: Option<String>,
}

impl DayAuditResponse {
    fn of(audit: &crate::store::DayAudit) -> Self {
        Self {
            action: audit.action.as_str().to_owned(),
            date: audit.date.to_string(),
            at: audit.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            by: audit.by.clone(),
            reason: audit.reason.clone(),
            closed_through_before: audit.closed_through_before.map(|d| d.to_string()),
            closed_through_after: audit.closed_through_after.map(|d| d.to_string()),
        }
    }
}

/// Reopen the books from a day: that day and every later closed day take entries again; the
/// watermark moves back to the day before. Required `reason`, kept in the audit trail.
#[utoipa::path(
    post, path = "/v1/days/{date}/reopen", tag = "ledger",
    params(("date" = chrono::NaiveDate, Path, description = "First business day to reopen, YYYY-MM-DD (1970 or later)", pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")),
    request_body = ReopenDayRequest,
    responses(
        (status = 200, body = DayAuditResponse, description = "The reopen's audit row"),
        (status = 400, description = "Invalid date or reason, or a body of another shape", content_type = "application/problem+json"),
        (status = 415, description = "No JSON body", content_type = "application/problem+json"),
        (status = 403, description = "Missing scope days:reopen"),
        (status = 409, description = "The day is not closed (`day-not-closed`)", content_type = "application/problem+json"),
    ),
    security(("bearer" = ["days:reopen"]))
)]
async fn reopen_day(
    State(state): State<LedgerState>,
    principal: Principal,
    Path(date): Path<String>,
    ApiJson(request): ApiJson<ReopenDayRequest>,
) -> Result<Json<DayAuditResponse>, ApiError> {
    principal.require(Scope::DaysReopen)?;
    let date = parse_date("date", &date)?;
    let reason = request.reason;
    let valid =
        !reason.trim().is_empty() && reason.chars().count() <= NOTE_MAX_CHARS && !reason.chars().any(char::is_control);
    if !valid {
        return Err(Problem::invalid_field(
            ProblemType::InvalidReason,
            "reason",
            format!("1 to {NOTE_MAX_CHARS} characters without control characters"),
        )
        .into());
    }
    let merchant = state.ledger.merchant(principal.merchant_id).await?;
    let audit = state.ledger.reopen_day(merchant.id, date, reason, principal.subject.clone()).await?;
    Ok(Json(DayAuditResponse::of(&audit)))
}

/// Query of `GET /v1/days`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DaysParams {
    /// First business date, inclusive.
    #[param(value_type = chrono::NaiveDate, pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    from: String,
    /// Last business date, inclusive (not before `from`, at most 365 days after it).
    #[param(value_type = chrono::NaiveDate, pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    to: String,
}

/// The closes and the audit trail of a range of days.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DaysResponse {
    /// The merchant's watermark now: every day on or before it is closed (`null`: none).
    pub closed_through: Option<String>,
    /// The close records of days in the range, by date then close time (a day closed,
    /// reopened and closed again has two).
    pub closes: Vec<DayCloseResponse>,
    /// Every close and reopen of a day in the range, in the order they happened.
    pub audit: Vec<DayAuditResponse>,
}

/// Longest range `GET /v1/days` may span.
const MAX_DAYS_RANGE: i64 = 366;

/// The close records and the audit trail (who closed or reopened, when, why) of a range of
/// days. Read with `reports:read`: what an accountant checking closed reports needs, and no
/// entry.
#[utoipa::path(
    get, path = "/v1/days", tag = "ledger",
    params(DaysParams),
    responses(
        (status = 200, body = DaysResponse),
        (status = 400, description = "Invalid or too long range (at most 366 days)", content_type = "application/problem+json"),
        (status = 403, description = "Missing scope reports:read"),
    ),
    security(("bearer" = ["reports:read"]))
)]
async fn list_days(
    State(state): State<LedgerState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<DaysParams>,
) -> Result<Json<DaysResponse>, ApiError> {
    principal.require(Scope::ReportsRead)?;
    let from = parse_date("from", &params.from)?;
    let to = parse_date("to", &params.to)?;
    if from > to {
        return Err(
            Problem::invalid_field(ProblemType::InvalidDateRange, "from", "`from` must not be after `to`").into()
        );
    }
    if from.days_until(to) >= MAX_DAYS_RANGE {
        return Err(Problem::invalid_field(
            ProblemType::DateRangeTooLong,
            "to",
            format!("a listing spans at most {MAX_DAYS_RANGE} days"),
        )
        .into());
    }
    let merchant = state.ledger.merchant(principal.merchant_id).await?;
    let closed_through = state.ledger.closed_through(merchant.id).await?;
    let closes = state.ledger.day_closes(merchant.id, from, to).await?;
    let audit = state.ledger.day_audit(merchant.id, from, to).await?;
    Ok(Json(DaysResponse {
        closed_through: closed_through.map(|d| d.to_string()),
        closes: closes.iter().map(|c| DayCloseResponse::of(c, merchant.currency)).collect(),
        audit: audit.iter().map(DayAuditResponse::of).collect(),
    }))
}

/// A JSON body that may be left out (empty or only whitespace).
fn optional_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<Option<T>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, ProblemType::InvalidBody, "The body does not match the expected shape")
            .detail(e.to_string())
    })
}

/// Query of `GET /v1/entries`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// One business date (YYYY-MM-DD); or use `from` and `to`.
    #[param(value_type = Option<chrono::NaiveDate>, pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    date: Option<String>,
    /// First business date, inclusive (with `to`, instead of `date`).
    #[param(value_type = Option<chrono::NaiveDate>, pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    from: Option<String>,
    /// Last business date, inclusive (with `from`; not before it).
    #[param(value_type = Option<chrono::NaiveDate>, pattern = r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")]
    to: Option<String>,
    /// Page size, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const MAX_PAGE: u32 = 500;

fn parse_date(field: &'static str, text: &str) -> Result<BusinessDate, Problem> {
    BusinessDate::parse(text).map_err(|e| Problem::invalid_field(ProblemType::InvalidDate, field, e.to_string()))
}

fn encode_cursor(date: BusinessDate, id: EntryId) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1|{date}|{id}"))
}

fn decode_cursor(text: &str) -> Result<(BusinessDate, EntryId), Problem> {
    let invalid =
        || Problem::invalid_field(ProblemType::InvalidCursor, "cursor", "cursor is not one this API returned");
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.split('|');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(date), Some(id), None) => {
            Ok((BusinessDate::parse(date).map_err(|_| invalid())?, EntryId::parse(id).map_err(|_| invalid())?))
        }
        _ => Err(invalid()),
    }
}

fn entry_query(params: &ListParams) -> Result<EntryQuery, Problem> {
    let (from, to) = match (&params.date, &params.from, &params.to) {
        (Some(date), None, None) => {
            let d = parse_date("date", date)?;
            (d, d)
        }
        (None, Some(from), Some(to)) => (parse_date("from", from)?, parse_date("to", to)?),
        _ => {
            return Err(Problem::new(StatusCode::BAD_REQUEST, ProblemType::InvalidQuery, "The query string is invalid")
                .detail("give either `date`, or both `from` and `to`"))
        }
    };
    if from > to {
        return Err(Problem::invalid_field(ProblemType::InvalidDateRange, "from", "`from` must not be after `to`"));
    }
    let limit = params.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::invalid_field(
            ProblemType::InvalidLimit,
            "limit",
            format!("limit must be 1 to {MAX_PAGE}"),
        ));
    }
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    Ok(EntryQuery { from, to, after, limit })
}

/// Entries of a business date or a range of them, oldest first, paginated.
#[utoipa::path(
    get, path = "/v1/entries", tag = "ledger",
    params(ListParams),
    responses((status = 200, body = EntryPage), (status = 400, description = "Invalid query")),
    security(("bearer" = ["entries:read"]))
)]
async fn list_entries(
    State(state): State<LedgerState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<EntryPage>, ApiError> {
    principal.require(Scope::EntriesRead)?;
    let mut query = entry_query(&params)?;
    let merchant = state.ledger.merchant(principal.merchant_id).await?;
    let page_size = query.limit;
    query.limit = page_size + 1;
    let mut entries = state.ledger.entries(merchant.id, &query).await?;
    let has_more = entries.len() > page_size as usize;
    entries.truncate(page_size as usize);
    let next_cursor = entries.last().filter(|_| has_more).map(|e| encode_cursor(e.business_date, e.id));
    Ok(Json(EntryPage {
        items: entries.iter().map(|e| EntryResponse::from_entry(e, merchant.time_zone)).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let date = BusinessDate::parse("2026-11-23").unwrap();
        let id = EntryId::new();
        assert_eq!(decode_cursor(&encode_cursor(date, id)).unwrap(), (date, id));
        for bad in ["", "!!!", "djF8eA", &URL_SAFE_NO_PAD.encode("v2|2026-11-23|x")] {
            assert_eq!(decode_cursor(bad).unwrap_err().slug(), "invalid-cursor", "{bad}");
        }
    }

    #[test]
    fn idempotency_keys_are_bounded_visible_ascii() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert("idempotency-key", HeaderValue::from_static("abc-123"));
        assert_eq!(idempotency_key(&headers).unwrap().as_deref(), Some("abc-123"));
        headers.insert("idempotency-key", HeaderValue::from_str(&"k".repeat(256)).unwrap());
        assert!(idempotency_key(&headers).is_err());
        headers.insert("idempotency-key", HeaderValue::from_static("has space"));
        assert!(idempotency_key(&headers).is_err());
    }

    #[test]
    fn the_same_request_hashes_the_same_and_a_different_one_differently() {
        let req = |amount: &str| CreateEntryRequest {
            kind: "credit".into(),
            amount: amount.into(),
            description: "x".into(),
            occurred_at: None,
            category: None,
            adjust_into_open_day: None,
        };
        assert_eq!(request_hash(&req("1.00")), request_hash(&req("1.00")));
        assert_ne!(request_hash(&req("1.00")), request_hash(&req("2.00")));
    }
}
