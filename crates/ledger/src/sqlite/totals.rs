//! The ledger's day totals on SQLite: one grouped query over `entries_by_business_date`.

use sqlx::sqlite::SqlitePool;

use cashflow_domain::{BusinessDate, DayTotals, MerchantId};

use super::columns::{date_key, date_of_key};
use crate::store::{day_totals_of_sums, StoreError};

/// The totals of each of a merchant's days in a range: one seek of `entries_by_business_date`.
pub(super) const DAY_TOTALS: &str = concat!(
    "SELECT business_date,
            COALESCE(SUM(CASE WHEN type = 0 THEN amount_minor END), 0) AS credits,
            COALESCE(SUM(CASE WHEN type = 1 THEN amount_minor END), 0) AS debits,
            COUNT(*) AS entry_count
     FROM entries WHERE merchant = ",
    merchant_key!("?1"),
    " AND business_date >= ?2 AND business_date <= ?3
     GROUP BY business_date ORDER BY business_date"
);

pub(super) async fn day_totals(
    reader: &SqlitePool,
    merchant: MerchantId,
    from: BusinessDate,
    to: BusinessDate,
) -> Result<Vec<(BusinessDate, DayTotals)>, StoreError> {
    // SUM (unlike `+`) fails on integer overflow instead of turning into a float.
    let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(DAY_TOTALS)
        .bind(merchant.to_string())
        .bind(date_key(from))
        .bind(date_key(to))
        .fetch_all(reader)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    rows.into_iter()
        .map(|(date, credits, debits, count)| {
            Ok((date_of_key(date, "day totals")?, day_totals_of_sums(credits, debits, count)?))
        })
        .collect()
}
