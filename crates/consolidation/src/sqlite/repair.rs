//! Reconciliation's writes on SQLite: a drifting day set to the ledger's entries, on the one
//! writer connection, so it is serialized with the consumer's batches.

use sqlx::Row;

use cashflow_db::rusqlite::{self, params, Connection, OptionalExtension, TransactionBehavior};
use cashflow_domain::{Balance, DayTotals, MerchantId};

use super::{unavailable, SqliteConsolidationStore};
use crate::store::{DayRebuild, RebuildOutcome, StoreError};

pub(super) async fn merchants(store: &SqliteConsolidationStore) -> Result<Vec<MerchantId>, StoreError> {
    let rows = sqlx::query("SELECT merchant_id FROM merchants ORDER BY merchant_id")
        .fetch_all(&store.reader)
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| MerchantId::parse(r.get("merchant_id")).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}

pub(super) async fn rebuild_day(
    store: &SqliteConsolidationStore,
    day: &DayRebuild,
) -> Result<RebuildOutcome, StoreError> {
    let totals = day.totals()?;
    let day = day.clone();
    store.writer.run(move |conn| rebuild(conn, &day, totals)).await.map_err(unavailable)?.map_err(unavailable)
}

fn rebuild(conn: &mut Connection, day: &DayRebuild, totals: DayTotals) -> Result<RebuildOutcome, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (merchant, date) = (day.merchant.to_string(), day.date.to_string());
    let current = tx
        .prepare_cached(
            "SELECT total_credits, total_debits, entry_count FROM daily_totals
             WHERE merchant_id = ?1 AND business_date = ?2",
        )?
        .query_row(params![merchant, date], |r| {
            Ok(DayTotals {
                total_credits: Balance::from_minor(r.get(0)?),
                total_debits: Balance::from_minor(r.get(1)?),
                entry_count: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(u64::MAX),
            })
        })
        .optional()?
        .unwrap_or_default();
    if current != day.found {
        return Ok(RebuildOutcome::Moved);
    }
    if totals.entry_count == 0 {
        tx.execute("DELETE FROM daily_totals WHERE merchant_id = ?1 AND business_date = ?2", params![merchant, date])?;
    } else {
        tx.prepare_cached(super::UPSERT_DAY)?.execute(params![
            merchant,
            date,
            totals.total_credits.minor(),
            totals.total_debits.minor(),
            i64::try_from(totals.entry_count).unwrap_or(i64::MAX),
        ])?;
    }
    let now = chrono::Utc::now().timestamp_micros();
    {
        let mut record = tx.prepare_cached(
            "INSERT INTO processed_events (event_id, applied_at) VALUES (?1, ?2) ON CONFLICT (event_id) DO NOTHING",
        )?;
        for entry in &day.entries {
            record.execute(params![entry.event_id.as_uuid().as_bytes(), now])?;
        }
    }
    if let Some(newest) = day.entries.iter().map(|e| e.recorded_at.timestamp_micros()).max() {
        tx.prepare_cached(
            "INSERT INTO merchants (merchant_id, currency, as_of) VALUES (?1, ?2, ?3)
             ON CONFLICT (merchant_id) DO UPDATE SET as_of = MAX(as_of, excluded.as_of)",
        )?
        .execute(params![merchant, day.currency.code(), newest])?;
    }
    tx.commit()?;
    Ok(RebuildOutcome::Rebuilt)
}
