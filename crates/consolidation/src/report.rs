//! The daily balance reports as the API sends them: their JSON shapes (and OpenAPI schemas),
//! how a domain [`DailyBalance`] is formatted in a currency, and [`CachedReport`], a report
//! serialized once. The API builds them and the caches store them, so the caches need not know
//! the API: they hold bytes, not HTTP responses.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use cashflow_domain::{Currency, DailyBalance};

/// The consolidated balance of one business date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DailyBalanceResponse {
    #[schema(example = "2026-11-23")]
    pub date: String,
    #[schema(example = "BRL")]
    pub currency: String,
    /// The previous day's closing balance.
    #[schema(example = "1000.00")]
    pub opening_balance: String,
    pub total_credits: String,
    pub total_debits: String,
    /// Credits minus debits.
    pub net: String,
    pub closing_balance: String,
    pub entry_count: u64,
    /// The newest ledger commit reflected in this report: how fresh it is.
    pub as_of: String,
}

/// One day of a range report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DayBalance {
    pub date: String,
    pub opening_balance: String,
    pub total_credits: String,
    pub total_debits: String,
    pub net: String,
    pub closing_balance: String,
    pub entry_count: u64,
}

/// Daily balances of a range of business dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DailyBalanceRange {
    pub currency: String,
    /// The newest ledger commit reflected in these reports.
    pub as_of: String,
    pub days: Vec<DayBalance>,
}

/// One day of a report, formatted in the merchant's currency.
pub(crate) fn day_balance(d: &DailyBalance, c: Currency) -> DayBalance {
    DayBalance {
        date: d.date.to_string(),
        opening_balance: d.opening_balance.format(c),
        total_credits: d.total_credits.format(c),
        total_debits: d.total_debits.format(c),
        net: d.net.format(c),
        closing_balance: d.closing_balance.format(c),
        entry_count: d.entry_count,
    }
}

/// A daily report as the API sends it: its JSON, serialized once when the report is computed.
/// A cache hit is then answered without building, copying or serializing anything (a clone is
/// a reference count), which on the hottest read of the system is most of the handler's work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReport(Bytes);

impl CachedReport {
    /// Serializes `report`.
    pub fn of(report: &DailyBalanceResponse) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(report).map(|json| Self(json.into()))
    }

    /// A report stored as JSON elsewhere (Redis), if it is one this version can serve.
    pub fn from_json(json: String) -> Option<Self> {
        serde_json::from_str::<DailyBalanceResponse>(&json).ok().map(|_| Self(json.into()))
    }

    /// The JSON, as sent.
    pub fn json(&self) -> &[u8] {
        &self.0
    }

    /// The JSON as a response body (a reference count, not a copy).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}
