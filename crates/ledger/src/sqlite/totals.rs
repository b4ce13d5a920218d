//! The ledger's day totals on SQLite: one grouped query over `entries_by_business_date`.

use sqlx::sqlite::SqlitePool;
use sqlx::Row;

use cashflow_domain::{Balance, BusinessDate, DayTotals, MerchantId};

use crate::store::StoreError;

pub(super) async fn day_totals(
    reader: &SqlitePool,
    merchant: MerchantId,
    from: BusinessDate,
    to: BusinessDate,
) -> Result<Vec<(BusinessDate, DayTotals)>, StoreError> {
    // SUM (unlike `+`) fails on integer overflow instead of turning into a float.
    let rows = sqlx::query(
        "SELECT business_date,
                COALESCE(SUM(CASE WHEN type = 'credit' THEN amount_minor END), 0) AS credits,
                COALESCE(SUM(CASE WHEN type = 'debit' THEN amount_minor END), 0) AS debits,
                COUNT(*) AS entry_count
         FROM entries WHERE merchant_id = ?1 AND business_date >= ?2 AND business_date <= ?3
         GROUP BY business_date ORDER BY business_date",
    )
    .bind(merchant.to_string())
    .bind(from.to_string())
    .bind(to.to_string())
    .fetch_all(reader)
    .await
    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    rows.iter()
        .map(|r| {
            let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("day totals: {e}"));
            let date: String = r.try_get("business_date").map_err(|e| corrupt(&e))?;
            let date = BusinessDate::parse(&date).map_err(|e| corrupt(&e))?;
            let count: i64 = r.try_get("entry_count").map_err(|e| corrupt(&e))?;
            Ok((
                date,
                DayTotals {
                    total_credits: Balance::from_minor(r.try_get("credits").map_err(|e| corrupt(&e))?),
                    total_debits: Balance::from_minor(r.try_get("debits").map_err(|e| corrupt(&e))?),
                    entry_count: u64::try_from(count).map_err(|e| corrupt(&e))?,
                },
            ))
        })
        .collect()
}
