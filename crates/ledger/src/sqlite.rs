//! The SQLite ledger store of the embedded default.
//!
//! SQLite has one writer at a time and every acknowledged write must be on disk
//! (`synchronous = FULL`), so the cost of a write is dominated by the fsync of its commit. Writes
//! therefore go through one *writer task* that owns the single write connection and commits
//! them in groups (group commit): it drains a bounded channel of pending requests, applies up to
//! [`MAX_BATCH`] of them in one transaction, and answers each caller only after the `COMMIT`
//! returned. Reads use their own pool and never block the writer (WAL).
//!
//! # Why a batch behaves exactly like the same requests one after the other
//! - Requests are applied in arrival order in one transaction, so a request sees everything the
//!   earlier ones of its batch wrote: a second use of an idempotency key replays (or conflicts
//!   with) the first, a second reversal of an entry is refused.
//! - The expected refusals (idempotency replay or conflict, `AlreadyReversed`,
//!   `MerchantExists`) come from the first statement of a request failing on a unique
//!   constraint; SQLite then backs out that statement only and the transaction stays usable, so
//!   the refused request has written nothing and the others are untouched. No savepoints are
//!   needed on this path.
//! - Any other failure could leave a request half-written (an entry without its outbox event),
//!   so the whole transaction is rolled back and the batch is replayed one request per
//!   transaction: each request then gets exactly the answer it would have had alone.
//! - Nothing is answered before the `COMMIT` returned; if it fails, every request of the batch
//!   gets the error, including those whose answer was a replay or a refusal (it may rest on a
//!   write of the same batch that is now gone).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use cashflow_domain::{
    Amount, BusinessDate, Category, Currency, Description, Entry, EntryId, Merchant, MerchantId, MerchantName,
    MerchantTimeZone,
};
use cashflow_events::Event;

use crate::store::{EntryQuery, Idempotency, LedgerStore, OutboxBacklog, OutboxRecord, Recorded, StoreError};

/// The most requests one transaction commits. Large enough that one fsync serves every request
/// that arrived while the previous commit was on its way to disk, small enough to bound how long
/// one transaction holds SQLite's write lock.
pub const MAX_BATCH: usize = 512;

/// Requests waiting for the writer before callers wait to enqueue (backpressure).
const QUEUE_CAPACITY: usize = 2 * MAX_BATCH;

const MIGRATIONS: &[cashflow_db::MigrationSource] = &[cashflow_db::MigrationSource {
    version: 1,
    description: "ledger",
    sql: include_str!("../migrations/sqlite/0001_ledger.sql"),
}];

/// The SQLite implementation of [`LedgerStore`].
#[derive(Clone)]
pub struct SqliteLedgerStore {
    /// Exactly one connection, SQLite's single writer; used only by the writer task (kept here
    /// for pool metrics).
    writer: SqlitePool,
    /// Pending writes for the writer task; when the last clone of the store is dropped the
    /// channel closes and the task ends.
    writes: mpsc::Sender<WriteRequest>,
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

/// The columns of an entry, as `entry_from_row` reads them.
macro_rules! entry_columns {
    () => {
        "id, merchant_id, type, amount_minor, currency, description, category, occurred_at, business_date, \
         recorded_at, reversal_of"
    };
}
const ENTRY_COLUMNS: &str = entry_columns!();

// The writer's statements. Their text never changes, so sqlx prepares each once per connection
// and reuses it from its statement cache.
const INSERT_ENTRY: &str = "INSERT INTO entries (id, merchant_id, type, amount_minor, currency, description, category,
                                     occurred_at, business_date, recorded_at, reversal_of, idempotency_key,
                                     request_hash)
                            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
const SELECT_BY_IDEMPOTENCY_KEY: &str =
    concat!("SELECT ", entry_columns!(), ", request_hash FROM entries WHERE merchant_id = ?1 AND idempotency_key = ?2");
const INSERT_MERCHANT: &str =
    "INSERT INTO merchants (id, name, currency, time_zone, created_at) VALUES (?1, ?2, ?3, ?4, ?5)";
const INSERT_OUTBOX: &str = "INSERT INTO outbox (event_id, body, created_at) VALUES (?1, ?2, ?3)";
/// Many entries in one statement, from a JSON array of rows in `INSERT_ENTRY`'s column order
/// (one statement text whatever the batch size).
const INSERT_ENTRIES: &str =
    "INSERT INTO entries (id, merchant_id, type, amount_minor, currency, description, category,
                                       occurred_at, business_date, recorded_at, reversal_of, idempotency_key,
                                       request_hash)
                              SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6,
                                     value->>7, value->>8, value->>9, value->>10, value->>11, value->>12
                              FROM json_each(?1) ORDER BY key";
