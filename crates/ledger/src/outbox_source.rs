//! The outbox as the queue: where one process runs the consumer beside the ledger over the
//! embedded queue (`cashflow serve`), the consumer receives the events straight from the
//! ledger's outbox, and the relay and the queue's database are left out of the way.
//!
//! Why: the outbox is already a durable queue. An event is committed there with its entry, and
//! the relay only copied it into the embedded queue's own SQLite file, one more database with
//! its own commit and sync, where it was written, leased and deleted again. On a write that
//! copy cost as much server CPU as the ledger's commit itself (`queue-writer`, BENCHMARKS.md,
//! session 29). Over SQS, or between processes, the queue is the decoupling itself and stays.
//!
//! Why nothing changes for the books:
//! - An event leaves the outbox only when the consumer acknowledges it, after consolidation
//!   committed it; a crash before that delivers it again at the next start, and consolidation's
//!   deduplication markers absorb it (as when the relay republished).
//! - The consumer still never waits on the ledger's commits, nor the ledger on the consumer's:
//!   while consolidation is down, entries wait in the outbox, as they waited there while the
//!   queue was down.
//! - A delivery is leased for the queue's visibility timeout and its receive counted, as the
//!   embedded queue does, but in memory: the outbox belongs to this process's ledger, and this
//!   source is its only reader. A lease lost with the process only delivers again; the lease
//!   of an event that another process deleted (a relay run against the same ledger) is
//!   forgotten once it has run out (`forget_deleted`).
//! - A poison event (delivered the queue's `max_receives` times without being acknowledged) is
//!   set aside into the queue, whose own receive count then dead-letters it: it ends in the
//!   dead-letter table that operators and alerts read, as before.
//! - Events committed by this process's ledger are not even read back: its writers hand each
//!   committed outbox row over ([`OutboxTap`]) and it is delivered from memory, leased like
//!   the rows read. The outbox is read only when nothing was handed over, when a lease was
//!   given back, and, while the hand-over does not fill a whole receive, at least every
//!   [`OutboxSourceConfig::poll_interval`]: that read delivers
//!   what no hand-over brings (rows committed before this source existed or by other processes,
//!   rows the writers did not hand over, the hand-over's overflow, leases run out), skipping
//!   the rows still waiting in the hand-over. Under load that takes the outbox read, a query
//!   and the decoding of every row, off almost every delivery (BENCHMARKS.md, session 31).
//!   A row is delivered from memory only if no lease of it exists, so the two paths never
//!   deliver one event twice at once; a row acknowledged from a read before its hand-over is
//!   delivered once more, which consolidation's deduplication absorbs.
//! - What the queue still holds is delivered too (events published by a relay of an earlier
//!   release or of the split deployment, and the poison set aside): asked at least once every
//!   [`OutboxSourceConfig::queue_every`], and at once again while it returns full batches.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use cashflow_domain::EventId;
use cashflow_events::{Delivery, EventPublisher, EventSource, OutboundMessage, QueueError};

use crate::store::{LedgerStore, OutboxRecord, OutboxTap};

/// Most committed rows waiting in the hand-over; beyond, they wait in the outbox for a read.
/// Eight of the consumer's batches of 500 (at 30,000 writes/s, 136 ms of commits, about 2 MiB):
/// a consumer further behind than that takes its backlog from the outbox, as before.
pub const HANDED_CAPACITY: usize = 4096;

/// Settings of an [`OutboxSource`]: the queue's, so a delivery behaves as the queue's would.
#[derive(Debug, Clone)]
pub struct OutboxSourceConfig {
    /// How long a delivery stays invisible to other receives.
    pub visibility_timeout: Duration,
    /// Receives after which an event is set aside into the queue (which dead-letters it).
    pub max_receives: u32,
    /// How often an idle receive looks at the outbox when no commit of this process's ledger
    /// woke it (commits of other processes: the CLI closing a day).
    pub poll_interval: Duration,
    /// Longest time between two looks at what the queue holds.
    pub queue_every: Duration,
}

