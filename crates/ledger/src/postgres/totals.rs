//! The ledger's day totals on Postgres: one grouped query over `entries_by_business_date`.

use chrono::NaiveDate;
use sqlx::postgres::PgPool;

use cashflow_domain::{BusinessDate, DayTotals, MerchantId};

use crate::store::{day_totals_of_sums, StoreError};

pub(super) async fn day_totals(
    pool: &PgPool,
    merchant: MerchantId,
    from: BusinessDate,
    to: BusinessDate,
) -> Result<Vec<(BusinessDate, DayTotals)>, StoreError> {
    // SUM of bigint is numeric; the cast back to bigint fails on overflow instead of wrapping.
    // `type` is 'c' (credit) or 'd' (debit); the merchant is its key in `entries`.
    let rows: Vec<(NaiveDate, i64, i64, i64)> = sqlx::query_as(
        "SELECT business_date,
                COALESCE(SUM(amount_minor) FILTER (WHERE type = 'c'), 0)::bigint AS credits,
                COALESCE(SUM(amount_minor) FILTER (WHERE type = 'd'), 0)::bigint AS debits,
                COUNT(*) AS entry_count
         FROM entries WHERE merchant = (SELECT seq FROM merchants WHERE id = $1)
                        AND business_date >= $2 AND business_date <= $3
         GROUP BY business_date ORDER BY business_date",
    )
    .bind(merchant.as_uuid())
    .bind(from.naive())
    .bind(to.naive())
    .fetch_all(pool)
    .await
    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    rows.into_iter()
        .map(|(date, credits, debits, count)| {
            Ok((
                BusinessDate::from_naive(date).ok_or_else(|| StoreError::Corrupt(format!("day totals: {date}")))?,
                day_totals_of_sums(credits, debits, count)?,
            ))
        })
        .collect()
}
