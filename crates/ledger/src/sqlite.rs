//! The SQLite ledger store of the embedded default.
//!
//! SQLite has one writer at a time, so writes go through a pool of exactly one connection:
//! transactions queue fairly in the pool instead of spinning in SQLite's busy handler, and
//! every write transaction starts with a write so it never has to upgrade a read lock. Reads
//! use their own pool and never block the writer (WAL).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;

use cashflow_domain::{
    Amount, BusinessDate, Category, Currency, Description, Entry, EntryId, Merchant, MerchantId, MerchantName,
    MerchantTimeZone,
};
use cashflow_events::Event;

use crate::store::{EntryQuery, Idempotency, LedgerStore, OutboxBacklog, OutboxRecord, Recorded, StoreError};

const MIGRATIONS: &[cashflow_db::MigrationSource] = &[cashflow_db::MigrationSource {
    version: 1,
    description: "ledger",
    sql: include_str!("../migrations/sqlite/0001_ledger.sql"),
}];

/// The SQLite implementation of [`LedgerStore`].
#[derive(Clone)]
pub struct SqliteLedgerStore {
    /// Exactly one connection: SQLite's single writer.
    writer: SqlitePool,
    /// Concurrent readers.
    reader: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn unique_violation_on(e: &sqlx::Error, column: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_unique_violation() && db.message().contains(column),
        _ => false,
    }
}

const ENTRY_COLUMNS: &str = "id, merchant_id, type, amount_minor, currency, description, category, occurred_at, \
                             business_date, recorded_at, reversal_of";

fn micros_to_time(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| StoreError::Corrupt(format!("timestamp {micros}")))
}

fn corrupt<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

fn entry_from_row(row: &SqliteRow) -> Result<Entry, StoreError> {
    let currency = Currency::parse(row.get("currency")).map_err(corrupt("currency"))?;
    let category: Option<String> = row.get("category");
    let reversal_of: Option<String> = row.get("reversal_of");
    Ok(Entry {
        id: EntryId::parse(row.get("id")).map_err(corrupt("id"))?,
        merchant_id: MerchantId::parse(row.get("merchant_id")).map_err(corrupt("merchant_id"))?,
        kind: row.get::<&str, _>("type").parse().map_err(corrupt("type"))?,
        amount: Amount::from_minor(row.get("amount_minor")).map_err(corrupt("amount"))?,
        currency,
        description: Description::parse(row.get("description")).map_err(corrupt("description"))?,
        category: category.as_deref().map(Category::parse).transpose().map_err(corrupt("category"))?,
        occurred_at: micros_to_time(row.get("occurred_at"))?,
        business_date: BusinessDate::parse(row.get("business_date")).map_err(corrupt("business_date"))?,
        recorded_at: micros_to_time(row.get("recorded_at"))?,
        reversal_of: reversal_of.as_deref().map(EntryId::parse).transpose().map_err(corrupt("reversal_of"))?,
    })
}

fn merchant_from_row(row: &SqliteRow) -> Result<Merchant, StoreError> {
    Ok(Merchant {
        id: MerchantId::parse(row.get("id")).map_err(corrupt("id"))?,
        name: MerchantName::parse(row.get("name")).map_err(corrupt("name"))?,
        currency: Currency::parse(row.get("currency")).map_err(corrupt("currency"))?,
        time_zone: MerchantTimeZone::parse(row.get("time_zone")).map_err(corrupt("time_zone"))?,
        created_at: micros_to_time(row.get("created_at"))?,
    })
}

impl SqliteLedgerStore {
    /// Opens and migrates the ledger database at `url` (`sqlite://…`).
    pub async fn open(url: &str) -> Result<Self, cashflow_db::DbError> {
        let writer = cashflow_db::open_sqlite(url, 1).await?;
        cashflow_db::migrate_sqlite(&writer, MIGRATIONS).await?;
        let reader = cashflow_db::open_sqlite(url, 4).await?;
        Ok(Self { writer, reader })
    }

