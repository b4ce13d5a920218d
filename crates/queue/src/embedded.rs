//! The embedded queue: durable in SQLite, with the contract of SQS.
//!
//! A published message is committed (`synchronous = FULL`) before `publish` returns, so an
//! event handed over by the relay survives a crash. `receive` leases messages for a
//! visibility timeout; an unacknowledged message becomes visible again and is redelivered;
//! a message received more than `max_receives` times moves to `dead_letters`.
//!
//! Only a publish must be on disk before it returns: the relay deletes the outbox rows once it
//! does. A lease and an acknowledgement commit without waiting for the disk (WAL with
//! `synchronous = NORMAL`; the next publish's sync carries them to disk too): after a power cut
//! one of them may be lost, and the message is then delivered again, which the consumer's
//! idempotence absorbs. A process crash loses neither. That saves two of the three syncs of each
//! relay and consumer round trip.
//!
//! In one process the relay wakes the consumer directly (a [`Notify`]), so an event is
//! consumed within milliseconds of being published; across processes the consumer polls.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cashflow_db::rusqlite::{self, params, TransactionBehavior};
use cashflow_db::SqliteThread;
use chrono::Utc;
use sqlx::sqlite::SqlitePool;
use tokio::sync::Notify;

use cashflow_events::{Delivery, EventPublisher, EventSource, OutboundMessage, QueueError};

const MIGRATIONS: &[cashflow_db::MigrationSource] = &[
    cashflow_db::MigrationSource {
        version: 1,
        description: "queue",
        sql: include_str!("../migrations/sqlite/0001_queue.sql"),
    },
    cashflow_db::MigrationSource {
        version: 2,
        description: "queue receive indexes",
        sql: include_str!("../migrations/sqlite/0002_queue_receive_indexes.sql"),
    },
];

/// Moves messages received too often to `dead_letters` (with [`DEAD_LETTER_DELETE`]): found
/// through `messages_by_receives`, so the check costs nothing however long the backlog is.
const DEAD_LETTER_COPY: &str = "INSERT INTO dead_letters (id, event_id, body, enqueued_at, failed_at, receive_count)
     SELECT id, event_id, body, enqueued_at, ?1, receive_count FROM messages
     WHERE visible_at <= ?1 AND receive_count >= ?2";
const DEAD_LETTER_DELETE: &str = "DELETE FROM messages WHERE visible_at <= ?1 AND receive_count >= ?2";

/// Leases the oldest visible messages. `+visible_at` keeps SQLite on the rowid order, which
/// stops after `limit` visible messages whatever the size of the backlog behind them.
const LEASE: &str = "UPDATE messages SET visible_at = ?1, receive_count = receive_count + 1
     WHERE id IN (SELECT id FROM messages WHERE +visible_at <= ?2 ORDER BY id LIMIT ?3)
     RETURNING id, body, receive_count";

/// Moves one message (a corrupt one) to `dead_letters`.
const DEAD_LETTER_ONE_COPY: &str =
    "INSERT INTO dead_letters (id, event_id, body, enqueued_at, failed_at, receive_count)
     SELECT id, event_id, body, enqueued_at, ?2, receive_count FROM messages WHERE id = ?1";

/// Hands a leased message back: visible now, receive count kept (see `EventSource::release`).
/// The receive count in the receipt makes a stale receipt release nothing.
const RELEASE: &str = "UPDATE messages SET visible_at = ?3 WHERE id = ?1 AND receive_count = ?2";
/// Deletes an acknowledged message, unless the receipt is stale (the same check).
const ACK: &str = "DELETE FROM messages WHERE id = ?1 AND receive_count = ?2";

/// A publish is on disk before it returns.
const DURABLE_SYNC: &str = "PRAGMA synchronous = FULL";
/// A lease or an acknowledgement may be lost by a power cut (see the module docs).
const LAZY_SYNC: &str = "PRAGMA synchronous = NORMAL";

/// A row of `messages` that does not decode: written by something other than this queue (or
/// damaged on disk). It is dead-lettered, never delivered.
#[derive(Debug, thiserror::Error)]
#[error("corrupt queue message {id}: {source}")]
pub struct CorruptMessage {
    /// The row id, to find it in `dead_letters`.
    pub id: i64,
    source: rusqlite::Error,
}

/// A leased row: id, body, receive count.
type Leased = (i64, String, i64);

/// One row of [`LEASE`], or why it is not a message (`rusqlite`'s `get` returns the decode
/// error; nothing here panics on a bad value).
fn decode_leased(row: &rusqlite::Row<'_>) -> Result<Leased, CorruptMessage> {
    let id: i64 = row.get(0).map_err(|source| CorruptMessage { id: -1, source })?;
    let corrupt = |source| CorruptMessage { id, source };
    Ok((id, row.get(1).map_err(corrupt)?, row.get(2).map_err(corrupt)?))
}

