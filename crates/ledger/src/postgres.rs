//! The Postgres ledger store (RDS in the reference architecture), chosen by a `postgres://`
//! URL. Same contract as [`crate::sqlite`], checked by the same test suite
//! (`tests/store_contract.rs`).
//!
//! - **Its own schema.** The pool's `search_path` is the `ledger` schema (see
//!   [`cashflow_db::open_postgres`]), with its own `_sqlx_migrations`: the consolidation may
//!   share the database, never the tables.
//! - **Native types.** `uuid` ids, `bigint` minor units, `timestamptz` (microseconds, like the
//!   SQLite store's integers, so a round trip is exact), `date` business dates, CHECK
//!   constraints mirroring the domain rules, and a trigger that refuses `UPDATE`, `DELETE` and
//!   `TRUNCATE` on entries.
//! - **Idempotency under concurrency.** Writes run concurrently here, so two requests with
//!   the same key can race. The insert is `ON CONFLICT (merchant_id, idempotency_key) DO
//!   NOTHING`: the loser waits for the winner's commit, inserts nothing, and reads the winner's
//!   row back in the same transaction (read committed: a new statement sees the commit), which
//!   makes it a replay or a conflict, never an error. A racing second reversal fails on the
//!   `entries_one_reversal_per_entry` constraint and becomes [`StoreError::AlreadyReversed`].

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use cashflow_domain::{
    Amount, BusinessDate, Category, Currency, Description, Entry, EntryId, Merchant, MerchantId, MerchantName,
    MerchantTimeZone,
};
use cashflow_events::Event;

use crate::store::{EntryQuery, Idempotency, LedgerStore, OutboxBacklog, OutboxRecord, Recorded, StoreError};

/// The ledger's schema, embedded in the binary.
pub const MIGRATIONS: &[cashflow_db::MigrationSource] = &[cashflow_db::MigrationSource {
    version: 1,
    description: "ledger",
    sql: include_str!("../migrations/postgres/0001_ledger.sql"),
}];

/// The schema every connection of the store uses.
pub const SCHEMA: &str = "ledger";

/// Connections kept by [`PostgresLedgerStore::open`]: requests hold one for a single short
/// transaction, so a few dozen requests in flight share them well.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// The Postgres implementation of [`LedgerStore`].
#[derive(Clone)]
pub struct PostgresLedgerStore {
    /// One pool for reads and writes: Postgres has no single-writer limit.
    pool: PgPool,
}

impl std::fmt::Debug for PostgresLedgerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresLedgerStore").finish_non_exhaustive()
    }
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn violates(e: &sqlx::Error, constraint: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => db.is_unique_violation() && db.constraint() == Some(constraint),
        _ => false,
    }
}

fn corrupt<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// The instant as stored: whole microseconds, rounded down like the SQLite store's
/// `timestamp_micros`, so both backends return the same value.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

const ENTRY_COLUMNS: &str = "id, merchant_id, type, amount_minor, currency, description, category, occurred_at, \
                             business_date, recorded_at, reversal_of";

fn entry_from_row(row: &PgRow) -> Result<Entry, StoreError> {
    let get_uuid = |column: &'static str| row.try_get::<Uuid, _>(column).map_err(corrupt(column));
    let category: Option<String> = row.try_get("category").map_err(corrupt("category"))?;
    let reversal_of: Option<Uuid> = row.try_get("reversal_of").map_err(corrupt("reversal_of"))?;
    let business_date: NaiveDate = row.try_get("business_date").map_err(corrupt("business_date"))?;
    Ok(Entry {
        id: EntryId::from_uuid(get_uuid("id")?),
        merchant_id: MerchantId::from_uuid(get_uuid("merchant_id")?),
        kind: row.try_get::<&str, _>("type").map_err(corrupt("type"))?.parse().map_err(corrupt("type"))?,
        amount: Amount::from_minor(row.try_get("amount_minor").map_err(corrupt("amount"))?)
            .map_err(corrupt("amount"))?,
        currency: Currency::parse(row.try_get("currency").map_err(corrupt("currency"))?)
            .map_err(corrupt("currency"))?,
        description: Description::parse(row.try_get("description").map_err(corrupt("description"))?)
            .map_err(corrupt("description"))?,
        category: category.as_deref().map(Category::parse).transpose().map_err(corrupt("category"))?,
        occurred_at: row.try_get("occurred_at").map_err(corrupt("occurred_at"))?,
        business_date: BusinessDate::from_naive(business_date)
            .ok_or_else(|| StoreError::Corrupt(format!("business_date: {business_date}")))?,
        recorded_at: row.try_get("recorded_at").map_err(corrupt("recorded_at"))?,
        reversal_of: reversal_of.map(EntryId::from_uuid),
    })
}