    async fn insert_outbox(tx: &mut sqlx::SqliteConnection, event: &Event) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO outbox (event_id, body, created_at) VALUES (?1, ?2, ?3)")
            .bind(event.event_id.to_string())
            .bind(event.to_json())
            .bind(event.occurred_at.timestamp_micros())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl LedgerStore for SqliteLedgerStore {
    #[tracing::instrument(skip_all, fields(merchant_id = %merchant.id))]
    async fn create_merchant(&self, merchant: &Merchant, event: &Event) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await.map_err(unavailable)?;
        let inserted = sqlx::query(
            "INSERT INTO merchants (id, name, currency, time_zone, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(merchant.id.to_string())
        .bind(merchant.name.as_str())
        .bind(merchant.currency.code())
        .bind(merchant.time_zone.name())
        .bind(merchant.created_at.timestamp_micros())
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if unique_violation_on(&e, "merchants.id") => return Err(StoreError::MerchantExists),
            other => other.map_err(unavailable)?,
        };
        Self::insert_outbox(&mut tx, event).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError> {
        let row = sqlx::query("SELECT id, name, currency, time_zone, created_at FROM merchants WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(merchant_from_row).transpose()
    }

    async fn merchant_count(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM merchants").fetch_one(&self.reader).await.map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    #[tracing::instrument(skip_all, fields(merchant_id = %entry.merchant_id, entry_id = %entry.id))]
    async fn record(
        &self,
        entry: &Entry,
        idempotency: Option<&Idempotency>,
        event: &Event,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.writer.begin().await.map_err(unavailable)?;
        let inserted = sqlx::query(
            "INSERT INTO entries (id, merchant_id, type, amount_minor, currency, description, category, occurred_at,
                                  business_date, recorded_at, reversal_of, idempotency_key, request_hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )
        .bind(entry.id.to_string())
        .bind(entry.merchant_id.to_string())
        .bind(entry.kind.as_str())
        .bind(entry.amount.minor())
        .bind(entry.currency.code())
        .bind(entry.description.as_str())
        .bind(entry.category.as_ref().map(Category::as_str))
        .bind(entry.occurred_at.timestamp_micros())
        .bind(entry.business_date.to_string())
        .bind(entry.recorded_at.timestamp_micros())
        .bind(entry.reversal_of.map(|id| id.to_string()))
        .bind(idempotency.map(|i| i.key.as_str()))
        .bind(idempotency.map(|i| i.request_hash.as_str()))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if unique_violation_on(&e, "idempotency_key") => {
                let Some(idem) = idempotency else { return Err(unavailable(e)) };
                let row = sqlx::query(&format!(
                    "SELECT {ENTRY_COLUMNS}, request_hash FROM entries WHERE merchant_id = ?1 AND idempotency_key = ?2"
                ))
                .bind(entry.merchant_id.to_string())
                .bind(&idem.key)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
                let stored_hash: Option<String> = row.get("request_hash");
                return if stored_hash.as_deref() == Some(idem.request_hash.as_str()) {
                    Ok(Recorded::Replayed(entry_from_row(&row)?))
                } else {
                    Err(StoreError::IdempotencyConflict)
                };
            }
            Err(e) if unique_violation_on(&e, "reversal_of") => return Err(StoreError::AlreadyReversed),
            Err(e) => return Err(unavailable(e)),
        }
        Self::insert_outbox(&mut tx, event).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Recorded::Created(entry.clone()))
    }

    async fn entry(&self, merchant: MerchantId, id: EntryId) -> Result<Option<Entry>, StoreError> {
        let row = sqlx::query(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = ?1 AND merchant_id = ?2"))
            .bind(id.to_string())
            .bind(merchant.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(entry_from_row).transpose()
    }

    async fn entries(&self, merchant: MerchantId, query: &EntryQuery) -> Result<Vec<Entry>, StoreError> {
        let (after_date, after_id) = match query.after {
            Some((d, id)) => (d.to_string(), id.to_string()),
            None => (String::new(), String::new()),
        };
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM entries
             WHERE merchant_id = ?1 AND business_date >= ?2 AND business_date <= ?3
               AND (business_date, id) > (?4, ?5)
             ORDER BY business_date, id LIMIT ?6"
        ))
        .bind(merchant.to_string())
        .bind(query.from.to_string())
        .bind(query.to.to_string())
        .bind(after_date)
        .bind(after_id)
        .bind(i64::from(query.limit))
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn outbox_batch(&self, limit: u32) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows = sqlx::query("SELECT seq, event_id, body FROM outbox ORDER BY seq LIMIT ?1")
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| OutboxRecord { seq: r.get("seq"), event_id: r.get("event_id"), body: r.get("body") })
            .collect())
    }

    async fn delete_outbox(&self, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let placeholders = vec!["?"; seqs.len()].join(",");
        let sql = format!("DELETE FROM outbox WHERE seq IN ({placeholders})");
        let mut q = sqlx::query(&sql);
        for seq in seqs {
            q = q.bind(seq);
        }
        q.execute(&self.writer).await.map_err(unavailable)?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox")
            .fetch_one(&self.reader)
            .await
            .map_err(unavailable)?;
        let oldest: Option<i64> = row.get("oldest");
        Ok(OutboxBacklog {
            count: u64::try_from(row.get::<i64, _>("n")).unwrap_or(0),
            oldest: oldest.map(micros_to_time).transpose()?,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(unavailable)?;
        Ok(())
    }

    fn pool_usage(&self) -> Vec<(&'static str, u32, u32)> {
        let idle = |p: &SqlitePool| u32::try_from(p.num_idle()).unwrap_or(u32::MAX);
        vec![
            (concat!("ledger", "_writer"), self.writer.size(), idle(&self.writer)),
            (concat!("ledger", "_reader"), self.reader.size(), idle(&self.reader)),
        ]
    }
}
