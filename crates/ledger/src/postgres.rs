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
//! - **Compact entries** (migration 6, issue 17). An entry holds its merchant as the merchant's
//!   4-byte integer key (`merchants.seq`, an identity), not its uuid, and its type as a 1-byte
//!   `"char"` (`'c'` credit, `'d'` debit), with the columns ordered so that none is padded for
//!   alignment. Every statement on `entries` finds the key from the merchant's id (a sub-select
//!   on `merchants`, or the batch's locked merchant rows); entries read back carry the id the
//!   query was for, and their type as the domain's.
//! - **Group commit.** A record (an entry and its outbox event) must be durable before its caller
//!   hears back (`synchronous_commit = on`). Written as one transaction each (`BEGIN`, two
//!   `INSERT`s, `COMMIT`), records cost four round trips apiece, and on a small machine the
//!   server's per-statement CPU, not the disk, is what limits them. So records go to
//!   [`WRITERS`] writer tasks draining one bounded queue: a writer takes up to [`MAX_BATCH`]
//!   pending records (lingering up to [`LINGER`] for more while the other writer's batch is on
//!   its way or it has fewer than [`LINGER_AT_LEAST`]) and writes them all
//!   with *one* statement (`INSERT_BATCH`: the entries and, for exactly the entries inserted,
//!   their events) in autocommit, i.e. one round trip, one
//!   implicit transaction and one WAL flush for the whole batch. Callers are answered once that
//!   statement returned, so after the commit. With more than one writer, a batch is built and
//!   sent while the previous one waits for its flush. The queue, the batching, the linger and
//!   the answers are [`crate::group_commit`]'s, shared with the SQLite store; this module
//!   writes a batch. Merchants, outbox deletes and reads go straight to the pool; a caller
//!   that stops waiting does not cancel its record.
//! - **Idempotency under concurrency.** Writes run concurrently here (other writers, other
//!   processes), so two requests with the same key can race. The insert is `ON CONFLICT
//!   (merchant, idempotency_key) DO NOTHING`: the loser waits for the winner's commit, inserts
//!   nothing, and then reads the winner's row back (read committed: a new statement sees the
//!   commit), which makes it a replay or a conflict, never an error. A racing second reversal
//!   fails on the `entries_one_reversal_per_entry` constraint and becomes
//!   [`StoreError::AlreadyReversed`].
//!
//! # Why a batch behaves exactly like the same requests one after the other
//! - Rows sharing an idempotency key are inserted in arrival order, and `DO NOTHING` also skips
//!   a row whose key an earlier row of the same statement took: the first request to use a key
//!   wins, as in sequence. Events are inserted for exactly the entries the statement returned
//!   (in arrival order), so a skipped request writes nothing.
//! - A skipped request is then answered from the row stored under its key, committed and
//!   immutable: a replay if its request hash matches, a conflict otherwise, which is what it
//!   would have been told alone.
//! - Any other refusal (a second reversal of an entry, a foreign key, a deadlock) fails the
//!   whole statement, which then wrote nothing, and the batch is replayed one request per
//!   transaction (the original path): each request gets exactly the answer it would have had
//!   alone ([`StoreError::AlreadyReversed`], …) and only the request at fault fails.
//! - A lost connection answers the whole batch [`StoreError::Unavailable`]: like a lost commit
//!   acknowledgement, the batch may or may not have been committed, and a retry under the same
//!   idempotency key tells which.
//! - Rows are inserted in (merchant, key) order, so two batches sharing keys lock them in the
//!   same order and cannot deadlock on them (a deadlock would only cost a replay one by one).
//! - Only the rows with a key go through `ON CONFLICT`; the others are a plain `INSERT` of the
//!   same statement. A row without a key has no entry in the idempotency index (it is partial),
//!   so it can never conflict there, and `ON CONFLICT` would make Postgres insert it
//!   speculatively all the same (a speculative token locked and released, a second WAL record
//!   to confirm the tuple): about a microsecond of server CPU per row, for nothing. The two
//!   inserts see the same snapshot and neither reads what the other writes; a uniqueness or
//!   foreign key failure in either fails the statement, as before.
//!
//! # Why no entry slips past a close
//! The watermark is a column of the merchant's row (`merchants.closed_through`), a row that
//! always exists. Every write of an entry (the batch statement and the one-by-one path) locks
//! the rows of its merchants `FOR SHARE` before inserting and refuses the entries dated on or
//! before the watermark it read under that lock; a close locks its merchant's row
//! `FOR NO KEY UPDATE` first, then computes its totals and moves the watermark in the same
//! transaction. The two locks conflict, so for one merchant a close and a write are serialized:
//! - If the write holds the lock first, the close waits until the write has committed. Its
//!   totals query runs after that, and under read committed a statement's snapshot is taken
//!   when it starts, so it sees the write's entries: they are in the close's totals.
//! - If the close holds it first, the write waits until the close has committed; `FOR SHARE`
//!   in read committed then returns the row's newest version (Postgres re-reads an updated row
//!   a locking read waited for), so the write sees the new watermark and refuses the entries
//!   it covers. Nothing dated in a closed day is committed after the close's snapshot.
//!
//! A reopen takes the same lock as a close before it moves the watermark back, so the same
//! argument holds for it (a write that waited sees the older watermark). A close's or reopen's
//! audit row and event are written in its transaction.
//!
//! Share locks do not conflict with each other, so writers still run concurrently, and an
//! entry's foreign key check (`FOR KEY SHARE`) does not conflict with the close's lock. A
//! close locks one row and then waits for nothing, so no cycle of waits (deadlock) can form;
//! batches lock their merchants in id order.

mod totals;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Postgres, Row};
use tokio::sync::Mutex;
use uuid::Uuid;

use cashflow_domain::{
    Amount, BusinessDate, Category, Currency, Description, Entry, EntryId, EntryType, EventId, Merchant, MerchantId,
    MerchantName, MerchantTimeZone,
};
use cashflow_events::Event;

use crate::group_commit::{Batch, GroupCommit, InFlight, Intake, Linger};
use crate::store::{
    day_closed_event, day_reopened_event, CloseDay, DayAction, DayAudit, DayClose, EntryQuery, Idempotency,
    LedgerStore, OutboxBacklog, OutboxRecord, OutboxTap, Recorded, ReopenDay, StoreError, TapSlot,
};