fn merchant_from_row(row: &PgRow) -> Result<Merchant, StoreError> {
    Ok(Merchant {
        id: MerchantId::from_uuid(row.try_get("id").map_err(corrupt("id"))?),
        name: MerchantName::parse(row.try_get("name").map_err(corrupt("name"))?).map_err(corrupt("name"))?,
        currency: Currency::parse(row.try_get("currency").map_err(corrupt("currency"))?)
            .map_err(corrupt("currency"))?,
        time_zone: MerchantTimeZone::parse(row.try_get("time_zone").map_err(corrupt("time_zone"))?)
            .map_err(corrupt("time_zone"))?,
        created_at: row.try_get("created_at").map_err(corrupt("created_at"))?,
    })
}

impl PostgresLedgerStore {
    /// Opens the ledger on `url` (`postgres://…`) with [`DEFAULT_MAX_CONNECTIONS`], creating
    /// and migrating the `ledger` schema.
    pub async fn open(url: &str) -> Result<Self, cashflow_db::DbError> {
        Self::open_with(url, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Like [`open`](Self::open), with a pool of at most `max_connections`.
    pub async fn open_with(url: &str, max_connections: u32) -> Result<Self, cashflow_db::DbError> {
        let pool = cashflow_db::open_postgres(url, max_connections, SCHEMA).await?;
        cashflow_db::migrate_postgres(&pool, MIGRATIONS).await?;
        Ok(Self { pool })
    }

    async fn insert_outbox(tx: &mut PgConnection, event: &Event) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO outbox (event_id, body, created_at) VALUES ($1, $2, $3)")
            .bind(event.event_id.as_uuid())
            .bind(event.to_json())
            .bind(micros(event.occurred_at))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl LedgerStore for PostgresLedgerStore {
    #[tracing::instrument(skip_all, fields(merchant_id = %merchant.id))]
    async fn create_merchant(&self, merchant: &Merchant, event: &Event) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let inserted = sqlx::query(
            "INSERT INTO merchants (id, name, currency, time_zone, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(merchant.id.as_uuid())
        .bind(merchant.name.as_str())
        .bind(merchant.currency.code())
        .bind(merchant.time_zone.name())
        .bind(micros(merchant.created_at))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::MerchantExists);
        }
        Self::insert_outbox(&mut tx, event).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError> {
        let row = sqlx::query("SELECT id, name, currency, time_zone, created_at FROM merchants WHERE id = $1")
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(merchant_from_row).transpose()
    }

    async fn merchant_count(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM merchants").fetch_one(&self.pool).await.map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    #[tracing::instrument(skip_all, fields(merchant_id = %entry.merchant_id, entry_id = %entry.id))]
    async fn record(
        &self,
        entry: &Entry,
        idempotency: Option<&Idempotency>,
        event: &Event,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let inserted = sqlx::query(
            "INSERT INTO entries (id, merchant_id, type, amount_minor, currency, description, category, occurred_at,
                                  business_date, recorded_at, reversal_of, idempotency_key, request_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (merchant_id, idempotency_key) DO NOTHING",
        )
        .bind(entry.id.as_uuid())
        .bind(entry.merchant_id.as_uuid())
        .bind(entry.kind.as_str())
        .bind(entry.amount.minor())
        .bind(entry.currency.code())
        .bind(entry.description.as_str())
        .bind(entry.category.as_ref().map(Category::as_str))
        .bind(micros(entry.occurred_at))
        .bind(entry.business_date.naive())
        .bind(micros(entry.recorded_at))
        .bind(entry.reversal_of.map(|id| *id.as_uuid()))
        .bind(idempotency.map(|i| i.key.as_str()))
        .bind(idempotency.map(|i| i.request_hash.as_str()))
        .execute(&mut *tx)
        .await;
        let inserted = match inserted {
            Ok(done) => done.rows_affected(),
            Err(e) if violates(&e, "entries_one_reversal_per_entry") => return Err(StoreError::AlreadyReversed),
            Err(e) => return Err(unavailable(e)),
        };
        if inserted == 0 {
            // Only the idempotency key can conflict silently (a NULL key never does).
            let Some(idem) = idempotency else {
                return Err(StoreError::Unavailable("entry insert was skipped without an idempotency key".into()));
            };
            let row = sqlx::query(&format!(
                "SELECT {ENTRY_COLUMNS}, request_hash FROM entries WHERE merchant_id = $1 AND idempotency_key = $2"
            ))
            .bind(entry.merchant_id.as_uuid())
            .bind(&idem.key)
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
            let stored_hash: Option<String> = row.try_get("request_hash").map_err(corrupt("request_hash"))?;
            return if stored_hash.as_deref() == Some(idem.request_hash.as_str()) {
                Ok(Recorded::Replayed(entry_from_row(&row)?))
            } else {
                Err(StoreError::IdempotencyConflict)
            };
        }
        Self::insert_outbox(&mut tx, event).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Recorded::Created(entry.clone()))
    }

    async fn entry(&self, merchant: MerchantId, id: EntryId) -> Result<Option<Entry>, StoreError> {
        let row = sqlx::query(&format!("SELECT {ENTRY_COLUMNS} FROM entries WHERE id = $1 AND merchant_id = $2"))
            .bind(id.as_uuid())
            .bind(merchant.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(entry_from_row).transpose()
    }

    async fn entries(&self, merchant: MerchantId, query: &EntryQuery) -> Result<Vec<Entry>, StoreError> {
        // The row comparison matches the index order (merchant_id, business_date, id), and
        // uuids compare bytewise in both Postgres and Rust.
        let after = if query.after.is_some() { "AND (business_date, id) > ($4, $5)" } else { "" };
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM entries
             WHERE merchant_id = $1 AND business_date >= $2 AND business_date <= $3 {after}
             ORDER BY business_date, id LIMIT $6"
        );
        let (after_date, after_id) = match query.after {
            Some((d, id)) => (Some(d.naive()), Some(*id.as_uuid())),
            None => (None, None),
        };
        let rows = sqlx::query(&sql)
            .bind(merchant.as_uuid())
            .bind(query.from.naive())
            .bind(query.to.naive())
            .bind(after_date)
            .bind(after_id)
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(entry_from_row).collect()
    }

    async fn outbox_batch(&self, limit: u32) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows = sqlx::query("SELECT seq, event_id, body FROM outbox ORDER BY seq LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(OutboxRecord {
                    seq: r.try_get("seq").map_err(corrupt("seq"))?,
                    event_id: r.try_get::<Uuid, _>("event_id").map_err(corrupt("event_id"))?.hyphenated().to_string(),
                    body: r.try_get("body").map_err(corrupt("body"))?,
                })
            })
            .collect()
    }

    async fn delete_outbox(&self, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(OutboxBacklog {
            count: u64::try_from(row.try_get::<i64, _>("n").map_err(corrupt("count"))?).unwrap_or(0),
            oldest: row.try_get("oldest").map_err(corrupt("oldest"))?,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(unavailable)?;
        Ok(())
    }

    fn pool_usage(&self) -> Vec<(&'static str, u32, u32)> {
        vec![("ledger", self.pool.size(), u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX))]
    }
}
