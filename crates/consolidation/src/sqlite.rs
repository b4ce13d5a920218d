//! The SQLite consolidation store of the embedded default. One writer connection (SQLite has
//! one writer anyway), a reader pool for reports.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::DateTime;
use sqlx::sqlite::SqlitePool;
use sqlx::{Row, SqliteConnection};

use cashflow_domain::{Balance, BusinessDate, Currency, DayTotals, MerchantId};
use cashflow_events::{Event, EventBody};

use crate::store::{ApplySummary, ConsolidationStore, MerchantBooks, StoreError};

const MIGRATIONS: &[cashflow_db::MigrationSource] = &[cashflow_db::MigrationSource {
    version: 1,
    description: "consolidation",
    sql: include_str!("../migrations/sqlite/0001_consolidation.sql"),
}];

/// The SQLite implementation of [`ConsolidationStore`].
#[derive(Clone)]
pub struct SqliteConsolidationStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqliteConsolidationStore {
    /// Opens and migrates the consolidation database at `url` (`sqlite://…`).
    pub async fn open(url: &str) -> Result<Self, cashflow_db::DbError> {
        let writer = cashflow_db::open_sqlite(url, 1).await?;
        cashflow_db::migrate_sqlite(&writer, MIGRATIONS).await?;
        let reader = cashflow_db::open_sqlite(url, 4).await?;
        Ok(Self { writer, reader })
    }

    /// Records the event id; false when it was recorded before (a duplicate delivery).
    async fn first_time(tx: &mut SqliteConnection, event: &Event, now: i64) -> Result<bool, StoreError> {
        let inserted =
            sqlx::query("INSERT INTO processed_events (event_id, applied_at) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
                .bind(event.event_id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected();
        Ok(inserted == 1)
    }

    async fn touch_merchant(
        tx: &mut SqliteConnection,
        merchant: MerchantId,
        currency: Currency,
        as_of: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO merchants (merchant_id, currency, as_of) VALUES (?1, ?2, ?3)
             ON CONFLICT (merchant_id) DO UPDATE SET as_of = MAX(as_of, excluded.as_of)",
        )
        .bind(merchant.to_string())
        .bind(currency.code())
        .bind(as_of)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl ConsolidationStore for SqliteConsolidationStore {
    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn apply(&self, events: &[Event]) -> Result<ApplySummary, StoreError> {
        let mut summary = ApplySummary::default();
        let now = chrono::Utc::now().timestamp_micros();
        let mut tx = self.writer.begin().await.map_err(unavailable)?;
        for event in events {
            match &event.body {
                EventBody::MerchantRegistered(m) => {
                    if Self::first_time(&mut tx, event, now).await? {
                        Self::touch_merchant(&mut tx, m.merchant_id, m.currency, event.occurred_at.timestamp_micros())
                            .await?;
                        summary.applied.push(event.event_id);
                    } else {
                        summary.duplicates.push(event.event_id);
                    }
                }
                EventBody::EntryRecorded(e) => {
                    let merchant = e.merchant_id.to_string();
                    let date = e.business_date.to_string();
                    // Totals are added in Rust with checked arithmetic: SQLite would silently
                    // turn an overflowing integer sum into a float.
                    let row = sqlx::query(
                        "SELECT total_credits, total_debits, entry_count FROM daily_totals
                         WHERE merchant_id = ?1 AND business_date = ?2",
                    )
                    .bind(&merchant)
                    .bind(&date)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    let mut totals = match row {
                        Some(r) => DayTotals {
                            total_credits: Balance::from_minor(r.get("total_credits")),
                            total_debits: Balance::from_minor(r.get("total_debits")),
                            entry_count: u64::try_from(r.get::<i64, _>("entry_count")).unwrap_or(0),
                        },
                        None => DayTotals::default(),
                    };
                    if totals.post(e.kind, e.amount).is_err() {
                        tracing::error!(event_id = %event.event_id, "posting would overflow the day's totals; rejected");
                        summary.rejected.push(event.event_id);
                        continue;
                    }
                    if !Self::first_time(&mut tx, event, now).await? {
                        summary.duplicates.push(event.event_id);
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO daily_totals (merchant_id, business_date, total_credits, total_debits, entry_count)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (merchant_id, business_date) DO UPDATE SET
                           total_credits = excluded.total_credits,
                           total_debits = excluded.total_debits,
                           entry_count = excluded.entry_count",
                    )
                    .bind(&merchant)
                    .bind(&date)
                    .bind(totals.total_credits.minor())
                    .bind(totals.total_debits.minor())
                    .bind(i64::try_from(totals.entry_count).unwrap_or(i64::MAX))
                    .execute(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                    Self::touch_merchant(&mut tx, e.merchant_id, e.currency, e.recorded_at.timestamp_micros()).await?;
                    summary.applied.push(event.event_id);
                    summary
                        .changed_from
                        .entry(e.merchant_id)
                        .and_modify(|d| *d = (*d).min(e.business_date))
                        .or_insert(e.business_date);
                }
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(summary)
    }

    async fn merchant(&self, id: MerchantId) -> Result<Option<MerchantBooks>, StoreError> {
        let row = sqlx::query("SELECT currency, as_of FROM merchants WHERE merchant_id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.map(|r| {
            let currency = Currency::parse(r.get("currency")).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let as_of =
                DateTime::from_timestamp_micros(r.get("as_of")).ok_or_else(|| StoreError::Corrupt("as_of".into()))?;
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
        let opening = Balance::from_minor(opening.get("credits"))
            .checked_sub(Balance::from_minor(opening.get("debits")))
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
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
            let date = BusinessDate::parse(r.get("business_date")).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            days.insert(
                date,
                DayTotals {
                    total_credits: Balance::from_minor(r.get("total_credits")),
                    total_debits: Balance::from_minor(r.get("total_debits")),
                    entry_count: u64::try_from(r.get::<i64, _>("entry_count")).unwrap_or(0),
                },
            );
        }
        Ok((opening, days))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(unavailable)?;
        Ok(())
    }

    fn pool_usage(&self) -> Vec<(&'static str, u32, u32)> {
        let idle = |p: &SqlitePool| u32::try_from(p.num_idle()).unwrap_or(u32::MAX);
        vec![
            (concat!("consolidation", "_writer"), self.writer.size(), idle(&self.writer)),
            (concat!("consolidation", "_reader"), self.reader.size(), idle(&self.reader)),
        ]
    }
}