impl Default for OutboxSourceConfig {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            max_receives: 5,
            poll_interval: Duration::from_millis(200),
            queue_every: Duration::from_secs(1),
        }
    }
}

/// A delivered, unacknowledged outbox event.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Deliveries so far, this one included.
    receives: u32,
    /// Until when it is not delivered again.
    until: Instant,
}

#[derive(Debug, Default)]
struct Leases {
    /// By outbox sequence number; an entry is removed when its event is acknowledged.
    by_seq: BTreeMap<i64, Lease>,
    /// When the queue was last asked (`None`: ask at the next receive).
    queue_asked: Option<Instant>,
    /// When the outbox was last read (`None`: read it at the next receive).
    outbox_read: Option<Instant>,
}

/// Rows the ledger's writers committed, waiting to be delivered from memory.
#[derive(Debug, Default)]
struct Handed(Mutex<VecDeque<OutboxRecord>>);

impl Handed {
    fn rows(&self) -> std::sync::MutexGuard<'_, VecDeque<OutboxRecord>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl OutboxTap for Handed {
    fn committed(&self, rows: Vec<OutboxRecord>) {
        let mut handed = self.rows();
        // A commit that does not fit is left whole to the outbox reads.
        if handed.len() + rows.len() <= HANDED_CAPACITY {
            handed.extend(rows);
        }
    }
}

/// The receipt of an outbox delivery: `o<seq>:<receives>`; a queue's receipt is prefixed `q`.
const OUTBOX: char = 'o';
const QUEUE: char = 'q';

/// An [`EventSource`] over the ledger's outbox, with the queue behind it (see the module docs).
pub struct OutboxSource {
    store: Arc<dyn LedgerStore>,
    queue: Arc<dyn EventSource>,
    /// Where a poison event is set aside: the same queue.
    set_aside: Arc<dyn EventPublisher>,
    /// Signalled by the ledger after every commit that wrote an outbox event.
    wake: Arc<Notify>,
    config: OutboxSourceConfig,
    leases: Mutex<Leases>,
    /// What `store`'s writers handed over.
    handed: Arc<Handed>,
}

fn unavailable(e: impl std::fmt::Display) -> QueueError {
    QueueError::Unavailable(e.to_string())
}

