//! The daily balance reports as the API sends them: their JSON shapes (and OpenAPI schemas),
//! how a domain [`DailyBalance`] is formatted in a currency, and [`CachedReport`], a report
//! serialized once. The API builds them and the caches store them, so the caches need not know
//! the API: they hold bytes, not HTTP responses.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use chrono::SecondsFormat;
use sha2::{Digest, Sha256};

use cashflow_domain::{Currency, DailyBalance, DayTotals};

use crate::store::{Adjustments, ClosedDay};

/// The part of a day's totals recorded for an earlier, closed day: entries sent with
/// `adjust_into_open_day`, and reversals of a closed day's entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AdjustmentResponse {
    /// The closed day these entries were meant for.
    #[schema(example = "2026-11-22")]
    pub adjusts_date: String,
    pub total_credits: String,
    pub total_debits: String,
    pub entry_count: u64,
}

/// The adjustments counted on `day`, by the closed day they were meant for.
fn adjustments_on(
    adjustments: &Adjustments,
    day: cashflow_domain::BusinessDate,
    c: Currency,
) -> Vec<AdjustmentResponse> {
    adjustments
        .range((day, cashflow_domain::BusinessDate::MIN)..=(day, cashflow_domain::BusinessDate::MAX))
        .map(|((_, meant_for), t): (_, &DayTotals)| AdjustmentResponse {
            adjusts_date: meant_for.to_string(),
            total_credits: t.total_credits.format(c),
            total_debits: t.total_debits.format(c),
            entry_count: t.entry_count,
        })
        .collect()
}

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
    /// The merchant's books are closed through this day: its report cannot change until a
    /// reopen. Required on the wire, so a report cached by a release without it is a miss.
    pub closed: bool,
    /// When the close covering this day was made; `null` when the day is open.
    pub closed_at: Option<String>,
    /// What was counted in the drawer, on the day a close was made for; `null` otherwise.
    #[schema(example = "150.00")]
    pub counted_cash: Option<String>,
    /// Counted minus expected ("quebra de caixa"), with `counted_cash`; `null` otherwise.
    #[schema(example = "-9.50")]
    pub difference: Option<String>,
    /// The part of this day's totals recorded for earlier, closed days, per closed day
    /// (empty when none).
    pub adjustments: Vec<AdjustmentResponse>,
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
    /// As in the one-day report.
    pub closed: bool,
    pub closed_at: Option<String>,
    pub counted_cash: Option<String>,
    pub difference: Option<String>,
    pub adjustments: Vec<AdjustmentResponse>,
}

/// Daily balances of a range of business dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DailyBalanceRange {
    pub currency: String,
    /// The newest ledger commit reflected in these reports.
    pub as_of: String,
    pub days: Vec<DayBalance>,
}

/// One day of a report, formatted in the merchant's currency, with its close if it is closed.
pub(crate) fn day_balance(
    d: &DailyBalance,
    c: Currency,
    closed: Option<ClosedDay>,
    adjustments: &Adjustments,
) -> DayBalance {
    DayBalance {
        date: d.date.to_string(),
        opening_balance: d.opening_balance.format(c),
        total_credits: d.total_credits.format(c),
        total_debits: d.total_debits.format(c),
        net: d.net.format(c),
        closing_balance: d.closing_balance.format(c),
        entry_count: d.entry_count,
        closed: closed.is_some(),
        closed_at: closed.map(|x| x.closed_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        counted_cash: closed.and_then(|x| x.counted_cash).map(|m| c.format_minor(m)),
        difference: closed.and_then(|x| x.difference).map(|m| c.format_minor(m)),
        adjustments: adjustments_on(adjustments, d.date, c),
    }
}

/// A daily report as the API sends it: its JSON, serialized once when the report is computed.
/// A cache hit is then answered without building, copying or serializing anything (a clone is
/// a reference count), which on the hottest read of the system is most of the handler's work.
/// A closed day's report also carries its entity tag, computed once with the JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedReport {
    json: Bytes,
    /// `Some` for a closed day: the strong `ETag` of `json` (a digest, so any change of the
    /// report, such as `closed` turning false after a reopen, changes it).
    etag: Option<String>,
}

impl CachedReport {
    /// Serializes `report`.
    pub fn of(report: &DailyBalanceResponse) -> Result<Self, serde_json::Error> {
        serde_json::to_vec(report).map(|json| Self::with_json(json.into(), report.closed))
    }

    /// A report stored as JSON elsewhere (Redis), if it is one this version can serve.
    pub fn from_json(json: String) -> Option<Self> {
        let closed = serde_json::from_str::<DailyBalanceResponse>(&json).ok()?.closed;
        Some(Self::with_json(json.into(), closed))
    }

    fn with_json(json: Bytes, closed: bool) -> Self {
        let etag = closed.then(|| {
            let digest = Sha256::digest(&json);
            let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        });
        Self { json, etag }
    }

    /// The JSON, as sent.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The `ETag` of a closed day's report (`None` while the day is open).
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The JSON as a response body (a reference count, not a copy).
    pub fn into_bytes(self) -> Bytes {
        self.json
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A one-credit day's report, open or closed: the fixture the cache tests share.
    pub(crate) fn report(closed: bool) -> DailyBalanceResponse {
        DailyBalanceResponse {
            date: "2026-11-23".into(),
            currency: "BRL".into(),
            opening_balance: "0.00".into(),
            total_credits: "1.00".into(),
            total_debits: "0.00".into(),
            net: "1.00".into(),
            closing_balance: "1.00".into(),
            entry_count: 1,
            as_of: "2026-11-23T10:00:00Z".into(),
            closed,
            closed_at: closed.then(|| "2026-11-24T00:00:00.000000Z".into()),
            counted_cash: None,
            difference: None,
            adjustments: Vec::new(),
        }
    }

    #[test]
    fn only_a_closed_days_report_has_an_etag_and_it_follows_the_content() {
        let open = CachedReport::of(&report(false)).unwrap();
        let closed = CachedReport::of(&report(true)).unwrap();
        assert_eq!(open.etag(), None);
        let etag = closed.etag().unwrap();
        assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 34, "{etag}");
        let mut later = report(true);
        later.closed_at = Some("2026-11-25T00:00:00.000000Z".into());
        assert_ne!(CachedReport::of(&later).unwrap().etag(), Some(etag), "another close, another tag");
    }

    #[test]
    fn a_report_read_back_from_json_keeps_its_etag_and_one_without_closed_is_not_served() {
        let closed = CachedReport::of(&report(true)).unwrap();
        let json = String::from_utf8(closed.json().to_vec()).unwrap();
        assert_eq!(CachedReport::from_json(json.clone()), Some(closed));
        // As a release before closed days cached it (in Redis): a miss, so it is recomputed.
        let mut older: serde_json::Value = serde_json::from_str(&json).unwrap();
        for field in ["closed", "closed_at", "counted_cash", "difference"] {
            older.as_object_mut().unwrap().remove(field);
        }
        assert_eq!(CachedReport::from_json(older.to_string()), None);
    }
}