/// The ledger's schema, embedded in the binary.
const MIGRATIONS: &[cashflow_db::MigrationSource] = &[
    cashflow_db::MigrationSource {
        version: 1,
        description: "ledger",
        sql: include_str!("../migrations/postgres/0001_ledger.sql"),
    },
    cashflow_db::MigrationSource {
        version: 2,
        description: "day close",
        sql: include_str!("../migrations/postgres/0002_day_close.sql"),
    },
    cashflow_db::MigrationSource {
        version: 3,
        description: "adjusts date",
        sql: include_str!("../migrations/postgres/0003_adjusts_date.sql"),
    },
    cashflow_db::MigrationSource {
        version: 4,
        description: "day audit",
        sql: include_str!("../migrations/postgres/0004_day_audit.sql"),
    },
    cashflow_db::MigrationSource {
        version: 5,
        description: "partial unique indexes",
        sql: include_str!("../migrations/postgres/0005_partial_unique_indexes.sql"),
    },
    cashflow_db::MigrationSource {
        version: 6,
        description: "compact entries",
        sql: include_str!("../migrations/postgres/0006_compact_entries.sql"),
    },
    cashflow_db::MigrationSource {
        version: 7,
        description: "packed by-date index",
        sql: include_str!("../migrations/postgres/0007_packed_by_date_index.sql"),
    },
];

/// The schema every connection of the store uses.
const SCHEMA: &str = "ledger";

/// Connections kept by [`PostgresLedgerStore::open`] for reads, merchants and the outbox
/// relay (records have their own, one per writer task).
const MAX_CONNECTIONS: u32 = 16;

/// Writer tasks, each writing one batch at a time on its own connection. Two keep the server
/// busy (one batch is sent while the other waits for its WAL flush); more only split the same
/// requests into smaller batches.
pub const WRITERS: u32 = 2;

/// The most records one statement writes: enough that a batch takes everything that arrived
/// during the previous one's flush, small enough to bound the statement's size and duration.
pub const MAX_BATCH: usize = 256;

/// Records waiting for a writer before callers wait to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 2 * MAX_BATCH;

/// How long a writer holding fewer than [`LINGER_UNTIL`] records waits for more before it
/// writes them. Without it, the writer that is free takes whatever arrived since the other one
/// took the queue, and two writers split the stream into statements of a few records each: at
/// 8,000 records/s, 5.8 per statement, and Postgres spent ~85 µs of CPU per record, most of it
/// per statement. Lingering, 29 per statement and ~48 µs: up to 2 ms more per write, about what
/// the WAL flush the caller waits for anyway takes.
pub const LINGER: Duration = Duration::from_millis(2);

/// The batch size past which a writer stops lingering.
pub const LINGER_UNTIL: usize = 64;

/// The pause in arrivals that ends a writer's linger early. At 32 connections a batch never
/// reaches [`LINGER_UNTIL`], so a fixed [`LINGER`] made every batch wait its full 2 ms after
/// its callers had all arrived: the store's ceiling from 32 callers was 7.2k records/s
/// (BENCHMARKS.md, session 23).
pub const LINGER_GAP: Duration = Duration::from_micros(500);

/// The batch size past which a writer stops lingering when no other batch is being written.
/// While one is, whatever arrives would wait for that commit anyway, so the writer lingers
/// until it lands (within [`LINGER`], [`LINGER_UNTIL`] and [`LINGER_GAP`]); when none is, a
/// batch this big goes at once. At 32 connections a closed loop's batches are about this size
/// and lingering on to [`LINGER`] only delayed them: 7.8k writes/s end to end, 10.4k with
/// this rule. A smaller size would also shorten the linger at moderate rates, for more
/// Postgres CPU per record: at 5,000 records/s, 8 took 1.2 ms off the median write and cost
/// 15–25 % more of it (BENCHMARKS.md, session 30).
pub const LINGER_AT_LEAST: usize = 16;

