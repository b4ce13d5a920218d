//! The Postgres consolidation store (RDS in the reference architecture), chosen by a
//! `postgres://` URL. Same contract as [`crate::sqlite`], checked by the same test suite
//! (`tests/store_contract.rs`), but built for many consumers applying batches at once.
//!
//! - **Its own schema.** The pool's `search_path` is the `consolidation` schema (see
//!   [`cashflow_db::open_postgres`]) with its own `_sqlx_migrations`; it may share a database
//!   with the ledger and still never sees the ledger's tables.
//! - **Exactly once in effect.** A batch is one transaction: its event ids go into
//!   `processed_events` with `ON CONFLICT DO NOTHING RETURNING event_id`, and only the ids that
//!   come back (new ones) change the totals. A concurrent consumer inserting the same id waits
//!   for our commit and then finds it, so a redelivery racing the first delivery is a duplicate.
//! - **No lost updates.** Totals only change by atomic increments (`INSERT … ON CONFLICT DO
//!   UPDATE SET total_credits = daily_totals.total_credits + excluded.total_credits`), never by
//!   reading a total and writing it back, so concurrent consumers on one hot merchant-day all
//!   count.
//! - **No deadlocks.** Every transaction takes its row locks in one global order: event ids
//!   (sorted, one statement), then day rows (a batch's postings are first summed per
//!   (merchant, date) in Rust, then upserted in sorted key order, one row each), then merchant
//!   rows (sorted, one statement). Two consumers with overlapping batches may wait for each
//!   other, never in a cycle.
//! - **Overflow.** Postgres raises an error when a `bigint` overflows, which would fail the
//!   whole batch. Instead the increment carries its own guard (`… WHERE total <=
//!   i64::MAX - delta`): when the guard fails nothing is written, the row is still locked by
//!   us, and only then are the day's postings applied one by one with checked arithmetic; those
//!   that would overflow are `rejected` (and their ids forgotten, so a redelivery is retried and
//!   eventually dead-lettered) while the rest of the batch applies. This is a check on the
//!   locked row rather than a savepoint per event: the common path costs two statements per
//!   day touched, not two per event.

mod repair;

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use cashflow_domain::{ApplyOutcome, Balance, BusinessDate, Currency, DayTotals, EventId, MerchantId};
use cashflow_events::{EntryRecorded, Event, EventBody};

use crate::store::{
    add_adjustment, corrupt, first_copies, touch, Adjustments, ApplySummary, ConsolidationStore, DayMark, MarkAction,
    MerchantBooks, StoreError,
};

/// The consolidation's schema, embedded in the binary.
pub const MIGRATIONS: &[cashflow_db::MigrationSource] = &[
    cashflow_db::MigrationSource {
        version: 1,
        description: "consolidation",
        sql: include_str!("../migrations/postgres/0001_consolidation.sql"),
    },
    cashflow_db::MigrationSource {
        version: 2,
        description: "day marks",
        sql: include_str!("../migrations/postgres/0002_day_marks.sql"),
    },
    cashflow_db::MigrationSource {
        version: 3,
        description: "day adjustments",
        sql: include_str!("../migrations/postgres/0003_day_adjustments.sql"),
    },
    cashflow_db::MigrationSource {
        version: 4,
        description: "processed events window",
        sql: include_str!("../migrations/postgres/0004_processed_events_window.sql"),
    },
];

/// The schema every connection of the store uses.
pub const SCHEMA: &str = "consolidation";

/// Connections kept by [`PostgresConsolidationStore::open`]: consumers and report readers.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// The Postgres implementation of [`ConsolidationStore`].
#[derive(Clone)]
pub struct PostgresConsolidationStore {
    /// Consumers and report readers share it; Postgres has no single-writer limit.
    pool: PgPool,
}

