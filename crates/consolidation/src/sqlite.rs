//! The SQLite consolidation store of the embedded default: one write connection on its own
//! thread ([`SqliteThread`]: SQLite has one writer anyway, and a batch of postings is then one
//! hand-over between threads), a reader pool for reports.

mod repair;

use std::collections::{btree_map, BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqlitePool;
use sqlx::Row;

use cashflow_db::rusqlite::{self, params, Connection, OptionalExtension, TransactionBehavior};
use cashflow_db::SqliteThread;
use cashflow_domain::{ApplyOutcome, Balance, BusinessDate, Currency, DayTotals, EventId, MerchantId};
use cashflow_events::{Event, EventBody};

use crate::store::{
    add_adjustment, corrupt, first_copies, touch, Adjustments, ApplySummary, ConsolidationStore, DayMark, MarkAction,
    MerchantBooks, StoreError,
};

/// Sets a day's totals (the consumer's batches and reconciliation's rebuilds).
const UPSERT_DAY: &str =
    "INSERT INTO daily_totals (merchant_id, business_date, total_credits, total_debits, entry_count)
     VALUES (?1, ?2, ?3, ?4, ?5)
     ON CONFLICT (merchant_id, business_date) DO UPDATE SET
       total_credits = excluded.total_credits,
       total_debits = excluded.total_debits,
       entry_count = excluded.entry_count";

const MIGRATIONS: &[cashflow_db::MigrationSource] = &[
    cashflow_db::MigrationSource {
        version: 1,
        description: "consolidation",
        sql: include_str!("../migrations/sqlite/0001_consolidation.sql"),
    },
    cashflow_db::MigrationSource {
        version: 2,
        description: "day marks",
        sql: include_str!("../migrations/sqlite/0002_day_marks.sql"),
    },
    cashflow_db::MigrationSource {
        version: 3,
        description: "day adjustments",
        sql: include_str!("../migrations/sqlite/0003_day_adjustments.sql"),
    },
    cashflow_db::MigrationSource {
        version: 4,
        description: "processed events window",
        sql: include_str!("../migrations/sqlite/0004_processed_events_window.sql"),
    },
];

/// Forgets the oldest deduplication markers applied before `?1`, at most `?2` of them, through
/// `processed_events_by_time`.
const PRUNE_PROCESSED: &str = "DELETE FROM processed_events WHERE event_id IN
     (SELECT event_id FROM processed_events WHERE applied_at < ?1 ORDER BY applied_at LIMIT ?2)";

/// Adds a batch's adjustments of one (day, closed day).
const ADD_ADJUSTMENT: &str = "
INSERT INTO day_adjustments (merchant_id, business_date, adjusts_date, total_credits, total_debits, entry_count)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (merchant_id, business_date, adjusts_date) DO UPDATE SET
  total_credits = total_credits + excluded.total_credits,
  total_debits = total_debits + excluded.total_debits,
  entry_count = entry_count + excluded.entry_count";

/// Records a close or reopen; a mark already recorded (same merchant and seq) is left as is.
const INSERT_MARK: &str = "
INSERT INTO day_marks (merchant_id, seq, action, business_date, from_date, closed_through, at, counted_cash, difference)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
ON CONFLICT (merchant_id, seq) DO NOTHING";

/// The SQLite implementation of [`ConsolidationStore`].
#[derive(Clone)]
pub struct SqliteConsolidationStore {
    /// The one write connection (SQLite has one writer anyway), driven on its own thread: a
    /// batch of postings is one job.
    writer: SqliteThread,
    /// Concurrent readers, for reports.
    reader: SqlitePool,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteConsolidationStore {
    /// Opens and migrates the consolidation database at `url` (`sqlite://…`).
    pub async fn open(url: &str) -> Result<Self, cashflow_db::DbError> {
        let migrator = cashflow_db::open_sqlite(url, 1).await?;
        cashflow_db::migrate_sqlite(&migrator, MIGRATIONS).await?;
        migrator.close().await;
        let reader = cashflow_db::open_sqlite(url, 4).await?;
        let writer = SqliteThread::spawn("consolidation-writer", cashflow_db::open_sqlite_sync(url)?)?;
        Ok(Self { writer, reader })
    }
}

/// What applying a batch decided: each distinct event's outcome, and per merchant the earliest
/// day whose totals changed.
type Applied = (HashMap<EventId, ApplyOutcome>, BTreeMap<MerchantId, BusinessDate>);

/// Applies a batch in one transaction on the writer's connection.
///
/// A batch costs one indexed lookup per event, one read and one write per touched day (its
/// postings summed in Rust, with checked arithmetic: SQLite would silently turn an overflowing
/// integer sum into a float), one insert per applied id and one upsert per merchant, every one
/// a cached prepared statement.
fn apply_batch(conn: &mut Connection, events: &[Event]) -> Result<Applied, rusqlite::Error> {
    // IMMEDIATE: the transaction reads before it writes, and must not have to upgrade.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes: HashMap<EventId, ApplyOutcome> = HashMap::new();
    let mut applied_ids: Vec<EventId> = Vec::new();
    let mut merchants: BTreeMap<MerchantId, (Currency, i64)> = BTreeMap::new();
    // Each touched day: its totals as stored, then with this batch's postings.
    let mut days: BTreeMap<(MerchantId, BusinessDate), (String, String, DayTotals, bool)> = BTreeMap::new();
    let mut changed_from: BTreeMap<MerchantId, BusinessDate> = BTreeMap::new();
    let mut marks: Vec<(MerchantId, DayMark)> = Vec::new();
    let mut adjustments: BTreeMap<(MerchantId, BusinessDate, BusinessDate), DayTotals> = BTreeMap::new();
    {
        let mut processed = tx.prepare_cached("SELECT 1 FROM processed_events WHERE event_id = ?1")?;
        let mut stored_day = tx.prepare_cached(
            "SELECT total_credits, total_debits, entry_count FROM daily_totals
             WHERE merchant_id = ?1 AND business_date = ?2",
        )?;
        for event in first_copies(events) {
            if processed.exists([event.event_id.as_uuid().as_bytes()])? {
                outcomes.insert(event.event_id, ApplyOutcome::Duplicate);
                continue;
            }
            match &event.body {
                EventBody::MerchantRegistered(m) => {
                    touch(&mut merchants, m.merchant_id, m.currency, event.occurred_at.timestamp_micros());
                }
                EventBody::DayClosed(_) | EventBody::DayReopened(_) => {
                    if let Some(mark) = DayMark::of(event) {
                        marks.push(mark);
                    }
                    if let Some((merchant, from)) = event.changes_reports_from() {
                        changed_from.entry(merchant).and_modify(|d| *d = (*d).min(from)).or_insert(from);
                    }
                }
                EventBody::Unknown => {
                    // A newer producer's kind: nothing to do here, and not poison.
                    tracing::warn!(event_id = %event.event_id, "event of an unknown kind skipped");
                    outcomes.insert(event.event_id, ApplyOutcome::Duplicate);
                    continue;
                }
                EventBody::EntryRecorded(e) => {
                    let key = (e.merchant_id, e.business_date);
                    let (_, _, totals, changed) = match days.entry(key) {
                        btree_map::Entry::Occupied(day) => day.into_mut(),
                        btree_map::Entry::Vacant(day) => {
                            let (merchant, date) = (e.merchant_id.to_string(), e.business_date.to_string());
                            let stored = stored_day
                                .query_row(params![merchant, date], |r| {
                                    Ok(DayTotals {
                                        total_credits: Balance::from_minor(r.get(0)?),
                                        total_debits: Balance::from_minor(r.get(1)?),
                                        // A negative count is an error (rusqlite checks the range), not zero.
                                        entry_count: r.get::<_, u64>(2)?,
                                    })
                                })
                                .optional()?
                                .unwrap_or_default();
                            day.insert((merchant, date, stored, false))
                        }
                    };
                    let mut posted = *totals;
                    if posted.post(e.kind, e.amount).is_err() {
                        // Not applied, so not processed: a redelivery is tried again (and ends
                        // in the dead-letter queue) instead of passing for a duplicate.
                        tracing::error!(event_id = %event.event_id, "posting would overflow the day's totals; rejected");
                        outcomes.insert(event.event_id, ApplyOutcome::Rejected);
                        continue;
                    }
                    *totals = posted;
                    *changed = true;
                    add_adjustment(&mut adjustments, e);
                    touch(&mut merchants, e.merchant_id, e.currency, e.recorded_at.timestamp_micros());
                    changed_from
                        .entry(e.merchant_id)
                        .and_modify(|d| *d = (*d).min(e.business_date))
                        .or_insert(e.business_date);
                }
            }
            outcomes.insert(event.event_id, ApplyOutcome::Applied);
            applied_ids.push(event.event_id);
        }
    }
    {
        let now = chrono::Utc::now().timestamp_micros();
        let mut record = tx.prepare_cached("INSERT INTO processed_events (event_id, applied_at) VALUES (?1, ?2)")?;
        for id in &applied_ids {
            record.execute(params![id.as_uuid().as_bytes(), now])?;
        }
        let mut upsert_day = tx.prepare_cached(UPSERT_DAY)?;
        for (merchant, date, totals, changed) in days.values() {
            if *changed {
                upsert_day.execute(params![
                    merchant,
                    date,
                    totals.total_credits.minor(),
                    totals.total_debits.minor(),
                    i64::try_from(totals.entry_count).unwrap_or(i64::MAX),
                ])?;
            }
        }
        let mut add = tx.prepare_cached(ADD_ADJUSTMENT)?;
        for ((merchant, date, meant_for), totals) in &adjustments {
            add.execute(params![
                merchant.to_string(),
                date.to_string(),
                meant_for.to_string(),
                totals.total_credits.minor(),
                totals.total_debits.minor(),
                i64::try_from(totals.entry_count).unwrap_or(i64::MAX),
            ])?;
        }
        let mut insert_mark = tx.prepare_cached(INSERT_MARK)?;
        for (merchant, mark) in &marks {
            insert_mark.execute(params![
                merchant.to_string(),
                mark.seq,
                mark.action.as_str(),
                mark.date.to_string(),
                mark.from.map(|d| d.to_string()),
                mark.closed_through.map(|d| d.to_string()),
                mark.at.timestamp_micros(),
                mark.counted_cash,
                mark.difference,
            ])?;
        }
        let mut touch_merchant = tx.prepare_cached(
            "INSERT INTO merchants (merchant_id, currency, as_of) VALUES (?1, ?2, ?3)
             ON CONFLICT (merchant_id) DO UPDATE SET as_of = MAX(as_of, excluded.as_of)",
        )?;
        for (merchant, (currency, as_of)) in &merchants {
            touch_merchant.execute(params![merchant.to_string(), currency.code(), as_of])?;
        }
    }
    tx.commit()?;
    Ok((outcomes, changed_from))
}

#[async_trait]
impl ConsolidationStore for SqliteConsolidationStore {
    async fn apply(&self, events: &[Event]) -> Result<ApplySummary, StoreError> {
        if events.is_empty() {
            return Ok(ApplySummary::default());
        }
        let batch = events.to_vec();
        let (outcomes, changed_from) =
            self.writer.run(move |conn| apply_batch(conn, &batch)).await.map_err(unavailable)?.map_err(unavailable)?;
        Ok(ApplySummary::in_delivery_order(events, &outcomes, changed_from))
    }

    async fn merchant(&self, id: MerchantId) -> Result<Option<MerchantBooks>, StoreError> {
        let row = sqlx::query("SELECT currency, as_of FROM merchants WHERE merchant_id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.map(|r| {
            let currency = Currency::parse(r.try_get("currency").map_err(corrupt("currency"))?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let as_of = r.try_get("as_of").map_err(corrupt("as_of"))?;
            let as_of = DateTime::from_timestamp_micros(as_of)
                .ok_or_else(|| StoreError::Corrupt(format!("as_of: {as_of} is out of range")))?;
            Ok(MerchantBooks { currency, as_of })
        })
        .transpose()
    }

    async fn days(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<(Balance, BTreeMap<BusinessDate, DayTotals>), StoreError> {
        let merchant = merchant.to_string();
        // SUM fails loudly on integer overflow (unlike `+`), which is what we want.
        let opening = sqlx::query(
            "SELECT COALESCE(SUM(total_credits), 0) AS credits, COALESCE(SUM(total_debits), 0) AS debits
             FROM daily_totals WHERE merchant_id = ?1 AND business_date < ?2",
        )
        .bind(&merchant)
        .bind(from.to_string())
        .fetch_one(&self.reader)
        .await
        .map_err(unavailable)?;
        let opening = Balance::from_minor(opening.try_get("credits").map_err(corrupt("opening credits"))?)
            .checked_sub(Balance::from_minor(opening.try_get("debits").map_err(corrupt("opening debits"))?))
            .map_err(corrupt("opening balance"))?;
        let rows = sqlx::query(
            "SELECT business_date, total_credits, total_debits, entry_count FROM daily_totals
             WHERE merchant_id = ?1 AND business_date >= ?2 AND business_date <= ?3",
        )
        .bind(&merchant)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        let mut days = BTreeMap::new();
        for r in rows {
            let date = BusinessDate::parse(r.try_get("business_date").map_err(corrupt("business_date"))?)
                .map_err(corrupt("business_date"))?;
            days.insert(
                date,
                DayTotals {
                    total_credits: Balance::from_minor(r.try_get("total_credits").map_err(corrupt("total_credits"))?),
                    total_debits: Balance::from_minor(r.try_get("total_debits").map_err(corrupt("total_debits"))?),
                    entry_count: u64::try_from(r.try_get::<i64, _>("entry_count").map_err(corrupt("entry_count"))?)
                        .map_err(corrupt("entry_count"))?,
                },
            );
        }
        Ok((opening, days))
    }

    async fn day_marks(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Vec<DayMark>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT seq, action, business_date, from_date, closed_through, at, counted_cash, difference
                            FROM day_marks WHERE merchant_id = ?1 ORDER BY seq DESC LIMIT 1)
             UNION
             SELECT seq, action, business_date, from_date, closed_through, at, counted_cash, difference
             FROM day_marks
             WHERE merchant_id = ?1 AND action = 'close' AND business_date >= ?2
               AND (from_date IS NULL OR from_date <= ?3)",
        )
        .bind(merchant.to_string())
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        let date = |r: &sqlx::sqlite::SqliteRow, name: &'static str| -> Result<Option<BusinessDate>, StoreError> {
            r.try_get::<Option<String>, _>(name)
                .map_err(corrupt(name))?
                .map(|d| BusinessDate::parse(&d).map_err(corrupt(name)))
                .transpose()
        };
        rows.iter()
            .map(|r| {
                let at: i64 = r.try_get("at").map_err(corrupt("at"))?;
                Ok(DayMark {
                    seq: r.try_get("seq").map_err(corrupt("seq"))?,
                    action: MarkAction::parse(r.try_get("action").map_err(corrupt("action"))?)?,
                    date: date(r, "business_date")?.ok_or_else(|| StoreError::Corrupt("business_date: null".into()))?,
                    from: date(r, "from_date")?,
                    closed_through: date(r, "closed_through")?,
                    at: DateTime::from_timestamp_micros(at)
                        .ok_or_else(|| StoreError::Corrupt(format!("at: {at} is out of range")))?,
                    counted_cash: r.try_get("counted_cash").map_err(corrupt("counted_cash"))?,
                    difference: r.try_get("difference").map_err(corrupt("difference"))?,
                })
            })
            .collect()
    }

    async fn adjustments(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Adjustments, StoreError> {
        let rows = sqlx::query(
            "SELECT business_date, adjusts_date, total_credits, total_debits, entry_count FROM day_adjustments
             WHERE merchant_id = ?1 AND business_date >= ?2 AND business_date <= ?3",
        )
        .bind(merchant.to_string())
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        let date = |r: &sqlx::sqlite::SqliteRow, name: &'static str| -> Result<BusinessDate, StoreError> {
            BusinessDate::parse(r.try_get(name).map_err(corrupt(name))?).map_err(corrupt(name))
        };
        rows.iter()
            .map(|r| {
                let totals = DayTotals {
                    total_credits: Balance::from_minor(r.try_get("total_credits").map_err(corrupt("total_credits"))?),
                    total_debits: Balance::from_minor(r.try_get("total_debits").map_err(corrupt("total_debits"))?),
                    entry_count: u64::try_from(r.try_get::<i64, _>("entry_count").map_err(corrupt("entry_count"))?)
                        .map_err(corrupt("entry_count"))?,
                };
                Ok(((date(r, "business_date")?, date(r, "adjusts_date")?), totals))
            })
            .collect()
    }

    async fn merchants(&self) -> Result<Vec<MerchantId>, StoreError> {
        repair::merchants(self).await
    }

    async fn rebuild_day(&self, day: &crate::store::DayRebuild) -> Result<crate::store::RebuildOutcome, StoreError> {
        repair::rebuild_day(self, day).await
    }

    async fn prune_processed(&self, applied_before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let before = applied_before.timestamp_micros();
        // One short job of the writer thread: the consumer's batches queue behind it for as long
        // as one indexed delete of `limit` rows takes.
        let removed = self
            .writer
            .run(move |conn| conn.prepare_cached(PRUNE_PROCESSED)?.execute(params![before, limit]))
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(unavailable)?;
        Ok(())
    }

    fn pool_usage(&self) -> Vec<(&'static str, u32, u32)> {
        let idle = |p: &SqlitePool| u32::try_from(p.num_idle()).unwrap_or(u32::MAX);
        vec![(concat!("consolidation", "_reader"), self.reader.size(), idle(&self.reader))]
    }
}
