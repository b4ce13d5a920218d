//! The outbox relay: moves committed events from the ledger's outbox to the queue.
//!
//! It publishes a batch, then deletes it from the outbox. A crash in between republishes the
//! batch, which is fine: the queue deduplicates by event id and consolidation deduplicates
//! again. While the queue is down the relay backs off and retries; the ledger keeps accepting
//! entries, which wait in the outbox.
//!
//! A commit wakes the relay, which then *lingers* a few milliseconds before reading the outbox
//! (like a Kafka producer's `linger.ms`). Without it, at thousands of writes per second, every
//! group commit of the ledger would start its own publish of a handful of events, and the
//! relay's outbox reads, queue transactions and fsyncs would cost more than the writes they
//! carry; with it, one publish carries what a few milliseconds of commits produced. The price is
//! those milliseconds of consolidation lag, far inside the lag objective (p99 under a second).
//!
//! Where nothing runs between requests (a Lambda function), a request publishes what it
//! committed itself before answering: [`Committed::collect`] notes the events a piece of work
//! committed to the outbox, and [`Relay::publish_committed`] publishes those rows and only
//! those, so concurrent requests do not each publish the others' events (and each request's
//! publish stays one event long however long the outbox is).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tracing::Instrument;

use cashflow_domain::EventId;
use cashflow_events::{Event, EventPublisher, OutboundMessage};

use crate::store::{LedgerStore, OutboxRecord};

tokio::task_local! {
    /// What the work running inside [`Committed::collect`] has committed to the outbox.
    static COMMITTED: Arc<Mutex<Committed>>;
}

/// The outbox events a piece of work committed ([`Committed::collect`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The ids of the events it committed, in commit order.
    events: Vec<EventId>,
    /// It committed an event whose id the service does not learn (a day's close or reopen,
    /// whose event the store makes in the close's own transaction).
    unidentified: bool,
}

impl Committed {
    /// Runs `work` and returns, with its output, the outbox events the ledger committed while
    /// it ran, in this task (the ledger notes them when the commit returns, in the caller's
    /// task, whichever writer task wrote them). Work spawned onto other tasks is not seen.
    pub async fn collect<F: Future>(work: F) -> (F::Output, Committed) {
        let cell = Arc::new(Mutex::new(Committed::default()));
        let output = COMMITTED.scope(cell.clone(), work).await;
        let committed = cell.lock().unwrap_or_else(PoisonError::into_inner).clone();
        (output, committed)
    }

    /// Whether nothing was committed.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && !self.unidentified
    }

    /// The ids of the events committed.
    pub fn events(&self) -> &[EventId] {
        &self.events
    }
}

/// Notes that `event` was committed to the outbox (nothing outside [`Committed::collect`]).
pub(crate) fn note_committed(event: EventId) {
    let _outside = COMMITTED.try_with(|cell| cell.lock().unwrap_or_else(PoisonError::into_inner).events.push(event));
}

/// Notes that an event whose id the caller does not know was committed to the outbox.
pub(crate) fn note_committed_unidentified() {
    let _outside = COMMITTED.try_with(|cell| cell.lock().unwrap_or_else(PoisonError::into_inner).unidentified = true);
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events per publish (SQS takes at most 10 per batch call; adapters split as needed).
    pub batch_size: u32,
    /// How often to look at the outbox when nothing signalled a write (writers in other
    /// processes).
    pub poll_interval: Duration,
    /// Longest pause between retries while the queue is down.
    pub max_backoff: Duration,
    /// How long to wait after a wake-up before reading the outbox, so one publish carries
    /// several commits (see the module docs).
    pub linger: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            poll_interval: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            linger: Duration::from_millis(5),
        }
    }
}

/// The relay.
pub struct Relay {
    store: Arc<dyn LedgerStore>,
    publisher: Arc<dyn EventPublisher>,
    wake: Arc<Notify>,
    config: RelayConfig,
}

impl Relay {
    /// A relay from `store`'s outbox to `publisher`, woken by `wake`.
    pub fn new(
        store: Arc<dyn LedgerStore>,
        publisher: Arc<dyn EventPublisher>,
        wake: Arc<Notify>,
        config: RelayConfig,
    ) -> Self {
        Self { store, publisher, wake, config }
    }

    /// Publishes one batch; returns how many events it moved.
    pub async fn publish_batch(&self) -> anyhow::Result<usize> {
        let batch = self.store.outbox_batch(self.config.batch_size).await?;
        self.publish(batch).await
    }

    /// Publishes the events `committed` names that are still in the outbox (another publisher
    /// may have moved some already); returns how many it moved. If `committed` holds an event
    /// it cannot name (a day's close or reopen, a few a day), it publishes a batch instead.
    pub async fn publish_committed(&self, committed: &Committed) -> anyhow::Result<usize> {
        if committed.unidentified {
            return self.publish_batch().await;
        }
        if committed.events.is_empty() {
            return Ok(0);
        }
        let rows = self.store.outbox_events(&committed.events).await?;
        self.publish(rows).await
    }

    /// Publishes `batch`, then deletes it from the outbox.
    async fn publish(&self, batch: Vec<OutboxRecord>) -> anyhow::Result<usize> {
        if batch.is_empty() {
            return Ok(0);
        }
        let messages = batch
            .iter()
            .map(|r| Ok(OutboundMessage { event_id: EventId::parse(&r.event_id)?, body: r.body.clone() }))
            .collect::<Result<Vec<_>, cashflow_domain::IdError>>()?;
        // One span for the batch, linked to the trace of each event it carries; none when every
        // one of them was sampled out (see `all_sampled_out`).
        let traces: Vec<Option<String>> = match cashflow_http::context::span_export() {
            Some(_) => messages.iter().map(|m| Event::trace_of(&m.body)).collect(),
            None => Vec::new(),
        };
        let sampled_out = cashflow_http::context::all_sampled_out(traces.iter().map(Option::as_deref));
        let span = if sampled_out.is_some() {
            tracing::Span::none()
        } else {
            let span = tracing::debug_span!("relay.publish", events = messages.len());
            cashflow_http::context::link_all(&span, traces.iter().map(Option::as_deref));
            span
        };
        let seqs: Vec<i64> = batch.iter().map(|r| r.seq).collect();
        let publish = async {
            self.publisher.publish(&messages).await?;
            self.store.delete_outbox(&seqs).await?;
            anyhow::Ok(())
        }
        .instrument(span);
        cashflow_http::context::work_of(sampled_out.map(str::to_owned), publish).await?;
        metrics::counter!("cashflow_events_published_total").increment(batch.len() as u64);
        Ok(batch.len())
    }

    /// Publishes until the outbox is empty.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let n = self.publish_batch().await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let pause = match self.drain().await {
                Ok(_) => {
                    backoff = Duration::from_millis(50);
                    None
                }
                Err(e) => {
                    metrics::counter!("cashflow_relay_failures_total").increment(1);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed; retrying");
                    let pause = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    Some(pause)
                }
            };
            let wait = pause.unwrap_or(self.config.poll_interval);
            let woken = tokio::select! {
                _ = shutdown.changed() => false,
                _ = self.wake.notified(), if pause.is_none() => true,
                _ = tokio::time::sleep(wait) => false,
            };
            if woken && !self.config.linger.is_zero() {
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = tokio::time::sleep(self.config.linger) => {}
                }
            }
        }
    }
}