impl OutboxSource {
    /// A source over `store`'s outbox, woken by `wake` (the ledger's
    /// [`outbox_signal`](crate::Ledger::outbox_signal)), with `queue` behind it. It taps
    /// `store`'s commits ([`LedgerStore::tap_outbox`]).
    pub fn new(
        store: Arc<dyn LedgerStore>,
        queue: Arc<dyn EventSource>,
        set_aside: Arc<dyn EventPublisher>,
        wake: Arc<Notify>,
        config: OutboxSourceConfig,
    ) -> Self {
        let handed = Arc::new(Handed::default());
        store.tap_outbox(handed.clone());
        Self { store, queue, set_aside, wake, config, leases: Mutex::new(Leases::default()), handed }
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What the queue holds, when it is due to be asked.
    async fn receive_queued(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let now = Instant::now();
        let due = self.leases().queue_asked.is_none_or(|asked| now.duration_since(asked) >= self.config.queue_every);
        if !due {
            return Ok(Vec::new());
        }
        let mut deliveries = self.queue.receive(max, Duration::ZERO).await?;
        // A full batch: there may be more behind it, asked for at the next receive.
        self.leases().queue_asked = if deliveries.len() >= max { None } else { Some(now) };
        for delivery in &mut deliveries {
            delivery.receipt.insert(0, QUEUE);
        }
        Ok(deliveries)
    }

    /// Up to `max` rows handed over by the ledger's writers, in commit order, that no read of
    /// the outbox delivered meanwhile.
    fn receive_handed(&self, max: usize) -> Vec<Delivery> {
        let rows: Vec<OutboxRecord> = {
            let mut handed = self.handed.rows();
            let n = handed.len().min(max);
            handed.drain(..n).collect()
        };
        if rows.is_empty() {
            return Vec::new();
        }
        let until = Instant::now() + self.config.visibility_timeout;
        let mut leases = self.leases();
        rows.into_iter()
            .filter_map(|row| match leases.by_seq.entry(row.seq) {
                Entry::Occupied(_) => None,
                Entry::Vacant(vacant) => {
                    vacant.insert(Lease { receives: 1, until });
                    Some(outbox_delivery(row, 1))
                }
            })
            .collect()
    }

    /// Whether the outbox is due to be read although rows were handed over (see the module
    /// docs).
    fn outbox_due(&self) -> bool {
        self.leases().outbox_read.is_none_or(|read| read.elapsed() >= self.config.poll_interval)
    }

    /// Up to `max` outbox events, oldest first, that are neither leased nor waiting in the
    /// hand-over.
    async fn receive_outbox(&self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        let read_at = Instant::now();
        let leased = {
            let mut leases = self.leases();
            leases.outbox_read = Some(read_at);
            leases.by_seq.values().filter(|lease| lease.until > read_at).count()
        };
        let waiting: HashSet<i64> = self.handed.rows().iter().map(|row| row.seq).collect();
        // The oldest rows, enough of them that `max` remain once those are skipped.
        let limit = u32::try_from(max.saturating_add(leased).saturating_add(waiting.len())).unwrap_or(u32::MAX);
        let rows = self.store.outbox_batch(limit).await.map_err(unavailable)?;
        let now = Instant::now();
        let until = now + self.config.visibility_timeout;
        let mut deliveries = Vec::with_capacity(rows.len().min(max));
        let mut poison = Vec::new();
        {
            let mut leases = self.leases();
            if rows.len() < limit as usize {
                forget_deleted(&mut leases, &rows, read_at);
            }
            for row in rows {
                if deliveries.len() == max {
                    break;
                }
                if waiting.contains(&row.seq) {
                    continue;
                }
                let receives = match leases.by_seq.get_mut(&row.seq) {
                    Some(lease) if lease.until > now => continue,
                    Some(lease) if lease.receives >= self.config.max_receives => {
                        poison.push(row);
                        continue;
                    }
                    Some(lease) => {
                        lease.receives += 1;
                        lease.until = until;
                        lease.receives
                    }
                    None => {
                        leases.by_seq.insert(row.seq, Lease { receives: 1, until });
                        1
                    }
                };
                deliveries.push(outbox_delivery(row, receives));
            }
        }
        if !poison.is_empty() {
            self.set_aside(poison).await?;
        }
        Ok(deliveries)
    }

    /// Moves poison events from the outbox into the queue: published first, then deleted (a
    /// crash in between leaves a copy in both, which consolidation's deduplication absorbs).
    async fn set_aside(&self, rows: Vec<OutboxRecord>) -> Result<(), QueueError> {
        let messages = rows
            .iter()
            .map(|row| Ok(OutboundMessage { event_id: EventId::parse(&row.event_id)?, body: row.body.clone() }))
            .collect::<Result<Vec<_>, cashflow_domain::IdError>>()
            .map_err(unavailable)?;
        self.set_aside.publish(&messages).await?;
        let seqs: Vec<i64> = rows.iter().map(|row| row.seq).collect();
        self.store.delete_outbox(&seqs).await.map_err(unavailable)?;
        let mut leases = self.leases();
        for seq in &seqs {
            leases.by_seq.remove(seq);
        }
        // Delivered from the queue at the next receive.
        leases.queue_asked = None;
        drop(leases);
        tracing::warn!(
            count = seqs.len(),
            receives = self.config.max_receives,
            "events never acknowledged set aside into the queue, which dead-letters them"
        );
        Ok(())
    }
}

/// Drops the leases of events no longer in the outbox: deleted by another process (a relay of
/// the split deployment run against the same ledger, say), which no acknowledgement of this
/// source would ever remove. `rows` is a read of the whole outbox, in `seq` order, started at
/// `read_at`. A lease that had run out by then was made more than a visibility timeout
/// earlier, by a read that saw its event committed; events leave the outbox only by deletion;
/// so if its event is not in `rows`, it was deleted. (A lease that had not run out may be of
/// an event committed after this read started, and is kept.)
fn forget_deleted(leases: &mut Leases, rows: &[OutboxRecord], read_at: Instant) {
    leases.by_seq.retain(|seq, lease| lease.until > read_at || rows.binary_search_by_key(seq, |row| row.seq).is_ok());
}

/// The delivery of an outbox row, received for the `receives`th time; [`split`] reads its
/// receipt back.
fn outbox_delivery(row: OutboxRecord, receives: u32) -> Delivery {
    Delivery { receipt: format!("{OUTBOX}{}:{receives}", row.seq), body: row.body, receive_count: receives }
}

/// Splits receipts into the outbox's `(seq, receives)` and the queue's own receipts.
fn split(receipts: &[String]) -> (Vec<(i64, u32)>, Vec<String>) {
    let mut outbox = Vec::new();
    let mut queue = Vec::new();
    for receipt in receipts {
        if let Some(rest) = receipt.strip_prefix(OUTBOX) {
            let parsed = rest.split_once(':').and_then(|(seq, n)| Some((seq.parse().ok()?, n.parse().ok()?)));
            outbox.extend(parsed);
        } else if let Some(rest) = receipt.strip_prefix(QUEUE) {
            queue.push(rest.to_owned());
        }
    }
    (outbox, queue)
}

#[async_trait]
impl EventSource for OutboxSource {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let mut deliveries = self.receive_queued(max).await?;
            let handed = self.receive_handed(max.saturating_sub(deliveries.len()));
            let read = deliveries.len() + handed.len() < max && (handed.is_empty() || self.outbox_due());
            deliveries.extend(handed);
            if read {
                deliveries.extend(self.receive_outbox(max - deliveries.len()).await?);
            }
            let now = Instant::now();
            if !deliveries.is_empty() || now >= deadline {
                return Ok(deliveries);
            }
            let nap = (deadline - now).min(self.config.poll_interval);
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn ack(&self, receipts: &[String]) -> Result<(), QueueError> {
        let (outbox, queue) = split(receipts);
        if !queue.is_empty() {
            self.queue.ack(&queue).await?;
        }
        // A stale receipt (its lease ran out and the event was delivered again) deletes nothing:
        // the later delivery's receipt will.
        let current: Vec<i64> = {
            let leases = self.leases();
            outbox
                .iter()
                .filter(|(seq, receives)| leases.by_seq.get(seq).is_some_and(|lease| lease.receives == *receives))
                .map(|(seq, _)| *seq)
                .collect()
        };
        if current.is_empty() {
            return Ok(());
        }
        self.store.delete_outbox(&current).await.map_err(unavailable)?;
        let mut leases = self.leases();
        for seq in &current {
            leases.by_seq.remove(seq);
        }
        Ok(())
    }