/// Many outbox rows in one statement, in array order (which becomes `seq` order).
const INSERT_OUTBOXES: &str = "INSERT INTO outbox (event_id, body, created_at)
                               SELECT value->>0, value->>1, value->>2 FROM json_each(?1) ORDER BY key";
/// One statement text for any number of sequence numbers (a JSON array).
const DELETE_OUTBOX: &str = "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?1))";

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
    /// Opens and migrates the ledger database at `url` (`sqlite://…`), and starts its writer
    /// task on the current Tokio runtime.
    pub async fn open(url: &str) -> Result<Self, cashflow_db::DbError> {
        let writer = cashflow_db::open_sqlite(url, 1).await?;
        cashflow_db::migrate_sqlite(&writer, MIGRATIONS).await?;
        let reader = cashflow_db::open_sqlite(url, 4).await?;
        let (writes, requests) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run_writer(writer.clone(), requests));
        Ok(Self { writer, writes, reader })
    }

    /// Hands a write to the writer task and waits until it is committed (or refused).
    async fn write(&self, op: WriteOp) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writes.send(WriteRequest { op, reply }).await.map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }
}

fn writer_stopped() -> StoreError {
    StoreError::Unavailable("the ledger writer task has stopped".to_owned())
}

/// An event as its outbox row, serialized by the caller so the writer task only binds values.
struct OutboxRow {
    event_id: String,
    body: String,
    created_at: i64,
    /// The row as a JSON array, for `INSERT_OUTBOXES`.
    json: String,
}

impl OutboxRow {
    fn of(event: &Event) -> Result<Self, StoreError> {
        let event_id = event.event_id.to_string();
        let body = event.to_json();
        let created_at = event.occurred_at.timestamp_micros();
        let json = serde_json::to_string(&(&event_id, &body, created_at)).map_err(corrupt("outbox row"))?;
        Ok(Self { event_id, body, created_at, json })
    }
}

/// One write the writer task applies.
enum WriteOp {
    CreateMerchant {
        merchant: Merchant,
        outbox: OutboxRow,
    },
    Record {
        /// Boxed: it is the bulk of the biggest variant, and the queue holds many.
        entry: Box<Entry>,
        /// The entry's text columns, formatted by the caller.
        id: String,
        merchant_id: String,
        business_date: String,
        reversal_of: Option<String>,
        idempotency: Option<Idempotency>,
        /// The entry's row as a JSON array, for `INSERT_ENTRIES`.
        json: String,
        outbox: OutboxRow,
    },
    DeleteOutbox {
        /// The sequence numbers as a JSON array.
        seqs: String,
    },
}

/// What a successful write produced.
enum Written {
    /// A merchant was created or outbox rows were deleted.
    Done,
    /// An entry was recorded or replayed.
    Recorded(Recorded),
}

/// A write and where its caller waits for the answer.
struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// Why a batch committed nothing.
enum BatchFailure {
    /// A request failed in a way that may have left it half-written; the transaction was
    /// rolled back.
    Request(sqlx::Error),
    /// Beginning or committing the transaction failed.
    Transaction(sqlx::Error),
}

/// The writer task: commits pending writes in groups until every store handle is dropped.
async fn run_writer(pool: SqlitePool, mut requests: mpsc::Receiver<WriteRequest>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write_batch(&pool, &mut batch).await;
    }
}

/// Commits `batch` in one transaction and answers every request once the commit returned,
/// leaving `batch` empty.
async fn write_batch(pool: &SqlitePool, batch: &mut Vec<WriteRequest>) {
    metrics::histogram!("cashflow_ledger_write_batch_size").record(batch.len() as f64);
    match commit(pool, batch.iter().map(|r| &r.op)).await {
        Ok(results) => {
            for (request, result) in batch.drain(..).zip(results) {
                // A caller that stopped waiting (a dropped request) no longer needs the answer.
                let _ = request.reply.send(result);
            }
        }
        Err(BatchFailure::Request(e)) if batch.len() > 1 => {
            // Rolled back: replay the batch one request per transaction, so that only the
            // request at fault fails, exactly as it would have alone.
            tracing::warn!(error = %e, requests = batch.len(), "a ledger write failed; retrying its batch one by one");
            for request in batch.drain(..) {
                let result = match commit(pool, std::iter::once(&request.op)).await {
                    Ok(mut results) => results.pop().unwrap_or_else(|| Err(writer_stopped())),
                    Err(BatchFailure::Request(e) | BatchFailure::Transaction(e)) => Err(unavailable(e)),
                };
                let _ = request.reply.send(result);
            }
        }
        Err(BatchFailure::Request(e) | BatchFailure::Transaction(e)) => {
            // Nothing of the batch is on disk: nobody is acknowledged.
            let message = e.to_string();
            for request in batch.drain(..) {
                let _ = request.reply.send(Err(StoreError::Unavailable(message.clone())));
            }
        }
    }
}