impl std::fmt::Debug for PostgresConsolidationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConsolidationStore").finish_non_exhaustive()
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The instant as stored: whole microseconds, rounded down like the SQLite store's.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn count_to_db(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Locks a day's row, created empty if the day has none yet (so a concurrent first posting of
/// the day waits instead of racing), and reads its totals.
async fn lock_day(tx: &mut PgConnection, merchant: MerchantId, date: BusinessDate) -> Result<DayTotals, StoreError> {
    sqlx::query(
        "INSERT INTO daily_totals (merchant_id, business_date, total_credits, total_debits, entry_count)
         VALUES ($1, $2, 0, 0, 0) ON CONFLICT DO NOTHING",
    )
    .bind(merchant.as_uuid())
    .bind(date.naive())
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    let row = sqlx::query(
        "SELECT total_credits, total_debits, entry_count FROM daily_totals
         WHERE merchant_id = $1 AND business_date = $2 FOR UPDATE",
    )
    .bind(merchant.as_uuid())
    .bind(date.naive())
    .fetch_one(&mut *tx)
    .await
    .map_err(unavailable)?;
    totals_from_row(&row)
}

/// Writes a locked day's totals back.
async fn set_day(
    tx: &mut PgConnection,
    merchant: MerchantId,
    date: BusinessDate,
    totals: DayTotals,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE daily_totals SET total_credits = $3, total_debits = $4, entry_count = $5
         WHERE merchant_id = $1 AND business_date = $2",
    )
    .bind(merchant.as_uuid())
    .bind(date.naive())
    .bind(totals.total_credits.minor())
    .bind(totals.total_debits.minor())
    .bind(count_to_db(totals.entry_count))
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// Adds a batch's adjustments of one (day, closed day) by an atomic increment.
async fn add_adjustment_row(
    tx: &mut PgConnection,
    merchant: MerchantId,
    date: BusinessDate,
    meant_for: BusinessDate,
    totals: &DayTotals,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO day_adjustments AS t (merchant_id, business_date, adjusts_date, total_credits, total_debits,
                                            entry_count)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (merchant_id, business_date, adjusts_date) DO UPDATE SET
           total_credits = t.total_credits + excluded.total_credits,
           total_debits = t.total_debits + excluded.total_debits,
           entry_count = t.entry_count + excluded.entry_count",
    )
    .bind(merchant.as_uuid())
    .bind(date.naive())
    .bind(meant_for.naive())
    .bind(totals.total_credits.minor())
    .bind(totals.total_debits.minor())
    .bind(count_to_db(totals.entry_count))
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// Records a close or reopen; a mark already recorded (same merchant and seq) is left as is.
async fn insert_mark(tx: &mut PgConnection, merchant: MerchantId, mark: &DayMark) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO day_marks (merchant_id, seq, action, business_date, from_date, closed_through, at, counted_cash,
                                difference)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (merchant_id, seq) DO NOTHING",
    )
    .bind(merchant.as_uuid())
    .bind(mark.seq)
    .bind(mark.action.as_str())
    .bind(mark.date.naive())
    .bind(mark.from.map(|d| d.naive()))
    .bind(mark.closed_through.map(|d| d.naive()))
    .bind(micros(mark.at))
    .bind(mark.counted_cash)
    .bind(mark.difference)
    .execute(&mut *tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

fn totals_from_row(row: &sqlx::postgres::PgRow) -> Result<DayTotals, StoreError> {
    Ok(DayTotals {
        total_credits: Balance::from_minor(row.try_get("total_credits").map_err(corrupt("total_credits"))?),
        total_debits: Balance::from_minor(row.try_get("total_debits").map_err(corrupt("total_debits"))?),
        entry_count: u64::try_from(row.try_get::<i64, _>("entry_count").map_err(corrupt("entry_count"))?)
            .map_err(corrupt("entry_count"))?,
    })
}

impl PostgresConsolidationStore {
    /// Opens the consolidation on `url` (`postgres://…`) with [`DEFAULT_MAX_CONNECTIONS`],
    /// creating and migrating the `consolidation` schema.
    pub async fn open(url: &str) -> Result<Self, cashflow_db::DbError> {
        Self::open_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Like [`open`](Self::open), with a pool of at most `max_connections`.
    pub async fn open_with(url: &str, max_connections: u32) -> Result<Self, cashflow_db::DbError> {
        let pool = cashflow_db::open_postgres(url, max_connections, SCHEMA).await?;
        cashflow_db::migrate_postgres(&pool, MIGRATIONS).await?;
        Ok(Self { pool })
    }

    /// Records the event ids, in id order (the lock order); returns those not seen before.
    async fn claim(tx: &mut PgConnection, ids: &[Uuid], now: DateTime<Utc>) -> Result<HashSet<Uuid>, StoreError> {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        let new: Vec<Uuid> = sqlx::query_scalar(
            "INSERT INTO processed_events (event_id, applied_at)
             SELECT id, $2 FROM UNNEST($1::uuid[]) AS t(id) ORDER BY id
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id",
        )
        .bind(sorted)
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        Ok(new.into_iter().collect())
    }

    /// Adds one day's new postings to its totals; returns, for each posting, whether it was
    /// applied (`false`: it would overflow the day's totals).
    async fn add_to_day(
        tx: &mut PgConnection,
        merchant: MerchantId,
        date: BusinessDate,
        postings: &[&EntryRecorded],
    ) -> Result<Vec<bool>, StoreError> {
        let mut delta = DayTotals::default();
        let delta_fits = postings.iter().all(|p| delta.post(p.kind, p.amount).is_ok());
        if delta_fits {
            // The common path: one atomic increment. The guard keeps the sums within bigint;
            // when it fails nothing changes, but the row stays locked by us.
            let added = sqlx::query(
                "INSERT INTO daily_totals AS t (merchant_id, business_date, total_credits, total_debits, entry_count)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (merchant_id, business_date) DO UPDATE SET
                   total_credits = t.total_credits + excluded.total_credits,
                   total_debits = t.total_debits + excluded.total_debits,
                   entry_count = t.entry_count + excluded.entry_count
                 WHERE t.total_credits <= 9223372036854775807 - excluded.total_credits
                   AND t.total_debits <= 9223372036854775807 - excluded.total_debits
                   AND t.entry_count <= 9223372036854775807 - excluded.entry_count
                 RETURNING 1",
            )
            .bind(merchant.as_uuid())
            .bind(date.naive())
            .bind(delta.total_credits.minor())
            .bind(delta.total_debits.minor())
            .bind(count_to_db(delta.entry_count))
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            if added.is_some() {
                return Ok(vec![true; postings.len()]);
            }
        }

        // The rare path: the day is close to overflowing. Hold its row, post one by one with
        // checked arithmetic, and write the result back (safe: nobody else can change the row
        // until we commit).
        let mut totals = lock_day(tx, merchant, date).await?;
        let applied: Vec<bool> = postings.iter().map(|p| totals.post(p.kind, p.amount).is_ok()).collect();
        set_day(tx, merchant, date, totals).await?;
        Ok(applied)
    }

    /// Creates or refreshes merchants, in id order (the lock order); `as_of` never goes back.
    async fn touch_merchants(
        tx: &mut PgConnection,
        merchants: &BTreeMap<MerchantId, (Currency, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        if merchants.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = merchants.keys().map(|m| *m.as_uuid()).collect();
        let currencies: Vec<&str> = merchants.values().map(|(c, _)| c.code()).collect();
        let as_of: Vec<DateTime<Utc>> = merchants.values().map(|(_, t)| *t).collect();
        sqlx::query(
            "INSERT INTO merchants (merchant_id, currency, as_of)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS t(merchant_id, currency, as_of)
             ORDER BY merchant_id
             ON CONFLICT (merchant_id) DO UPDATE SET as_of = GREATEST(merchants.as_of, excluded.as_of)",
        )
        .bind(ids)
        .bind(currencies)
        .bind(as_of)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl ConsolidationStore for PostgresConsolidationStore {
    async fn apply(&self, events: &[Event]) -> Result<ApplySummary, StoreError> {
        let distinct = first_copies(events);
        if distinct.is_empty() {
            return Ok(ApplySummary::default());
        }

        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let ids: Vec<Uuid> = distinct.iter().map(|e| *e.event_id.as_uuid()).collect();
        let new = Self::claim(&mut tx, &ids, micros(Utc::now())).await?;

        let mut outcomes: HashMap<EventId, ApplyOutcome> = HashMap::new();
        let mut merchants = BTreeMap::new();
        // Each day's new postings, keyed (and so visited) in lock order.
        let mut days: BTreeMap<(MerchantId, BusinessDate), Vec<(EventId, &EntryRecorded)>> = BTreeMap::new();
        let mut marks: BTreeMap<(MerchantId, i64), DayMark> = BTreeMap::new();
        let mut changed_from: BTreeMap<MerchantId, BusinessDate> = BTreeMap::new();
        for event in &distinct {
            if !new.contains(event.event_id.as_uuid()) {
                outcomes.insert(event.event_id, ApplyOutcome::Duplicate);
                continue;
            }
            match &event.body {
                EventBody::MerchantRegistered(m) => {
                    touch(&mut merchants, m.merchant_id, m.currency, micros(event.occurred_at));
                    outcomes.insert(event.event_id, ApplyOutcome::Applied);
                }
                EventBody::EntryRecorded(e) => {
                    days.entry((e.merchant_id, e.business_date)).or_default().push((event.event_id, e));
                }
                EventBody::DayClosed(_) | EventBody::DayReopened(_) => {
                    if let Some((merchant, mark)) = DayMark::of(event) {
                        marks.insert((merchant, mark.seq), mark);
                    }
                    if let Some((merchant, from)) = event.changes_reports_from() {
                        changed_from.entry(merchant).and_modify(|d| *d = (*d).min(from)).or_insert(from);
                    }
                    outcomes.insert(event.event_id, ApplyOutcome::Applied);
                }
                EventBody::Unknown => {
                    // A newer producer's kind: nothing to do here, and not poison.
                    tracing::warn!(event_id = %event.event_id, "event of an unknown kind skipped");
                    outcomes.insert(event.event_id, ApplyOutcome::Duplicate);
                }
            }
        }

        let mut rejected: Vec<Uuid> = Vec::new();
        let mut adjustments: BTreeMap<(MerchantId, BusinessDate, BusinessDate), DayTotals> = BTreeMap::new();
        for ((merchant, date), postings) in &mut days {
            postings.sort_unstable_by_key(|(id, _)| *id);
            let entries: Vec<&EntryRecorded> = postings.iter().map(|(_, e)| *e).collect();
            let applied = Self::add_to_day(&mut tx, *merchant, *date, &entries).await?;
            for ((event_id, e), applied) in postings.iter().zip(applied) {
                if applied {
                    outcomes.insert(*event_id, ApplyOutcome::Applied);
                    add_adjustment(&mut adjustments, e);
                    touch(&mut merchants, e.merchant_id, e.currency, micros(e.recorded_at));
                    changed_from.entry(*merchant).and_modify(|d| *d = (*d).min(*date)).or_insert(*date);
                } else {
                    tracing::error!(%event_id, "posting would overflow the day's totals; rejected");
                    outcomes.insert(*event_id, ApplyOutcome::Rejected);
                    rejected.push(*event_id.as_uuid());
                }
            }
        }
        if !rejected.is_empty() {
            // Not applied, so not processed: a redelivery must be tried again (and end in the
            // dead-letter queue), not be taken for a duplicate.
            sqlx::query("DELETE FROM processed_events WHERE event_id = ANY($1)")
                .bind(rejected)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        // Atomic increments in key order, after the day rows: the lock order of the module docs.
        for ((merchant, date, meant_for), totals) in &adjustments {
            add_adjustment_row(&mut tx, *merchant, *date, *meant_for, totals).await?;
        }
        // In (merchant, seq) order, after the day rows: the lock order of the module docs.
        for ((merchant, _), mark) in &marks {
            insert_mark(&mut tx, *merchant, mark).await?;
        }
        Self::touch_merchants(&mut tx, &merchants).await?;
        tx.commit().await.map_err(unavailable)?;

        Ok(ApplySummary::in_delivery_order(events, &outcomes, changed_from))
    }

    async fn merchant(&self, id: MerchantId) -> Result<Option<MerchantBooks>, StoreError> {
        let row = sqlx::query("SELECT currency, as_of FROM merchants WHERE merchant_id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|r| {
            let currency = Currency::parse(r.try_get("currency").map_err(corrupt("currency"))?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let as_of = r.try_get("as_of").map_err(corrupt("as_of"))?;
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
        // SUM over bigint is an exact numeric in Postgres; it comes back as text and must fit
        // an i64 to be reported.
        let opening: String = sqlx::query_scalar(
            "SELECT COALESCE(SUM(total_credits - total_debits), 0)::text FROM daily_totals
             WHERE merchant_id = $1 AND business_date < $2",
        )
        .bind(merchant.as_uuid())
        .bind(from.naive())
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        let opening = Balance::from_minor(opening.parse().map_err(corrupt("opening balance"))?);
        // A day whose every posting was rejected has a row of zeros: not a day with entries.
        let rows = sqlx::query(
            "SELECT business_date, total_credits, total_debits, entry_count FROM daily_totals
             WHERE merchant_id = $1 AND business_date >= $2 AND business_date <= $3 AND entry_count > 0",
        )
        .bind(merchant.as_uuid())
        .bind(from.naive())
        .bind(to.naive())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut days = BTreeMap::new();
        for r in rows {
            let date: NaiveDate = r.try_get("business_date").map_err(corrupt("business_date"))?;
            let date = BusinessDate::from_naive(date).ok_or_else(|| StoreError::Corrupt(format!("date {date}")))?;
            days.insert(date, totals_from_row(&r)?);
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
            "(SELECT seq, action, business_date, from_date, closed_through, at, counted_cash, difference
              FROM day_marks WHERE merchant_id = $1 ORDER BY seq DESC LIMIT 1)
             UNION
             SELECT seq, action, business_date, from_date, closed_through, at, counted_cash, difference
             FROM day_marks
             WHERE merchant_id = $1 AND action = 'close' AND business_date >= $2
               AND (from_date IS NULL OR from_date <= $3)",
        )
        .bind(merchant.as_uuid())
        .bind(from.naive())
        .bind(to.naive())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let date = |r: &sqlx::postgres::PgRow, name: &'static str| -> Result<Option<BusinessDate>, StoreError> {
            r.try_get::<Option<NaiveDate>, _>(name)
                .map_err(corrupt(name))?
                .map(|d| BusinessDate::from_naive(d).ok_or_else(|| StoreError::Corrupt(format!("{name}: {d}"))))
                .transpose()
        };
        rows.iter()
            .map(|r| {
                Ok(DayMark {
                    seq: r.try_get("seq").map_err(corrupt("seq"))?,
                    action: MarkAction::parse(r.try_get("action").map_err(corrupt("action"))?)?,
                    date: date(r, "business_date")?.ok_or_else(|| StoreError::Corrupt("business_date: null".into()))?,
                    from: date(r, "from_date")?,
                    closed_through: date(r, "closed_through")?,
                    at: r.try_get("at").map_err(corrupt("at"))?,
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
             WHERE merchant_id = $1 AND business_date >= $2 AND business_date <= $3",
        )
        .bind(merchant.as_uuid())
        .bind(from.naive())
        .bind(to.naive())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let date = |r: &sqlx::postgres::PgRow, name: &'static str| -> Result<BusinessDate, StoreError> {
            let d: NaiveDate = r.try_get(name).map_err(corrupt(name))?;
            BusinessDate::from_naive(d).ok_or_else(|| StoreError::Corrupt(format!("{name}: {d}")))
        };
        rows.iter().map(|r| Ok(((date(r, "business_date")?, date(r, "adjusts_date")?), totals_from_row(r)?))).collect()
    }

    async fn merchants(&self) -> Result<Vec<MerchantId>, StoreError> {
        repair::merchants(self).await
    }

    async fn rebuild_day(&self, day: &crate::store::DayRebuild) -> Result<crate::store::RebuildOutcome, StoreError> {
        repair::rebuild_day(self, day).await
    }

    async fn prune_processed(&self, applied_before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        // SKIP LOCKED: two pruners (two consolidators) take different rows instead of waiting on
        // each other; a marker a consumer is inserting is not old enough to be among them.
        let removed = sqlx::query(
            "DELETE FROM processed_events WHERE event_id IN
               (SELECT event_id FROM processed_events WHERE applied_at < $1
                ORDER BY applied_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(applied_before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(removed.rows_affected())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(unavailable)?;
        Ok(())
    }

    fn pool_usage(&self) -> Vec<(&'static str, u32, u32)> {
        vec![("consolidation", self.pool.size(), u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX))]
    }
}
