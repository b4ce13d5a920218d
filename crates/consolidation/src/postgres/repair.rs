//! Reconciliation's writes on Postgres: a drifting day set to the ledger's entries.
//!
//! Locks are taken in the consumer's order (the day's event ids, sorted, then the day's row),
//! so a repair racing a consumer on the same day waits for it or makes it wait, never deadlocks.

use sqlx::Row;
use uuid::Uuid;

use cashflow_domain::{Balance, DayTotals, MerchantId};

use super::{count_to_db, micros, unavailable, PostgresConsolidationStore};
use crate::store::{DayRebuild, RebuildOutcome, StoreError};

pub(super) async fn merchants(store: &PostgresConsolidationStore) -> Result<Vec<MerchantId>, StoreError> {
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT merchant_id FROM merchants ORDER BY merchant_id")
        .fetch_all(&store.pool)
        .await
        .map_err(unavailable)?;
    Ok(ids.into_iter().map(MerchantId::from_uuid).collect())
}

pub(super) async fn rebuild_day(
    store: &PostgresConsolidationStore,
    day: &DayRebuild,
) -> Result<RebuildOutcome, StoreError> {
    let totals = day.totals()?;
    let (merchant, date) = (*day.merchant.as_uuid(), day.date.naive());
    let mut tx = store.pool.begin().await.map_err(unavailable)?;
    let mut ids: Vec<Uuid> = day.entries.iter().map(|e| *e.event_id.as_uuid()).collect();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query(
        "INSERT INTO processed_events (event_id, applied_at)
         SELECT id, $2 FROM UNNEST($1::uuid[]) AS t(id) ORDER BY id
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(micros(chrono::Utc::now()))
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    // A row to lock even when the day has none yet (a consumer's first posting of the day
    // then waits for this transaction instead of racing it).
    sqlx::query(
        "INSERT INTO daily_totals (merchant_id, business_date, total_credits, total_debits, entry_count)
         VALUES ($1, $2, 0, 0, 0) ON CONFLICT (merchant_id, business_date) DO NOTHING",
    )
    .bind(merchant)
    .bind(date)
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    let row = sqlx::query(
        "SELECT total_credits, total_debits, entry_count FROM daily_totals
         WHERE merchant_id = $1 AND business_date = $2 FOR UPDATE",
    )
    .bind(merchant)
    .bind(date)
    .fetch_one(&mut *tx)
    .await
    .map_err(unavailable)?;
    let current = DayTotals {
        total_credits: Balance::from_minor(row.get("total_credits")),
        total_debits: Balance::from_minor(row.get("total_debits")),
        entry_count: u64::try_from(row.get::<i64, _>("entry_count")).unwrap_or(u64::MAX),
    };
    if current != day.found {
        // Rolls back the claimed ids and the placeholder row.
        tx.rollback().await.map_err(unavailable)?;
        return Ok(RebuildOutcome::Moved);
    }
    if totals.entry_count == 0 {
        sqlx::query("DELETE FROM daily_totals WHERE merchant_id = $1 AND business_date = $2")
            .bind(merchant)
            .bind(date)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
    } else {
        sqlx::query(
            "UPDATE daily_totals SET total_credits = $3, total_debits = $4, entry_count = $5
             WHERE merchant_id = $1 AND business_date = $2",
        )
        .bind(merchant)
        .bind(date)
        .bind(totals.total_credits.minor())
        .bind(totals.total_debits.minor())
        .bind(count_to_db(totals.entry_count))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    }
    if let Some(newest) = day.entries.iter().map(|e| e.recorded_at).max() {
        sqlx::query(
            "INSERT INTO merchants (merchant_id, currency, as_of) VALUES ($1, $2, $3)
             ON CONFLICT (merchant_id) DO UPDATE SET as_of = GREATEST(merchants.as_of, excluded.as_of)",
        )
        .bind(merchant)
        .bind(day.currency.code())
        .bind(micros(newest))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(RebuildOutcome::Rebuilt)
}