/// Applies `ops` in order in one transaction and commits it. Returns each request's answer:
/// written, or refused without having written anything.
async fn commit<'a>(
    pool: &SqlitePool,
    ops: impl Iterator<Item = &'a WriteOp>,
) -> Result<Vec<Result<Written, StoreError>>, BatchFailure> {
    // IMMEDIATE takes the write lock up front (waiting for the busy timeout if another process
    // holds it) instead of upgrading a read lock later, which SQLite may refuse outright.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(BatchFailure::Transaction)?;
    let ops: Vec<&WriteOp> = ops.collect();
    let mut results = Vec::with_capacity(ops.len());
    let mut rest = &ops[..];
    while let Some(first) = rest.first() {
        // A run of consecutive entries is first tried as two statements (all the entries, all
        // their events): the usual case, and much cheaper than two statements per entry.
        let run = if matches!(first, WriteOp::Record { .. }) {
            rest.iter().take_while(|op| matches!(op, WriteOp::Record { .. })).count()
        } else {
            1
        };
        let (ops, after) = rest.split_at(run);
        rest = after;
        if run > 1 {
            match insert_entries(&mut tx, ops).await {
                Ok(true) => {
                    results.extend(ops.iter().map(|op| Ok(created(op))));
                    continue;
                }
                // A constraint refused one of them (SQLite backed the statement out): take the
                // run one by one, so each gets its own answer.
                Ok(false) => {}
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(BatchFailure::Request(e));
                }
            }
        }
        for op in ops {
            match apply(&mut tx, op).await {
                Ok(result) => results.push(result),
                Err(e) => {
                    // A failed rollback leaves the transaction to sqlx, which rolls it back when
                    // `tx` is dropped, before the connection serves anything else.
                    let _ = tx.rollback().await;
                    return Err(BatchFailure::Request(e));
                }
            }
        }
    }
    tx.commit().await.map_err(BatchFailure::Transaction)?;
    Ok(results)
}

/// Inserts a run of entries and their events with one statement each. `Ok(false)`: a constraint
/// refused the entries and nothing was written (the transaction goes on).
async fn insert_entries(conn: &mut SqliteConnection, ops: &[&WriteOp]) -> Result<bool, sqlx::Error> {
    let (mut entries, mut events) = (String::from("["), String::from("["));
    for op in ops {
        if let WriteOp::Record { json, outbox, .. } = op {
            if entries.len() > 1 {
                entries.push(',');
                events.push(',');
            }
            entries.push_str(json);
            events.push_str(&outbox.json);
        }
    }
    entries.push(']');
    events.push(']');
    match sqlx::query(INSERT_ENTRIES).bind(entries).execute(&mut *conn).await {
        Ok(_) => {}
        Err(sqlx::Error::Database(e)) if e.kind() != sqlx::error::ErrorKind::Other => return Ok(false),
        Err(e) => return Err(e),
    }
    sqlx::query(INSERT_OUTBOXES).bind(events).execute(&mut *conn).await?;
    Ok(true)
}

/// The answer to a record that was written.
fn created(op: &WriteOp) -> Written {
    match op {
        WriteOp::Record { entry, .. } => Written::Recorded(Recorded::Created(Entry::clone(entry))),
        WriteOp::CreateMerchant { .. } | WriteOp::DeleteOutbox { .. } => Written::Done,
    }
}