/// Settings of the embedded queue.
#[derive(Debug, Clone)]
pub struct EmbeddedQueueConfig {
    /// How long a received message stays invisible to other receives.
    pub visibility_timeout: Duration,
    /// Receives after which a message is dead-lettered instead of delivered again.
    pub max_receives: u32,
    /// How often an idle long poll re-checks the table (for publishers in other processes).
    pub poll_interval: Duration,
}

impl Default for EmbeddedQueueConfig {
    fn default() -> Self {
        Self { visibility_timeout: Duration::from_secs(30), max_receives: 5, poll_interval: Duration::from_millis(100) }
    }
}

/// The SQLite-backed queue.
#[derive(Clone)]
pub struct EmbeddedQueue {
    /// Publishes, receives and acknowledgements: one job each on the queue's write connection.
    writer: SqliteThread,
    /// Counts and the readiness probe.
    pool: SqlitePool,
    config: EmbeddedQueueConfig,
    /// Wakes a waiting receiver in this process when something is published.
    published: Arc<Notify>,
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl EmbeddedQueue {
    /// Opens (and migrates) the queue database at `url` (`sqlite://…`).
    pub async fn open(url: &str, config: EmbeddedQueueConfig) -> Result<Self, cashflow_db::DbError> {
        let pool = cashflow_db::open_sqlite(url, 2).await?;
        cashflow_db::migrate_sqlite(&pool, MIGRATIONS).await?;
        let writer = SqliteThread::spawn("queue-writer", cashflow_db::open_sqlite_sync(url)?)?;
        Ok(Self { writer, pool, config, published: Arc::new(Notify::new()) })
    }

    /// Readiness probe.
    pub async fn ping(&self) -> Result<(), QueueError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(unavailable)?;
        Ok(())
    }

    /// Runs `sql` once per receipt in one transaction: `?1` the message id, `?2` the receive
    /// count of the receipt, `?3` `now` when given.
    async fn per_receipt(&self, receipts: &[String], sql: &'static str, now: Option<i64>) -> Result<(), QueueError> {
        let pairs = parse_receipts(receipts);
        if pairs.is_empty() {
            return Ok(());
        }
        self.writer
            .run(move |conn| {
                conn.execute_batch(LAZY_SYNC)?;
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut statement = tx.prepare_cached(sql)?;
                    for (id, count) in &pairs {
                        match now {
                            Some(now) => statement.execute(params![id, count, now])?,
                            None => statement.execute(params![id, count])?,
                        };
                    }
                }
                tx.commit()
            })
            .await
            .map_err(unavailable)?
            .map_err(unavailable)
    }

    async fn try_receive(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let now = Utc::now().timestamp_micros();
        let lease_until = now.saturating_add(micros(self.config.visibility_timeout));
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let max_receives = i64::from(self.config.max_receives);
        let (dead, mut deliveries) = self
            .writer
            .run(move |conn| {
                // IMMEDIATE takes the write lock at once, so concurrent consumers serialize
                // instead of racing for the same rows.
                conn.execute_batch(LAZY_SYNC)?;
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.prepare_cached(DEAD_LETTER_COPY)?.execute(params![now, max_receives])?;
                let dead = tx.prepare_cached(DEAD_LETTER_DELETE)?.execute(params![now, max_receives])?;
                let rows = tx
                    .prepare_cached(LEASE)?
                    .query_map(params![lease_until, now, limit], |row| Ok(decode_leased(row)))?
                    .collect::<Result<Vec<_>, rusqlite::Error>>()?;
                let mut leased = Vec::with_capacity(rows.len());
                let mut corrupt = 0;
                for row in rows {
                    match row {
                        Ok(message) => leased.push(message),
                        Err(e) => {
                            // Never delivered (it is no event), never retried: set aside for
                            // an operator, like a message received too often.
                            tracing::error!(error = %e, "corrupt message moved to the dead-letter table");
                            tx.prepare_cached(DEAD_LETTER_ONE_COPY)?.execute(params![e.id, now])?;
                            tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?.execute(params![e.id])?;
                            corrupt += 1;
                        }
                    }
                }
                tx.commit()?;
                Ok::<_, rusqlite::Error>((dead + corrupt, leased))
            })
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        if dead > 0 {
            tracing::warn!(count = dead, "messages moved to the dead-letter table");
        }
        deliveries.sort_by_key(|(id, _, _)| *id);
        Ok(deliveries
            .into_iter()
            .map(|(id, body, count)| Delivery {
                // The receive count in the receipt makes a stale receipt (from a lease that
                // expired and was re-leased) unable to delete the message.
                receipt: format!("{id}:{count}"),
                body,
                receive_count: u32::try_from(count).unwrap_or(u32::MAX),
            })
            .collect())
    }
}