    async fn release(&self, receipts: &[String]) -> Result<(), QueueError> {
        let (outbox, queue) = split(receipts);
        if !queue.is_empty() {
            self.queue.release(&queue).await?;
        }
        let now = Instant::now();
        let mut leases = self.leases();
        for (seq, receives) in outbox {
            if let Some(lease) = leases.by_seq.get_mut(&seq).filter(|lease| lease.receives == receives) {
                lease.until = now;
            }
        }
        // Given back rows are delivered again only by a read.
        leases.outbox_read = None;
        Ok(())
    }

    async fn depth(&self) -> Result<Option<u64>, QueueError> {
        let outbox = self.store.outbox_backlog().await.map_err(unavailable)?.count;
        Ok(Some(outbox + self.queue.depth().await?.unwrap_or(0)))
    }

    async fn dead_letter_depth(&self) -> Result<Option<u64>, QueueError> {
        self.queue.dead_letter_depth().await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::{SubsecRound, Utc};

    use cashflow_domain::{Currency, Merchant, MerchantId, MerchantName, MerchantTimeZone};
    use cashflow_events::{Event, EventBody, MerchantRegistered};
    use cashflow_queue::{EmbeddedQueue, EmbeddedQueueConfig};

    use super::*;
    use crate::sqlite::SqliteLedgerStore;

    /// Registers a merchant, which commits its `MerchantRegistered` event to the outbox.
    async fn an_event(store: &Arc<dyn LedgerStore>) {
        let merchant = Merchant {
            id: MerchantId::new(),
            name: MerchantName::parse("Padaria").unwrap(),
            currency: Currency::BRL,
            time_zone: MerchantTimeZone::parse("America/Sao_Paulo").unwrap(),
            created_at: Utc::now().trunc_subsecs(6),
        };
        let event = Event::new(
            merchant.created_at,
            EventBody::MerchantRegistered(MerchantRegistered {
                merchant_id: merchant.id,
                currency: merchant.currency,
                time_zone: merchant.time_zone,
            }),
        );
        store.create_merchant(&merchant, &event).await.unwrap();
    }

    /// A source over a SQLite ledger in `dir`, with an embedded queue behind it.
    async fn a_source(dir: &std::path::Path, config: OutboxSourceConfig) -> (Arc<dyn LedgerStore>, OutboxSource) {
        let ledger = format!("sqlite://{}", dir.join("ledger.db").display());
        let store: Arc<dyn LedgerStore> = Arc::new(SqliteLedgerStore::open(&ledger).await.unwrap());
        let queue_url = format!("sqlite://{}", dir.join("queue.db").display());
        let queue = Arc::new(EmbeddedQueue::open(&queue_url, EmbeddedQueueConfig::default()).await.unwrap());
        let source = OutboxSource::new(store.clone(), queue.clone(), queue, Arc::new(Notify::new()), config);
        (store, source)
    }

    #[tokio::test]
    async fn the_lease_of_an_event_deleted_by_another_process_is_forgotten() {
        // Given a source whose leases last 50 ms, and two events it delivered
        let dir = tempfile::tempdir().unwrap();
        let config =
            OutboxSourceConfig { visibility_timeout: Duration::from_millis(50), ..OutboxSourceConfig::default() };
        let (store, source) = a_source(dir.path(), config).await;
        an_event(&store).await;
        an_event(&store).await;
        let delivered = source.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(delivered.len(), 2);

        // When another process deletes the first from the outbox, and the leases run out
        let first = store.outbox_batch(1).await.unwrap()[0].seq;
        store.delete_outbox(&[first]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;

        // Then the next receive delivers the second again and keeps no lease of the first
        let again = source.receive(10, Duration::ZERO).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(source.leases().by_seq.keys().copied().collect::<Vec<_>>(), [first + 1]);
    }

    #[tokio::test]
    async fn a_row_still_in_the_hand_over_is_not_delivered_by_a_read_of_the_outbox() {
        // Given a source over a SQLite ledger, whose writer hands every committed row over
        let dir = tempfile::tempdir().unwrap();
        let (store, source) = a_source(dir.path(), OutboxSourceConfig::default()).await;

        // When an event is committed and the outbox is read before the hand-over is taken
        an_event(&store).await;
        assert_eq!(source.handed.rows().len(), 1);
        let read = source.receive_outbox(10).await.unwrap();

        // Then the read skips it, and it is delivered once, from the hand-over
        assert!(read.is_empty());
        assert_eq!(source.receive(10, Duration::ZERO).await.unwrap().len(), 1);
        assert!(source.receive(10, Duration::ZERO).await.unwrap().is_empty());
    }

    #[test]
    fn a_commit_that_does_not_fit_the_hand_over_is_left_whole_to_the_reads() {
        let row = |seq| OutboxRecord { seq, event_id: format!("e{seq}"), body: String::new() };
        let handed = Handed::default();
        handed.committed((0..HANDED_CAPACITY as i64 - 1).map(row).collect());
        handed.committed(vec![row(10_000), row(10_001)]);
        assert_eq!(handed.rows().len(), HANDED_CAPACITY - 1);
        handed.committed(vec![row(10_002)]);
        assert_eq!(handed.rows().back().map(|row| row.seq), Some(10_002));
    }
}