/// Applies one write inside the batch's transaction. `Ok(Err(_))` is an expected refusal whose
/// statement SQLite backed out on its own (the transaction goes on); `Err(_)` is anything else,
/// after which the transaction must be rolled back.
async fn apply(conn: &mut SqliteConnection, op: &WriteOp) -> Result<Result<Written, StoreError>, sqlx::Error> {
    match op {
        WriteOp::CreateMerchant { merchant, outbox } => {
            let inserted = sqlx::query(INSERT_MERCHANT)
                .bind(merchant.id.to_string())
                .bind(merchant.name.as_str())
                .bind(merchant.currency.code())
                .bind(merchant.time_zone.name())
                .bind(merchant.created_at.timestamp_micros())
                .execute(&mut *conn)
                .await;
            match inserted {
                Ok(_) => {}
                Err(e) if unique_violation_on(&e, "merchants.id") => return Ok(Err(StoreError::MerchantExists)),
                Err(e) => return Err(e),
            }
            insert_outbox(conn, outbox).await?;
            Ok(Ok(Written::Done))
        }
        WriteOp::Record { entry, id, merchant_id, business_date, reversal_of, idempotency, outbox, .. } => {
            let inserted = sqlx::query(INSERT_ENTRY)
                .bind(id.as_str())
                .bind(merchant_id.as_str())
                .bind(entry.kind.as_str())
                .bind(entry.amount.minor())
                .bind(entry.currency.code())
                .bind(entry.description.as_str())
                .bind(entry.category.as_ref().map(Category::as_str))
                .bind(entry.occurred_at.timestamp_micros())
                .bind(business_date.as_str())
                .bind(entry.recorded_at.timestamp_micros())
                .bind(reversal_of.as_deref())
                .bind(idempotency.as_ref().map(|i| i.key.as_str()))
                .bind(idempotency.as_ref().map(|i| i.request_hash.as_str()))
                .execute(&mut *conn)
                .await;
            match inserted {
                Ok(_) => {}
                Err(e) if unique_violation_on(&e, "idempotency_key") => {
                    let Some(idem) = idempotency else { return Err(e) };
                    // Sees the writes of earlier requests of the same batch: a key used twice
                    // in one batch replays or conflicts exactly as if the requests were apart.
                    let row = sqlx::query(SELECT_BY_IDEMPOTENCY_KEY)
                        .bind(merchant_id.as_str())
                        .bind(&idem.key)
                        .fetch_one(&mut *conn)
                        .await?;
                    let stored_hash: Option<String> = row.get("request_hash");
                    return Ok(if stored_hash.as_deref() == Some(idem.request_hash.as_str()) {
                        entry_from_row(&row).map(|e| Written::Recorded(Recorded::Replayed(e)))
                    } else {
                        Err(StoreError::IdempotencyConflict)
                    });
                }
                Err(e) if unique_violation_on(&e, "reversal_of") => return Ok(Err(StoreError::AlreadyReversed)),
                Err(e) => return Err(e),
            }
            insert_outbox(conn, outbox).await?;
            Ok(Ok(created(op)))
        }
        WriteOp::DeleteOutbox { seqs } => {
            sqlx::query(DELETE_OUTBOX).bind(seqs.as_str()).execute(&mut *conn).await?;
            Ok(Ok(Written::Done))
        }
    }
}

async fn insert_outbox(conn: &mut SqliteConnection, row: &OutboxRow) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_OUTBOX)
        .bind(row.event_id.as_str())
        .bind(row.body.as_str())
        .bind(row.created_at)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait]
impl LedgerStore for SqliteLedgerStore {
    #[tracing::instrument(skip_all, fields(merchant_id = %merchant.id))]
    async fn create_merchant(&self, merchant: &Merchant, event: &Event) -> Result<(), StoreError> {
        let op = WriteOp::CreateMerchant { merchant: merchant.clone(), outbox: OutboxRow::of(event)? };
        self.write(op).await.map(|_| ())
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
        let id = entry.id.to_string();
        let merchant_id = entry.merchant_id.to_string();
        let business_date = entry.business_date.to_string();
        let reversal_of = entry.reversal_of.map(|id| id.to_string());
        // In INSERT_ENTRIES' column order.
        let json = serde_json::to_string(&(
            &id,
            &merchant_id,
            entry.kind.as_str(),
            entry.amount.minor(),
            entry.currency.code(),
            entry.description.as_str(),
            entry.category.as_ref().map(Category::as_str),
            entry.occurred_at.timestamp_micros(),
            &business_date,
            entry.recorded_at.timestamp_micros(),
            &reversal_of,
            idempotency.map(|i| i.key.as_str()),
            idempotency.map(|i| i.request_hash.as_str()),
        ))
        .map_err(corrupt("entry row"))?;
        let op = WriteOp::Record {
            id,
            merchant_id,
            business_date,
            reversal_of,
            entry: Box::new(entry.clone()),
            idempotency: idempotency.cloned(),
            json,
            outbox: OutboxRow::of(event)?,
        };
        match self.write(op).await? {
            Written::Recorded(recorded) => Ok(recorded),
            Written::Done => Err(StoreError::Unavailable("the ledger writer gave no entry back".to_owned())),
        }
    }

    async fn entry(&self, merchant: MerchantId, id: EntryId) -> Result<Option<Entry>, StoreError> {
        let row = sqlx::query(concat!("SELECT ", entry_columns!(), " FROM entries WHERE id = ?1 AND merchant_id = ?2"))
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
        let list: Vec<String> = seqs.iter().map(i64::to_string).collect();
        self.write(WriteOp::DeleteOutbox { seqs: format!("[{}]", list.join(",")) }).await.map(|_| ())
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