/// The Postgres implementation of [`LedgerStore`].
#[derive(Clone)]
pub struct PostgresLedgerStore {
    /// Reads, merchants and the outbox relay: Postgres has no single-writer limit.
    pool: PgPool,
    /// One connection per writer task, taken for one batch at a time (kept here for pool
    /// metrics: in use means a batch is being written).
    writer: PgPool,
    /// Pending records for the writer tasks; when the last clone of the store is dropped the
    /// channel closes and the tasks end.
    writes: GroupCommit<WriteRequest, Answer>,
    /// Where the writers hand the outbox rows they committed, once someone listens.
    tap: TapSlot,
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

/// The columns of an entry, as [`entry_from_row`] reads them, from `entries e`. The merchant is
/// not among them (`entries` holds its integer key): every query is for known merchants, whose
/// ids the caller already has.
macro_rules! entry_columns {
    () => {
        "e.id, e.type, e.amount_minor, e.currency, e.description, e.category, e.occurred_at, e.business_date, \
         e.recorded_at, e.reversal_of, e.adjusts_date"
    };
}

/// A merchant's key in `entries` (`merchants.seq`), looked up once per statement: with the
/// merchant fixed by equality, the by-date index returns a page in (business date, id) order.
macro_rules! merchant_key {
    ($param:literal) => {
        concat!("(SELECT seq FROM merchants WHERE id = ", $param, ")")
    };
}

/// `type` as stored: a one-byte "char".
fn type_code(kind: EntryType) -> i8 {
    match kind {
        EntryType::Credit => b'c' as i8,
        EntryType::Debit => b'd' as i8,
    }
}

fn type_of_code(code: i8) -> Result<EntryType, StoreError> {
    match u8::try_from(code) {
        Ok(b'c') => Ok(EntryType::Credit),
        Ok(b'd') => Ok(EntryType::Debit),
        _ => Err(StoreError::Corrupt(format!("type: {code}"))),
    }
}

/// The entry of `merchant_id` in `row` (read with [`entry_columns`]).
fn entry_from_row(row: &PgRow, merchant_id: MerchantId) -> Result<Entry, StoreError> {
    let get_uuid = |column: &'static str| row.try_get::<Uuid, _>(column).map_err(corrupt(column));
    let category: Option<String> = row.try_get("category").map_err(corrupt("category"))?;
    let reversal_of: Option<Uuid> = row.try_get("reversal_of").map_err(corrupt("reversal_of"))?;
    let business_date: NaiveDate = row.try_get("business_date").map_err(corrupt("business_date"))?;
    let adjusts_date: Option<NaiveDate> = row.try_get("adjusts_date").map_err(corrupt("adjusts_date"))?;
    Ok(Entry {
        id: EntryId::from_uuid(get_uuid("id")?),
        merchant_id,
        kind: type_of_code(row.try_get("type").map_err(corrupt("type"))?)?,
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
        adjusts_date: adjusts_date
            .map(|d| BusinessDate::from_naive(d).ok_or_else(|| StoreError::Corrupt(format!("adjusts_date: {d}"))))
            .transpose()?,
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

fn day_close_from_row(row: &PgRow) -> Result<DayClose, StoreError> {
    let date: NaiveDate = row.try_get("business_date").map_err(corrupt("business_date"))?;
    Ok(DayClose {
        merchant_id: MerchantId::from_uuid(row.try_get("merchant_id").map_err(corrupt("merchant_id"))?),
        date: BusinessDate::from_naive(date).ok_or_else(|| StoreError::Corrupt(format!("business_date: {date}")))?,
        closed_at: row.try_get("closed_at").map_err(corrupt("closed_at"))?,
        closed_by: row.try_get("closed_by").map_err(corrupt("closed_by"))?,
        credits_minor: row.try_get("credits_minor").map_err(corrupt("credits_minor"))?,
        debits_minor: row.try_get("debits_minor").map_err(corrupt("debits_minor"))?,
        entry_count: u64::try_from(row.try_get::<i64, _>("entry_count").map_err(corrupt("entry_count"))?)
            .map_err(corrupt("entry_count"))?,
        expected_balance_minor: row.try_get("expected_balance_minor").map_err(corrupt("expected_balance_minor"))?,
        counted_cash_minor: row.try_get("counted_cash_minor").map_err(corrupt("counted_cash_minor"))?,
        note: row.try_get("note").map_err(corrupt("note"))?,
    })
}

fn date_of(d: NaiveDate, what: &'static str) -> Result<BusinessDate, StoreError> {
    BusinessDate::from_naive(d).ok_or_else(|| StoreError::Corrupt(format!("{what}: {d}")))
}

fn day_audit_from_row(row: &PgRow) -> Result<DayAudit, StoreError> {
    let optional = |name: &'static str| -> Result<Option<BusinessDate>, StoreError> {
        row.try_get::<Option<NaiveDate>, _>(name).map_err(corrupt(name))?.map(|d| date_of(d, name)).transpose()
    };
    Ok(DayAudit {
        seq: row.try_get("seq").map_err(corrupt("seq"))?,
        merchant_id: MerchantId::from_uuid(row.try_get("merchant_id").map_err(corrupt("merchant_id"))?),
        action: DayAction::parse(row.try_get("action").map_err(corrupt("action"))?)?,
        date: date_of(row.try_get("business_date").map_err(corrupt("business_date"))?, "business_date")?,
        at: row.try_get("at").map_err(corrupt("at"))?,
        by: row.try_get("by").map_err(corrupt("by"))?,
        reason: row.try_get("reason").map_err(corrupt("reason"))?,
        closed_through_before: optional("closed_through_before")?,
        closed_through_after: optional("closed_through_after")?,
    })
}

/// Locks the merchant's row as a close or a reopen does (see the module docs) and returns its
/// watermark.
async fn lock_watermark(conn: &mut PgConnection, merchant: MerchantId) -> Result<Option<BusinessDate>, StoreError> {
    let through: Option<NaiveDate> =
        sqlx::query_scalar("SELECT closed_through FROM merchants WHERE id = $1 FOR NO KEY UPDATE")
            .bind(merchant.as_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(unavailable)?
            .flatten();
    through.map(|d| date_of(d, "closed_through")).transpose()
}

/// Appends an audit row; its `seq`.
async fn insert_day_audit(conn: &mut PgConnection, audit: &DayAudit) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO day_audit (merchant_id, action, business_date, at, by, reason, closed_through_before,
                                closed_through_after)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
    )
    .bind(audit.merchant_id.as_uuid())
    .bind(audit.action.as_str())
    .bind(audit.date.naive())
    .bind(micros(audit.at))
    .bind(&audit.by)
    .bind(&audit.reason)
    .bind(audit.closed_through_before.map(|d| d.naive()))
    .bind(audit.closed_through_after.map(|d| d.naive()))
    .fetch_one(&mut *conn)
    .await
    .map_err(unavailable)
}

async fn set_watermark(
    conn: &mut PgConnection,
    merchant: MerchantId,
    through: Option<BusinessDate>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE merchants SET closed_through = $2 WHERE id = $1")
        .bind(merchant.as_uuid())
        .bind(through.map(|d| d.naive()))
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    Ok(())
}

impl PostgresLedgerStore {
    /// Opens the ledger on `url` (`postgres://…`) with a pool of [`MAX_CONNECTIONS`] (besides
    /// the [`WRITERS`] connections of the writer tasks), creating and migrating the `ledger`
    /// schema, and starts its writer tasks on the current Tokio runtime.
    pub async fn open(url: &str) -> Result<Self, cashflow_db::DbError> {
        let pool = cashflow_db::open_postgres(url, MAX_CONNECTIONS, SCHEMA).await?;
        cashflow_db::migrate_postgres(&pool, MIGRATIONS).await?;
        // Same settings as `pool` (search_path, application name). sqlx pings a connection before
        // handing it out by default, one more round trip per batch; a busy writer's connection
        // was just used, so only one that sat idle for a while is checked.
        let writer = PgPoolOptions::new()
            .max_connections(WRITERS)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > Duration::from_secs(1) {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(PgConnectOptions::clone(&pool.connect_options()))
            .await
            .map_err(cashflow_db::DbError::Connect)?;
        let (writes, intake) = GroupCommit::new(QUEUE_CAPACITY);
        let intake = Arc::new(Mutex::new(intake));
        let in_flight = Arc::new(InFlight::default());
        let tap = TapSlot::default();
        for _ in 0..WRITERS {
            tokio::spawn(run_writer(writer.clone(), intake.clone(), in_flight.clone(), tap.clone()));
        }
        Ok(Self { pool, writer, writes, tap })
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the ledger writer tasks have stopped".to_owned())
}

/// An event as its outbox row, serialized by the caller so the writer only binds values.
struct OutboxRow {
    event_id: Uuid,
    body: String,
    created_at: DateTime<Utc>,
}

impl OutboxRow {
    fn of(event: &Event) -> Self {
        Self { event_id: *event.event_id.as_uuid(), body: event.to_json(), created_at: micros(event.occurred_at) }
    }
}

async fn insert_outbox(conn: &mut PgConnection, row: &OutboxRow) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO outbox (event_id, body, created_at) VALUES ($1, $2, $3)")
        .bind(row.event_id)
        .bind(row.body.as_str())
        .bind(row.created_at)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// A record waiting for a writer task.
struct WriteRequest {
    /// Boxed: the queue holds many, and they move from the channel into a batch.
    entry: Box<Entry>,
    idempotency: Option<Idempotency>,
    outbox: OutboxRow,
}

/// What a record's caller is told.
type Answer = Result<Recorded, StoreError>;

// The batch statement. Its text never changes, so sqlx prepares it once per connection.
//
// `batch` is the requests in arrival order (`arrival`), one array per column. `inserted` writes
// the entries, skipping (DO NOTHING) those whose key is taken, by an earlier batch or by an
// earlier row of this one; `announced` writes the events of exactly the inserted entries, in
// arrival order (their `seq` order). Entries are inserted in (merchant, key) order so
// concurrent batches lock shared keys in one order; among rows with the same key, arrival
// decides which is inserted. `watermark` locks the merchants' rows (see the module docs) and
// gives their keys in `entries` (`seq`); `refused` is the entries dated on or before their
// merchant's watermark, which are not inserted. An entry of an unknown merchant has no key: its
// NULL `merchant` fails the statement (a database error, so the batch is replayed one by one),
// as the foreign key did when `entries` held the merchant's uuid. The result is the ids of the
// inserted entries (with no date, and their event's `seq` for the store's tap) and of the
// refused ones (with the watermark that refused them).
const INSERT_BATCH: &str = "
WITH batch AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::\"char\"[], $4::bigint[], $5::text[], $6::text[], $7::text[],
                         $8::timestamptz[], $9::date[], $10::timestamptz[], $11::uuid[], $12::text[], $13::text[],
                         $14::uuid[], $15::text[], $16::timestamptz[], $17::date[])
        WITH ORDINALITY AS b (id, merchant_id, type, amount_minor, currency, description, category, occurred_at,
                              business_date, recorded_at, reversal_of, idempotency_key, request_hash,
                              event_id, body, created_at, adjusts_date, arrival)
), watermark AS (
    SELECT id AS merchant_id, seq, closed_through FROM merchants
    WHERE id IN (SELECT merchant_id FROM batch)
    ORDER BY id
    FOR SHARE
), refused AS (
    SELECT b.id, w.closed_through FROM batch b JOIN watermark w ON w.merchant_id = b.merchant_id
    WHERE b.business_date <= w.closed_through
), keyed AS (
    INSERT INTO entries (amount_minor, occurred_at, recorded_at, id, merchant, business_date, adjusts_date, type,
                         currency, description, category, reversal_of, idempotency_key, request_hash)
    SELECT b.amount_minor, b.occurred_at, b.recorded_at, b.id, w.seq, b.business_date, b.adjusts_date, b.type,
           b.currency, b.description, b.category, b.reversal_of, b.idempotency_key, b.request_hash
    FROM batch b LEFT JOIN watermark w ON w.merchant_id = b.merchant_id
    WHERE b.idempotency_key IS NOT NULL AND b.id NOT IN (SELECT id FROM refused)
    ORDER BY w.seq, b.idempotency_key, b.arrival
    ON CONFLICT (merchant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id
), unkeyed AS (
    INSERT INTO entries (amount_minor, occurred_at, recorded_at, id, merchant, business_date, adjusts_date, type,
                         currency, description, category, reversal_of)
    SELECT b.amount_minor, b.occurred_at, b.recorded_at, b.id, w.seq, b.business_date, b.adjusts_date, b.type,
           b.currency, b.description, b.category, b.reversal_of
    FROM batch b LEFT JOIN watermark w ON w.merchant_id = b.merchant_id
    WHERE b.idempotency_key IS NULL AND b.id NOT IN (SELECT id FROM refused)
    ORDER BY w.seq, b.arrival
    RETURNING id
), announced AS (
    INSERT INTO outbox (event_id, body, created_at)
    SELECT event_id, body, created_at FROM batch
    WHERE id IN (SELECT id FROM keyed UNION ALL SELECT id FROM unkeyed) ORDER BY arrival
    RETURNING seq, event_id
)
SELECT b.id, NULL::date AS closed_through, a.seq FROM announced a JOIN batch b ON b.event_id = a.event_id
UNION ALL
SELECT id, closed_through, NULL::bigint FROM refused";

/// The rows stored under some (merchant, idempotency key) pairs, with the merchant's id.
const SELECT_BY_IDEMPOTENCY_KEYS: &str = concat!(
    "SELECT k.merchant_id, ",
    entry_columns!(),
    ", e.idempotency_key, e.request_hash
     FROM (SELECT DISTINCT * FROM unnest($1::uuid[], $2::text[])) AS k (merchant_id, idempotency_key)
     JOIN merchants m ON m.id = k.merchant_id
     JOIN entries e ON e.merchant = m.seq AND e.idempotency_key = k.idempotency_key"
);

/// A writer task: writes pending records in batches until every store handle is dropped.
/// Writers share the queue; whichever is free takes what has arrived, and counts its batch
/// in `in_flight` while writing it (the others linger on it).
async fn run_writer(
    pool: PgPool,
    intake: Arc<Mutex<Intake<WriteRequest, Answer>>>,
    in_flight: Arc<InFlight>,
    tap: TapSlot,
) {
    let mut batch = Batch::with_max(MAX_BATCH);
    let linger = Linger { up_to: LINGER, until: LINGER_UNTIL, gap: LINGER_GAP, at_least: LINGER_AT_LEAST };
    loop {
        // The lock is held only while gathering requests, never while writing them.
        if !intake.lock().await.next(&mut batch, linger, &in_flight).await {
            return;
        }
        let flight = in_flight.start();
        let answers = write_batch(&pool, batch.jobs(), tap.get().as_deref()).await;
        drop(flight);
        batch.answer(answers);
    }
}

/// Writes `batch`; each request's answer, in `batch` order, once its outcome is committed.
/// The events of a batch written by the one statement are handed to `tap` before anyone is
/// answered (those of the one-by-one path are left to reads of the outbox).
async fn write_batch(pool: &PgPool, batch: &[WriteRequest], tap: Option<&dyn OutboxTap>) -> Vec<Answer> {
    match pool.acquire().await {
        Ok(mut conn) => write_on(&mut conn, batch, tap).await,
        Err(e) => {
            let message = e.to_string();
            batch.iter().map(|_| Err(StoreError::Unavailable(message.clone()))).collect()
        }
    }
}

/// Each request's answer, in `batch` order.
async fn write_on(
    conn: &mut PoolConnection<Postgres>,
    batch: &[WriteRequest],
    tap: Option<&dyn OutboxTap>,
) -> Vec<Result<Recorded, StoreError>> {
    // Inserted entries are recognized by id: two requests with one id (never minted twice by
    // the service) are left to the one-by-one path, which refuses the second.
    let mut ids = HashSet::with_capacity(batch.len());
    if !batch.iter().all(|r| ids.insert(*r.entry.id.as_uuid())) {
        return one_by_one(conn, batch).await;
    }
    match insert_batch(conn, batch).await {
        Ok(outcome) => {
            if let Some(tap) = tap {
                hand_over(tap, batch, &outcome);
            }
            answer_batch(conn, batch, &outcome).await
        }
        Err(e @ sqlx::Error::Database(_)) => {
            // The statement wrote nothing: replay the batch one request per transaction, so that
            // each request gets the answer it would have had alone.
            if batch.len() > 1 {
                tracing::info!(error = %e, requests = batch.len(), "a ledger batch was refused; retrying it one by one");
            }
            one_by_one(conn, batch).await
        }
        Err(e) => {
            // The connection failed: whether the batch was committed is unknown, and this
            // connection is not reused.
            conn.close_on_drop();
            let message = e.to_string();
            batch.iter().map(|_| Err(StoreError::Unavailable(message.clone()))).collect()
        }
    }
}

/// Hands the events `INSERT_BATCH` committed to `tap`, in arrival order.
fn hand_over(tap: &dyn OutboxTap, batch: &[WriteRequest], outcome: &BatchOutcome) {
    let rows: Vec<OutboxRecord> = batch
        .iter()
        .filter_map(|request| {
            let seq = (*outcome.inserted.get(request.entry.id.as_uuid())?)?;
            Some(OutboxRecord { seq, event_id: request.outbox.event_id.to_string(), body: request.outbox.body.clone() })
        })
        .collect();
    if !rows.is_empty() {
        tap.committed(rows);
    }
}

/// What `INSERT_BATCH` did with each entry it did not skip.
struct BatchOutcome {
    /// Inserted entries, and the `seq` of their event in the outbox (always there: a row
    /// without one is only not handed to the tap).
    inserted: HashMap<Uuid, Option<i64>>,
    /// Refused entries and the watermark that refused them.
    refused: HashMap<Uuid, NaiveDate>,
}

/// Runs `INSERT_BATCH`.
async fn insert_batch(conn: &mut PgConnection, batch: &[WriteRequest]) -> Result<BatchOutcome, sqlx::Error> {
    let ids: Vec<Uuid> = batch.iter().map(|r| *r.entry.id.as_uuid()).collect();
    let merchants: Vec<Uuid> = batch.iter().map(|r| *r.entry.merchant_id.as_uuid()).collect();
    let kinds: Vec<i8> = batch.iter().map(|r| type_code(r.entry.kind)).collect();
    let amounts: Vec<i64> = batch.iter().map(|r| r.entry.amount.minor()).collect();
    let currencies: Vec<&str> = batch.iter().map(|r| r.entry.currency.code()).collect();
    let descriptions: Vec<&str> = batch.iter().map(|r| r.entry.description.as_str()).collect();
    let categories: Vec<Option<&str>> = batch.iter().map(|r| r.entry.category.as_ref().map(Category::as_str)).collect();
    let occurred: Vec<DateTime<Utc>> = batch.iter().map(|r| micros(r.entry.occurred_at)).collect();
    let dates: Vec<NaiveDate> = batch.iter().map(|r| r.entry.business_date.naive()).collect();
    let recorded: Vec<DateTime<Utc>> = batch.iter().map(|r| micros(r.entry.recorded_at)).collect();
    let reversals: Vec<Option<Uuid>> = batch.iter().map(|r| r.entry.reversal_of.map(|id| *id.as_uuid())).collect();
    let keys: Vec<Option<&str>> = batch.iter().map(|r| r.idempotency.as_ref().map(|i| i.key.as_str())).collect();
    let hashes: Vec<Option<&str>> =
        batch.iter().map(|r| r.idempotency.as_ref().map(|i| i.request_hash.as_str())).collect();
    let event_ids: Vec<Uuid> = batch.iter().map(|r| r.outbox.event_id).collect();
    let bodies: Vec<&str> = batch.iter().map(|r| r.outbox.body.as_str()).collect();
    let created: Vec<DateTime<Utc>> = batch.iter().map(|r| r.outbox.created_at).collect();
    let adjusts: Vec<Option<NaiveDate>> = batch.iter().map(|r| r.entry.adjusts_date.map(|d| d.naive())).collect();
    let rows = sqlx::query_as::<_, (Uuid, Option<NaiveDate>, Option<i64>)>(INSERT_BATCH)
        .bind(ids)
        .bind(merchants)
        .bind(kinds)
        .bind(amounts)
        .bind(currencies)
        .bind(descriptions)
        .bind(categories)
        .bind(occurred)
        .bind(dates)
        .bind(recorded)
        .bind(reversals)
        .bind(keys)
        .bind(hashes)
        .bind(event_ids)
        .bind(bodies)
        .bind(created)
        .bind(adjusts)
        .fetch_all(&mut *conn)
        .await?;
    let mut outcome = BatchOutcome { inserted: HashMap::with_capacity(rows.len()), refused: HashMap::new() };
    for (id, closed_through, seq) in rows {
        match closed_through {
            None => outcome.inserted.insert(id, seq).is_none(),
            Some(through) => outcome.refused.insert(id, through).is_none(),
        };
    }
    Ok(outcome)
}

/// The refusal of an entry dated on or before `through`.
fn day_closed(through: NaiveDate) -> StoreError {
    match BusinessDate::from_naive(through).and_then(|d| d.succ()) {
        Some(first_open) => StoreError::DayClosed { first_open },
        None => StoreError::Corrupt(format!("closed_through: {through}")),
    }
}

/// The answers to a committed batch: created for the inserted entries; for the others, a replay
/// of (or a conflict with) the entry stored under their key.
async fn answer_batch(
    conn: &mut PoolConnection<Postgres>,
    batch: &[WriteRequest],
    outcome: &BatchOutcome,
) -> Vec<Result<Recorded, StoreError>> {
    let (inserted, refused) = (&outcome.inserted, &outcome.refused);
    // Skipped entries, and refused ones with a key: a retry of a request recorded before the
    // day closed is answered as a replay, only a new entry is refused.
    let skipped: Vec<&WriteRequest> = batch
        .iter()
        .filter(|r| !inserted.contains_key(r.entry.id.as_uuid()))
        .filter(|r| !refused.contains_key(r.entry.id.as_uuid()) || r.idempotency.is_some())
        .collect();
    let stored = if skipped.is_empty() { Ok(HashMap::new()) } else { stored_under_keys(conn, &skipped).await };
    batch
        .iter()
        .map(|request| {
            if inserted.contains_key(request.entry.id.as_uuid()) {
                return Ok(Recorded::Created(Entry::clone(&request.entry)));
            }
            let refused_through = refused.get(request.entry.id.as_uuid());
            // Only the idempotency key can conflict silently (a NULL key never does).
            let Some(idem) = &request.idempotency else {
                return Err(match refused_through {
                    Some(through) => day_closed(*through),
                    None => StoreError::Unavailable("entry insert was skipped without an idempotency key".into()),
                });
            };
            let stored = stored.as_ref().map_err(again)?;
            let Some(row) = stored.get(&(*request.entry.merchant_id.as_uuid(), idem.key.clone())) else {
                return Err(match refused_through {
                    Some(through) => day_closed(*through),
                    None => StoreError::Unavailable("entry insert was skipped but no entry holds its key".into()),
                });
            };
            let stored_hash: Option<String> = row.try_get("request_hash").map_err(corrupt("request_hash"))?;
            if stored_hash.as_deref() == Some(idem.request_hash.as_str()) {
                Ok(Recorded::Replayed(entry_from_row(row, request.entry.merchant_id)?))
            } else {
                Err(StoreError::IdempotencyConflict)
            }
        })
        .collect()
}

/// The same error, for each request it concerns.
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::IdempotencyConflict => StoreError::IdempotencyConflict,
        StoreError::AlreadyReversed => StoreError::AlreadyReversed,
        StoreError::MerchantExists => StoreError::MerchantExists,
        StoreError::DayClosed { first_open } => StoreError::DayClosed { first_open: *first_open },
        StoreError::AlreadyClosed { through } => StoreError::AlreadyClosed { through: *through },
        StoreError::NotClosed { closed_through } => StoreError::NotClosed { closed_through: *closed_through },
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
    }
}

/// Stored entries (with their request hash) by (merchant, idempotency key).
type StoredByKey = HashMap<(Uuid, String), PgRow>;

async fn stored_under_keys(
    conn: &mut PoolConnection<Postgres>,
    requests: &[&WriteRequest],
) -> Result<StoredByKey, StoreError> {
    let (merchants, keys): (Vec<Uuid>, Vec<&str>) = requests
        .iter()
        .filter_map(|r| Some((*r.entry.merchant_id.as_uuid(), r.idempotency.as_ref()?.key.as_str())))
        .unzip();
    let rows = match sqlx::query(SELECT_BY_IDEMPOTENCY_KEYS).bind(merchants).bind(keys).fetch_all(&mut **conn).await {
        Ok(rows) => rows,
        Err(e) => {
            if !matches!(e, sqlx::Error::Database(_)) {
                conn.close_on_drop();
            }
            return Err(unavailable(e));
        }
    };
    rows.into_iter()
        .map(|row| {
            let merchant: Uuid = row.try_get("merchant_id").map_err(corrupt("merchant_id"))?;
            let key: String = row.try_get("idempotency_key").map_err(corrupt("idempotency_key"))?;
            Ok(((merchant, key), row))
        })
        .collect()
}

/// Each request in its own transaction, in order: the answers they would have had alone.
async fn one_by_one(conn: &mut PgConnection, batch: &[WriteRequest]) -> Vec<Result<Recorded, StoreError>> {
    let mut answers = Vec::with_capacity(batch.len());
    for request in batch {
        answers.push(record_alone(conn, &request.entry, request.idempotency.as_ref(), &request.outbox).await);
    }
    answers
}

/// Records one entry in its own transaction (four round trips): the path a refused batch is
/// replayed on.
async fn record_alone(
    conn: &mut PgConnection,
    entry: &Entry,
    idempotency: Option<&Idempotency>,
    outbox: &OutboxRow,
) -> Result<Recorded, StoreError> {
    let mut tx = conn.begin().await.map_err(unavailable)?;
    // The same lock and check as `INSERT_BATCH`'s (see the module docs), and the merchant's key.
    let merchant_row: Option<(i32, Option<NaiveDate>)> =
        sqlx::query_as("SELECT seq, closed_through FROM merchants WHERE id = $1 FOR SHARE")
            .bind(entry.merchant_id.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
    let Some((merchant_seq, through)) = merchant_row else {
        return Err(StoreError::Unavailable(format!("unknown merchant {}", entry.merchant_id)));
    };
    if let Some(through) = through.filter(|through| entry.business_date.naive() <= *through) {
        // A retry of a request recorded before the day closed is answered as a replay: only a
        // new entry is refused.
        if let Some(idem) = idempotency {
            if let Some(replayed) = replay_of(&mut tx, merchant_seq, entry.merchant_id, idem).await? {
                return Ok(replayed);
            }
        }
        return Err(day_closed(through));
    }
    let inserted = sqlx::query(
        "INSERT INTO entries (id, merchant, type, amount_minor, currency, description, category, occurred_at,
                              business_date, recorded_at, reversal_of, idempotency_key, request_hash, adjusts_date)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
         ON CONFLICT (merchant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
    )
    .bind(entry.id.as_uuid())
    .bind(merchant_seq)
    .bind(type_code(entry.kind))
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
    .bind(entry.adjusts_date.map(|d| d.naive()))
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
        return replay_of(&mut tx, merchant_seq, entry.merchant_id, idem)
            .await?
            .ok_or_else(|| StoreError::Unavailable("entry insert was skipped but no entry holds its key".into()));
    }
    insert_outbox(&mut tx, outbox).await?;
    tx.commit().await.map_err(unavailable)?;
    Ok(Recorded::Created(entry.clone()))
}

/// The entry stored under `idem`'s key for the merchant `merchant_id`, whose key in `entries` is
/// `merchant_seq`, as a replay if it was recorded from the same request;
/// [`StoreError::IdempotencyConflict`] if from another; `None` if the key is unused.
async fn replay_of(
    conn: &mut PgConnection,
    merchant_seq: i32,
    merchant_id: MerchantId,
    idem: &Idempotency,
) -> Result<Option<Recorded>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        entry_columns!(),
        ", e.request_hash FROM entries e WHERE e.merchant = $1 AND e.idempotency_key = $2"
    ))
    .bind(merchant_seq)
    .bind(&idem.key)
    .fetch_optional(&mut *conn)
    .await
    .map_err(unavailable)?;
    let Some(row) = row else { return Ok(None) };
    let stored_hash: Option<String> = row.try_get("request_hash").map_err(corrupt("request_hash"))?;
    if stored_hash.as_deref() == Some(idem.request_hash.as_str()) {
        Ok(Some(Recorded::Replayed(entry_from_row(&row, merchant_id)?)))
    } else {
        Err(StoreError::IdempotencyConflict)
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
        insert_outbox(&mut tx, &OutboxRow::of(event)).await?;
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

    async fn merchants(&self) -> Result<Vec<Merchant>, StoreError> {
        let rows =
            sqlx::query("SELECT id, name, currency, time_zone, created_at FROM merchants ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter().map(merchant_from_row).collect()
    }

    async fn merchant_count(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM merchants").fetch_one(&self.pool).await.map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn record(
        &self,
        entry: &Entry,
        idempotency: Option<&Idempotency>,
        event: &Event,
    ) -> Result<Recorded, StoreError> {
        let request = WriteRequest {
            entry: Box::new(entry.clone()),
            idempotency: idempotency.cloned(),
            outbox: OutboxRow::of(event),
        };
        self.writes.submit(request).await.map_err(|_| writer_stopped())?
    }

    async fn entry(&self, merchant: MerchantId, id: EntryId) -> Result<Option<Entry>, StoreError> {
        let sql = concat!(
            "SELECT ",
            entry_columns!(),
            " FROM entries e WHERE e.id = $1 AND e.merchant = ",
            merchant_key!("$2")
        );
        let row = sqlx::query(sql)
            .bind(id.as_uuid())
            .bind(merchant.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(|row| entry_from_row(row, merchant)).transpose()
    }

    async fn day_totals(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Vec<(BusinessDate, cashflow_domain::DayTotals)>, StoreError> {
        totals::day_totals(&self.pool, merchant, from, to).await
    }

    async fn entries(&self, merchant: MerchantId, query: &EntryQuery) -> Result<Vec<Entry>, StoreError> {
        let sql = page_query(query.after.is_some());
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
        rows.iter().map(|row| entry_from_row(row, merchant)).collect()
    }

    #[tracing::instrument(skip_all, fields(merchant_id = %close.merchant_id, date = %close.date))]
    async fn close_day(&self, close: &CloseDay) -> Result<DayClose, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Serializes with every write of the merchant's entries: see the module docs.
        let previous = lock_watermark(&mut tx, close.merchant_id).await?;
        if let Some(through) = previous.filter(|through| close.date <= *through) {
            return Err(StoreError::AlreadyClosed { through });
        }
        let (credits, debits, count, expected): (i64, i64, i64, i64) = sqlx::query_as(concat!(
            "SELECT COALESCE(SUM(amount_minor) FILTER (WHERE business_date = $2 AND type = 'c'), 0)::bigint,
                    COALESCE(SUM(amount_minor) FILTER (WHERE business_date = $2 AND type = 'd'), 0)::bigint,
                    COUNT(*) FILTER (WHERE business_date = $2),
                    COALESCE(SUM(CASE WHEN type = 'c' THEN amount_minor ELSE -amount_minor END), 0)::bigint
             FROM entries WHERE merchant = ",
            merchant_key!("$1"),
            " AND business_date <= $2"
        ))
        .bind(close.merchant_id.as_uuid())
        .bind(close.date.naive())
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        let record = DayClose {
            merchant_id: close.merchant_id,
            date: close.date,
            closed_at: micros(close.closed_at),
            closed_by: close.closed_by.clone(),
            credits_minor: credits,
            debits_minor: debits,
            entry_count: u64::try_from(count).unwrap_or(0),
            expected_balance_minor: expected,
            counted_cash_minor: close.counted_cash_minor,
            note: close.note.clone(),
        };
        sqlx::query(
            "INSERT INTO day_closes (merchant_id, business_date, closed_at, closed_by, credits_minor, debits_minor,
                                     entry_count, expected_balance_minor, counted_cash_minor, note)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(close.merchant_id.as_uuid())
        .bind(close.date.naive())
        .bind(record.closed_at)
        .bind(&record.closed_by)
        .bind(credits)
        .bind(debits)
        .bind(count)
        .bind(expected)
        .bind(record.counted_cash_minor)
        .bind(&record.note)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        set_watermark(&mut tx, close.merchant_id, Some(close.date)).await?;
        let audit = DayAudit {
            seq: 0,
            merchant_id: close.merchant_id,
            action: DayAction::Close,
            date: close.date,
            at: record.closed_at,
            by: record.closed_by.clone(),
            reason: record.note.clone(),
            closed_through_before: previous,
            closed_through_after: Some(close.date),
        };
        let seq = insert_day_audit(&mut tx, &audit).await?;
        insert_outbox(&mut tx, &OutboxRow::of(&day_closed_event(&record, previous, seq))).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(record)
    }

    #[tracing::instrument(skip_all, fields(merchant_id = %reopen.merchant_id, date = %reopen.date))]
    async fn reopen_day(&self, reopen: &ReopenDay) -> Result<DayAudit, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // The same lock as a close: records wait for the reopen's commit, and then see it.
        let previous = match lock_watermark(&mut tx, reopen.merchant_id).await? {
            Some(through) if reopen.date <= through => through,
            closed_through => return Err(StoreError::NotClosed { closed_through }),
        };
        let after = reopen.date.pred();
        set_watermark(&mut tx, reopen.merchant_id, after).await?;
        let mut audit = DayAudit {
            seq: 0,
            merchant_id: reopen.merchant_id,
            action: DayAction::Reopen,
            date: reopen.date,
            at: micros(reopen.reopened_at),
            by: reopen.reopened_by.clone(),
            reason: Some(reopen.reason.clone()),
            closed_through_before: Some(previous),
            closed_through_after: after,
        };
        audit.seq = insert_day_audit(&mut tx, &audit).await?;
        insert_outbox(&mut tx, &OutboxRow::of(&day_reopened_event(&audit, previous))).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(audit)
    }

    async fn day_audit(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Vec<DayAudit>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, merchant_id, action, business_date, at, by, reason, closed_through_before, closed_through_after
             FROM day_audit WHERE merchant_id = $1 AND business_date BETWEEN $2 AND $3 ORDER BY seq",
        )
        .bind(merchant.as_uuid())
        .bind(from.naive())
        .bind(to.naive())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(day_audit_from_row).collect()
    }

    async fn closed_through(&self, merchant: MerchantId) -> Result<Option<BusinessDate>, StoreError> {
        let through: Option<Option<NaiveDate>> =
            sqlx::query_scalar("SELECT closed_through FROM merchants WHERE id = $1")
                .bind(merchant.as_uuid())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        through
            .flatten()
            .map(|d| BusinessDate::from_naive(d).ok_or_else(|| StoreError::Corrupt(format!("closed_through: {d}"))))
            .transpose()
    }

    async fn day_closes(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Vec<DayClose>, StoreError> {
        let rows = sqlx::query(
            "SELECT merchant_id, business_date, closed_at, closed_by, credits_minor, debits_minor, entry_count,
                    expected_balance_minor, counted_cash_minor, note
             FROM day_closes WHERE merchant_id = $1 AND business_date BETWEEN $2 AND $3 ORDER BY business_date, seq",
        )
        .bind(merchant.as_uuid())
        .bind(from.naive())
        .bind(to.naive())
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(day_close_from_row).collect()
    }

    async fn outbox_batch(&self, limit: u32) -> Result<Vec<OutboxRecord>, StoreError> {
        let rows = sqlx::query("SELECT seq, event_id, body FROM outbox ORDER BY seq LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(outbox_record).collect()
    }

    async fn outbox_events(&self, events: &[EventId]) -> Result<Vec<OutboxRecord>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = events.iter().map(|e| *e.as_uuid()).collect();
        let rows = sqlx::query("SELECT seq, event_id, body FROM outbox WHERE event_id = ANY($1) ORDER BY seq")
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(outbox_record).collect()
    }

    /// The delete is committed with `synchronous_commit = off` (for its own transaction only):
    /// the server answers before the commit's WAL reaches the disk, sparing the request a
    /// second fsync after the record's. A server crash may lose the delete; the rows then stay
    /// in the outbox and are published again by the next relay or sweep, and the queue and
    /// consolidation deduplicate the events by id. The entries and their events (the records'
    /// commits) stay fully durable; only the forgetting of published events is not.
    async fn delete_outbox(&self, seqs: &[i64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await.map_err(unavailable)?;
        sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    fn tap_outbox(&self, tap: Arc<dyn OutboxTap>) {
        self.tap.set(tap);
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
        let idle = |p: &PgPool| u32::try_from(p.num_idle()).unwrap_or(u32::MAX);
        vec![("ledger", self.pool.size(), idle(&self.pool)), ("ledger_writer", self.writer.size(), idle(&self.writer))]
    }
}

/// An outbox row as the relay reads it.
fn outbox_record(row: &PgRow) -> Result<OutboxRecord, StoreError> {
    Ok(OutboxRecord {
        seq: row.try_get("seq").map_err(corrupt("seq"))?,
        event_id: row.try_get::<Uuid, _>("event_id").map_err(corrupt("event_id"))?.hyphenated().to_string(),
        body: row.try_get("body").map_err(corrupt("body"))?,
    })
}

/// The page query: a merchant's entries of a date range in (business date, id) order, after a
/// cursor when `after`. Binds: merchant id, from, to, cursor date, cursor id, limit.
///
/// Uuids compare bytewise in Postgres and Rust alike. `entry_order(id)` never decreases as the
/// id grows (migration 7), so (business_date, entry_order(id), id) is the page order, and the
/// index on (merchant, business_date, entry_order(id)) yields it but for ties of
/// `entry_order`, which an incremental sort orders. The cursor is `>=` and `<>` rather than
/// `>`: the planner estimates a row comparison by its first column alone, and
/// `business_date > $4` holds for no row of the cursor's own day, so with `>` a full sort of
/// every later entry looked cheaper than reading the index in order.
fn page_query(after: bool) -> String {
    let after = if after {
        "AND (e.business_date, entry_order(e.id), e.id) >= ($4, entry_order($5), $5) AND e.id <> $5"
    } else {
        ""
    };
    format!(
        "SELECT {} FROM entries e
         WHERE e.merchant = {} AND e.business_date >= $2 AND e.business_date <= $3 {after}
         ORDER BY e.business_date, entry_order(e.id), e.id LIMIT $6",
        entry_columns!(),
        merchant_key!("$1"),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A page of a merchant with thousands of entries on one day, from the first one and from a
    /// cursor in the middle: the plan Postgres picks with the values bound, as the store runs it.
    async fn plans_of_a_busy_days_pages() -> Vec<String> {
        let admin = std::env::var("CASHFLOW_TEST_POSTGRES_URL").expect("CASHFLOW_TEST_POSTGRES_URL");
        let db = cashflow_db::TestDatabase::create(&admin).await.unwrap();
        let store = PostgresLedgerStore::open(db.url()).await.unwrap();
        let merchant = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO merchants (id, name, currency, time_zone, created_at)
             VALUES ($1, 'Padaria', 'BRL', 'America/Sao_Paulo', now())",
        )
        .bind(merchant)
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO entries (amount_minor, occurred_at, recorded_at, id, merchant, business_date, type,
                                  currency, description)
             SELECT 100, now(), now(), gen_random_uuid(), (SELECT seq FROM merchants WHERE id = $1),
                    '2026-12-07', 'c', 'BRL', 'Venda balcão'
             FROM generate_series(1, 5000)",
        )
        .bind(merchant)
        .execute(&store.pool)
        .await
        .unwrap();
        sqlx::query("ANALYZE entries").execute(&store.pool).await.unwrap();
        let cursor: Uuid = sqlx::query_scalar("SELECT id FROM entries ORDER BY id OFFSET 2500 LIMIT 1")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 12, 7).unwrap();
        let mut plans = Vec::new();
        for after in [false, true] {
            let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {}", page_query(after)))
                .bind(merchant)
                .bind(day - chrono::Days::new(30))
                .bind(day)
                .bind(after.then_some(day))
                .bind(after.then_some(cursor))
                .bind(100_i64)
                .fetch_all(&store.pool)
                .await
                .unwrap();
            plans.push(lines.join("\n"));
        }
        plans
    }

    #[tokio::test]
    #[cfg_attr(not(postgres_tests), ignore = "set CASHFLOW_TEST_POSTGRES_URL to run against Postgres")]
    async fn a_page_reads_the_by_date_index_in_order_and_sorts_no_more_than_its_ties() {
        for plan in plans_of_a_busy_days_pages().await {
            assert!(plan.contains("Index Scan using entries_by_business_date"), "{plan}");
            // A node line reads "Sort  (cost=…"; "Incremental Sort  (cost=…" and "Sort Key: …" do not.
            let node = |line: &str| line.trim_start().trim_start_matches("->").trim_start().to_owned();
            let full_sort = plan.lines().any(|line| node(line).starts_with("Sort  ("));
            assert!(!full_sort, "a sort of every entry of the range:\n{plan}");
        }
    }
}
