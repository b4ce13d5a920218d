//! The ledger's day totals on Postgres: one grouped query over `entries_by_business_date`.

use chrono::NaiveDate;
use sqlx::postgres::PgPool;
use sqlx::Row;

use cashflow_domain::{Balance, BusinessDate, DayTotals, MerchantId};

use crate::store::StoreError;

pub(super) async fn day_totals(
    pool: &PgPool,
    merchant: MerchantId,
    from: BusinessDate,
    to: BusinessDate,
) -> Result<Vec<(BusinessDate, DayTotals)>, StoreError> {
    // SUM of bigint is numeric; the cast back to bigint fails on overflow instead of wrapping.
    let rows = sqlx::query(
        "SELECT business_date,
                COALESCE(SUM(amount_minor) FILTER (WHERE type = 'credit'), 0)::bigint AS credits,
                COALESCE(SUM(amount_minor) FILTER (WHERE type = 'debit'), 0)::bigint AS debits,
                COUNT(*) AS entry_count
         FROM entries WHERE merchant_id = $1 AND business_date >= $2 AND business_date <= $3
         GROUP BY business_date ORDER BY business_date",
    )
    .bind(merchant.as_uuid())
    .bind(from.naive())
    .bind(to.naive())
    .fetch_all(pool)
    .await
    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    rows.iter()
        .map(|r| {
            let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("day totals: {e}"));
            let date: NaiveDate = r.try_get("business_date").map_err(|e| corrupt(&e))?;
            let count: i64 = r.try_get("entry_count").map_err(|e| corrupt(&e))?;
            Ok((
                BusinessDate::from_naive(date).ok_or_else(|| corrupt(&date))?,
                DayTotals {
                    total_credits: Balance::from_minor(r.try_get("credits").map_err(|e| corrupt(&e))?),
                    total_debits: Balance::from_minor(r.try_get("debits").map_err(|e| corrupt(&e))?),
                    entry_count: u64::try_from(count).map_err(|e| corrupt(&e))?,
                },
            ))
        })
        .collect()
}