/// `(id, receive count)` of each receipt (`id:count`); a receipt of another form is ignored.
fn parse_receipts(receipts: &[String]) -> Vec<(i64, i64)> {
    receipts
        .iter()
        .filter_map(|receipt| {
            let (id, count) = receipt.split_once(':')?;
            Some((id.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

#[async_trait]
impl EventPublisher for EmbeddedQueue {
    async fn publish(&self, messages: &[OutboundMessage]) -> Result<(), QueueError> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = Utc::now().timestamp_micros();
        let rows: Vec<(String, String)> = messages.iter().map(|m| (m.event_id.to_string(), m.body.clone())).collect();
        self.writer
            .run(move |conn| {
                // One transaction (one fsync) for the batch; a message already queued (the relay
                // publishing again after a crash) is skipped.
                conn.execute_batch(DURABLE_SYNC)?;
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut insert = tx.prepare_cached(
                        "INSERT INTO messages (event_id, body, enqueued_at, visible_at) VALUES (?1, ?2, ?3, ?3)
                         ON CONFLICT (event_id) DO NOTHING",
                    )?;
                    for (event_id, body) in &rows {
                        insert.execute(params![event_id, body, now])?;
                    }
                }
                tx.commit()
            })
            .await
            .map_err(unavailable)?
            .map_err(unavailable)?;
        self.published.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl EventSource for EmbeddedQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a publish between the look and the wait
            // is not missed.
            let notified = self.published.notified();
            let batch = self.try_receive(max).await?;
            if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(batch);
            }
            let nap = self.config.poll_interval.min(deadline - tokio::time::Instant::now());
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError> {
        self.per_receipt(receipts, ACK, None).await
    }

    async fn release(&self, receipts: &[String]) -> Result<(), QueueError> {
        self.per_receipt(receipts, RELEASE, Some(Utc::now().timestamp_micros())).await?;
        // A consumer waiting in this process may take them at once.
        self.published.notify_waiters();
        Ok(())
    }

    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM messages").fetch_one(&self.pool).await.map_err(unavailable)?;
        Ok(Some(u64::try_from(n).unwrap_or(0)))
    }

    async fn dead_letter_depth(&self) -> Result<Option<u64>, QueueError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters").fetch_one(&self.pool).await.map_err(unavailable)?;
        Ok(Some(u64::try_from(n).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cashflow_domain::EventId;
    use sqlx::Row;

    async fn queue(config: EmbeddedQueueConfig) -> (tempfile::TempDir, EmbeddedQueue) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("queue.db").display());
        let q = EmbeddedQueue::open(&url, config).await.unwrap();
        (dir, q)
    }

    /// SQLite's plan for a statement, as the `detail` lines of `EXPLAIN QUERY PLAN`.
    async fn plan(q: &EmbeddedQueue, sql: &str) -> String {
        let rows = sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}")).fetch_all(&q.pool).await.unwrap();
        rows.iter().map(|r| r.get::<String, _>("detail")).collect::<Vec<_>>().join("; ")
    }

    #[tokio::test]
    async fn a_receive_never_walks_the_backlog() {
        // A plan, not a timing: with a million queued messages, a statement that reads every
        // visible one made each receive take a third of a second.
        let (_dir, q) = queue(EmbeddedQueueConfig::default()).await;
        for sql in [DEAD_LETTER_COPY, DEAD_LETTER_DELETE] {
            let plan = plan(&q, sql).await;
            assert!(plan.contains("USING INDEX messages_by_receives (receive_count>?)"), "{sql}: {plan}");
        }
        let lease = plan(&q, LEASE).await;
        assert!(lease.contains("SCAN messages") && !lease.contains("TEMP B-TREE"), "{lease}");
        assert!(!lease.contains("messages_by_visibility"), "{lease}");
    }

    fn message(body: &str) -> OutboundMessage {
        OutboundMessage { event_id: EventId::new(), body: body.into() }
    }

    #[tokio::test]
    async fn a_published_message_is_received_and_gone_once_acknowledged() {
        let (_dir, q) = queue(EmbeddedQueueConfig::default()).await;
        q.publish(&[message("a"), message("b")]).await.unwrap();
        let got = q.receive(10, Duration::from_millis(10)).await.unwrap();
        assert_eq!(got.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        q.ack(&got.iter().map(|d| d.receipt.clone()).collect::<Vec<_>>()).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), Some(0));
    }

    #[tokio::test]
    async fn an_unacknowledged_message_is_redelivered_after_its_visibility_timeout() {
        let config = EmbeddedQueueConfig { visibility_timeout: Duration::from_millis(50), ..Default::default() };
        let (_dir, q) = queue(config).await;
        q.publish(&[message("a")]).await.unwrap();
        let first = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty(), "leased messages are invisible");
        tokio::time::sleep(Duration::from_millis(80)).await;
        let again = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].receive_count, 2);
        // The stale receipt of the first lease no longer deletes the message.
        q.ack(&[first[0].receipt.clone()]).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn a_released_message_is_receivable_at_once_and_keeps_its_receive_count() {
        // Given a message leased for far longer than the test
        let (_dir, q) = queue(EmbeddedQueueConfig::default()).await;
        q.publish(&[message("a")]).await.unwrap();
        let first = q.receive(10, Duration::ZERO).await.unwrap();
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty(), "leased");
        // When the consumer hands it back
        q.release(&[first[0].receipt.clone()]).await.unwrap();
        // Then the next receive gets it, counted as a second receive
        let again = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].receive_count, 2);
        // And the stale receipt of the first lease releases nothing
        q.release(&[first[0].receipt.clone()]).await.unwrap();
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty(), "still leased to the second receive");
    }

    #[tokio::test]
    async fn a_message_released_after_every_receive_is_still_dead_lettered() {
        let config = EmbeddedQueueConfig { max_receives: 3, ..Default::default() };
        let (_dir, q) = queue(config).await;
        q.publish(&[message("poison")]).await.unwrap();
        for _ in 0..3 {
            let got = q.receive(10, Duration::ZERO).await.unwrap();
            assert_eq!(got.len(), 1);
            q.release(&[got[0].receipt.clone()]).await.unwrap();
        }
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(q.dead_letter_depth().await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn a_message_received_too_often_is_dead_lettered() {
        let config = EmbeddedQueueConfig { visibility_timeout: Duration::ZERO, max_receives: 2, ..Default::default() };
        let (_dir, q) = queue(config).await;
        q.publish(&[message("poison")]).await.unwrap();
        assert_eq!(q.receive(10, Duration::ZERO).await.unwrap().len(), 1);
        assert_eq!(q.receive(10, Duration::ZERO).await.unwrap().len(), 1);
        assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());
        assert_eq!(q.dead_letter_depth().await.unwrap(), Some(1));
        assert_eq!(q.depth().await.unwrap(), Some(0));
    }

    #[tokio::test]
    async fn a_corrupt_row_is_dead_lettered_and_the_rest_delivered() {
        // Given a good message and, behind it, a row whose body is not text (written into
        // queue.db by something other than this queue)
        let (_dir, q) = queue(EmbeddedQueueConfig::default()).await;
        q.publish(&[message("good")]).await.unwrap();
        sqlx::query(
            "INSERT INTO messages (event_id, body, enqueued_at, visible_at) VALUES ('corrupt', X'FFFE00', 0, 0)",
        )
        .execute(&q.pool)
        .await
        .unwrap();
        // When a consumer receives
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        // Then the good message is delivered, and the corrupt one set aside, not redelivered
        assert_eq!(got.iter().map(|d| d.body.as_str()).collect::<Vec<_>>(), ["good"]);
        assert_eq!(q.dead_letter_depth().await.unwrap(), Some(1));
        assert_eq!(q.depth().await.unwrap(), Some(1), "only the good message is left, leased");
    }

    #[test]
    fn a_body_that_is_not_text_is_a_typed_error() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let err = conn.query_row("SELECT 7, X'FFFE00', 1", [], |row| Ok(decode_leased(row))).unwrap().unwrap_err();
        assert_eq!(err.id, 7);
        assert!(err.to_string().starts_with("corrupt queue message 7"), "{err}");
    }

    #[tokio::test]
    async fn publishing_the_same_event_twice_enqueues_it_once() {
        let (_dir, q) = queue(EmbeddedQueueConfig::default()).await;
        let m = message("x");
        q.publish(std::slice::from_ref(&m)).await.unwrap();
        q.publish(&[m]).await.unwrap();
        assert_eq!(q.depth().await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn a_long_poll_wakes_up_when_a_message_is_published() {
        let config = EmbeddedQueueConfig { poll_interval: Duration::from_secs(10), ..Default::default() };
        let (_dir, q) = queue(config).await;
        let receiver = q.clone();
        let waiting = tokio::spawn(async move { receiver.receive(10, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        q.publish(&[message("wake")]).await.unwrap();
        let got = waiting.await.unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(2), "woken by the publish, not the poll");
    }

    #[tokio::test]
    async fn messages_survive_reopening_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("queue.db").display());
        {
            let q = EmbeddedQueue::open(&url, EmbeddedQueueConfig::default()).await.unwrap();
            q.publish(&[message("durable")]).await.unwrap();
        }
        let q = EmbeddedQueue::open(&url, EmbeddedQueueConfig::default()).await.unwrap();
        let got = q.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(got[0].body, "durable");
    }
}
