//! Reconciliation's writes on Postgres: a drifting day set to the ledger's entries.
//!
//! Locks are taken in the consumer's order (the day's event ids, sorted, then the day's row),
//! so a repair racing a consumer on the same day waits for it or makes it wait, never deadlocks.

use uuid::Uuid;

use cashflow_domain::MerchantId;

use super::{micros, unavailable, PostgresConsolidationStore};
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
    let current = super::lock_day(&mut tx, day.merchant, day.date).await?;
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
        super::set_day(&mut tx, day.merchant, day.date, totals).await?;
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
