//! The consumer: takes events from the queue and applies them to the consolidation store.
//!
//! Deliveries are at least once, in any order, possibly duplicated. A batch is applied in one
//! transaction that also records each event id, so a redelivered event changes nothing; only
//! after the commit are the messages acknowledged. A crash between commit and ack means a
//! redelivery, which the dedupe absorbs. A message that cannot be parsed or applied is left
//! unacknowledged: the queue redelivers it and, after too many receives, dead-letters it,
//! while the rest of its batch is applied and acknowledged.
//!
//! After a batch that was not full the consumer *lingers* before the next receive, so that under
//! load each receive, transaction and acknowledgement carries many events instead of the one or
//! two published since the last look (each costs a commit); a full batch means a backlog, and
//! the next receive follows at once. The linger is counted from the batch's receive, not from
//! the end of its transaction: a consumer that took longer than that to apply the batch has
//! batched enough meanwhile and receives at once. Every event waits out at most one linger in
//! the queue, so the linger is a share of the consolidation lag: 3 ms keeps the lag's p99
//! under 20 ms at 15,000 writes/s, where a 10 ms pause after each batch made it 47 ms, for
//! 3 % more CPU per entry (BENCHMARKS.md, session 24).
//!
//! When the store fails (its database is down, say), the batch is *released*: handed back to
//! the queue at once instead of staying leased until its visibility timeout, so it is applied
//! as soon as the store is back rather than up to a timeout later. Until then the consumer
//! does not receive: it probes the store ([`ConsolidationStore::ping`]) with its backoff. So an
//! outage costs each message one receive, not one per retry, and healthy messages do not reach
//! the dead-letter queue because the database was down; a release keeps the receive count, so
//! a message that makes the store fail every time still does.
//!
//! # Spans
//! A receive that brings messages is a `queue.receive` span; the batch is a
//! `consolidation.batch` span (following it) holding the store's transaction, the cache
//! invalidation and the acknowledgement. Each event also gets its own `consolidation.apply`
//! span, a child of the span that wrote it (the request's, through the `traceparent` the event
//! carries), covering its batch's transaction to its acknowledgement. One span per event
//! rather than one batch span with links: the issue's question is "what happened to *this*
//! entry", and a trace viewer answers it only for spans inside the request's trace; a batch
//! span linked to hundreds of traces shows in none of them. The batch span is still there for
//! the consumer's own view, and each event's span follows it. A batch whose every event was
//! sampled out makes neither: no event span, and no batch span, store, cache or
//! acknowledgement span either (they would be traces of their own, linked to nothing exported).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use cashflow_events::{Event, EventSource};

use crate::cache::ReportCache;
use crate::store::{ConsolidationStore, StoreError};

/// Counters of what a batch did, and the consolidation lag: from the event's `occurred_at` (for
/// an entry, its `recorded_at`, taken when the ledger took the request, before its commit) to
/// its effect being committed here. That is what a merchant waits from recording a sale to
/// seeing it in the balance, the write's own commit included.
fn record_applied(events: &[Event], summary: &crate::store::ApplySummary) {
    metrics::counter!("cashflow_events_applied_total").increment(summary.applied.len() as u64);
    metrics::counter!("cashflow_events_duplicate_total").increment(summary.duplicates.len() as u64);
    metrics::counter!("cashflow_events_rejected_total").increment(summary.rejected.len() as u64);
    let now = chrono::Utc::now();
    let applied: std::collections::HashSet<_> = summary.applied.iter().collect();
    let lag = metrics::histogram!("cashflow_consolidation_lag_seconds");
    for event in events.iter().filter(|e| applied.contains(&e.event_id)) {
        let seconds = (now - event.occurred_at).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        lag.record(seconds.max(0.0));
    }
}

/// Whether a batch's own spans are made: unless spans are exported and every event in it
/// belongs to a trace sampled out. Such a batch's spans would be roots of traces of their own
/// (sampled by the ratio, linked to nothing exported), and making them for the exporting
/// subscriber to drop was most of what 1 % sampling added to a write's instructions
/// (BENCHMARKS.md, session 26). The batch is then applied as work of one of those traces, so
/// that the spans of the code it calls are refused too.
#[derive(Debug, Clone, Copy)]
struct Spans {
    traced: bool,
}

impl Spans {
    fn make(self, span: impl FnOnce() -> tracing::Span) -> tracing::Span {
        if self.traced {
            span()
        } else {
            tracing::Span::none()
        }
    }
}

/// The span of one event's consolidation: a child of the span that recorded it, linked to its
/// batch's span (`batch`); none when that request's trace was sampled out (the decision it
/// carries in its `traceparent`), so a sampled-out entry costs the consumer no span either.
fn event_span(event: &Event, batch: Option<&str>) -> cashflow_http::context::WorkSpan {
    cashflow_http::context::work_span("consolidation.apply", event.trace.as_deref(), batch)
        .with("event_id", event.event_id)
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Messages per receive and per transaction.
    pub batch_size: usize,
    /// Long-poll wait of one receive.
    pub wait: Duration,
    /// Longest pause between retries while the queue or the store is down.
    pub max_backoff: Duration,
    /// After a batch that was not full, the least time from its receive to the next one (see
    /// the module docs).
    pub linger: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            wait: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            linger: Duration::from_millis(3),
        }
    }
}

/// The consumer.
pub struct Consumer {
    store: Arc<dyn ConsolidationStore>,
    source: Arc<dyn EventSource>,
    cache: Arc<dyn ReportCache>,
    config: ConsumerConfig,
}

impl Consumer {
    /// A consumer from `source` into `store`, invalidating `cache`.
    pub fn new(
        store: Arc<dyn ConsolidationStore>,
        source: Arc<dyn EventSource>,
        cache: Arc<dyn ReportCache>,
        config: ConsumerConfig,
    ) -> Self {
        Self { store, source, cache, config }
    }

    /// Receives and applies one batch; returns how many messages were acknowledged.
    pub async fn poll_once(&self, wait: Duration) -> anyhow::Result<usize> {
        Ok(self.poll(wait).await?.map_or(0, |(acked, _)| acked))
    }

    /// [`Self::poll_once`], with when the batch was received (`None` when nothing came).
    async fn poll(&self, wait: Duration) -> anyhow::Result<Option<(usize, Instant)>> {
        let receive = tracing::debug_span!("queue.receive", messages = tracing::field::Empty);
        let deliveries = self.source.receive(self.config.batch_size, wait).instrument(receive.clone()).await?;
        if deliveries.is_empty() {
            return Ok(None);
        }
        let received = Instant::now();
        receive.record("messages", deliveries.len());
        // A batch whose every event was sampled out is applied as work of one of their traces:
        // no span of it is exported (see `Spans`).
        let sampled_out = cashflow_http::context::all_sampled_out(deliveries.iter().map(|d| Event::trace_of(&d.body)));
        let spans = Spans { traced: sampled_out.is_none() };
        let batch = spans.make(|| tracing::debug_span!("consolidation.batch", messages = deliveries.len()));
        batch.follows_from(&receive);
        drop(receive);
        let apply = self.apply_batch(deliveries, spans).instrument(batch);
        Ok(Some((cashflow_http::context::work_of(sampled_out, apply).await?, received)))
    }

    /// Applies and acknowledges what one receive brought.
    async fn apply_batch(&self, deliveries: Vec<cashflow_events::Delivery>, spans: Spans) -> anyhow::Result<usize> {
        let mut events = Vec::with_capacity(deliveries.len());
        let mut receipts = Vec::with_capacity(deliveries.len());
        for delivery in &deliveries {
            match Event::from_json(&delivery.body) {
                Ok(event) => {
                    events.push(event);
                    receipts.push(Some(delivery.receipt.clone()));
                }
                Err(e) => {
                    metrics::counter!("cashflow_events_poison_total").increment(1);
                    tracing::warn!(error = %e, receive_count = delivery.receive_count, "poison message left for the dead-letter queue");
                    receipts.push(None);
                }
            }
        }
        // Each event's span, open until its batch is acknowledged (see the module docs).
        let batch = cashflow_http::context::traceparent_of_span(&tracing::Span::current());
        let _event_spans: Vec<_> = events.iter().map(|event| event_span(event, batch.as_deref())).collect();
        let apply = spans.make(|| tracing::debug_span!("consolidation.store_apply", events = events.len()));
        let summary = match self.store.apply(&events).instrument(apply).await {
            Ok(summary) => summary,
            Err(e) => {
                let leased: Vec<String> = deliveries.iter().map(|d| d.receipt.clone()).collect();
                if let Err(release) = self.source.release(&leased).await {
                    // They reappear after their visibility timeout instead.
                    tracing::warn!(error = %release, "failed batch not released");
                }
                return Err(e.into());
            }
        };
        record_applied(&events, &summary);
        for event in &events {
            // Joins the producing request's trace: the same trace id as the ledger's log line.
            tracing::debug!(
                event_id = %event.event_id,
                trace_id = event.trace.as_deref().and_then(|t| t.split('-').nth(1)).unwrap_or(""),
                "event consolidated"
            );
        }
        let rejected: std::collections::HashSet<_> = summary.rejected.iter().collect();
        // Duplicates invalidate too: a redelivery after a crash between the commit and the
        // invalidation is what heals a cache that missed it (Redis outlives our process).
        let mut changed_from = summary.changed_from.clone();
        for event in events.iter().filter(|e| !rejected.contains(&e.event_id)) {
            if let Some((merchant, from)) = event.changes_reports_from() {
                changed_from.entry(merchant).and_modify(|d| *d = (*d).min(from)).or_insert(from);
            }
        }
        async {
            for (merchant, from) in &changed_from {
                self.cache.invalidate(*merchant, *from).await;
            }
        }
        .instrument(spans.make(|| tracing::debug_span!("cache.invalidate", merchants = changed_from.len())))
        .await;
        let mut ack = Vec::with_capacity(events.len());
        let mut parsed = events.iter();
        for receipt in receipts {
            let Some(receipt) = receipt else { continue };
            let Some(event) = parsed.next() else { break };
            if !rejected.contains(&event.event_id) {
                ack.push(receipt);
            }
        }
        let acknowledge = spans.make(|| tracing::debug_span!("queue.ack", messages = ack.len()));
        self.source.ack(&ack).instrument(acknowledge).await?;
        tracing::debug!(
            applied = summary.applied.len(),
            duplicates = summary.duplicates.len(),
            rejected = summary.rejected.len(),
            "batch consolidated"
        );
        Ok(ack.len())
    }

    /// Applies everything currently queued, then returns the count.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let n = self.poll_once(Duration::ZERO).await?;
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
            let result = tokio::select! {
                _ = shutdown.changed() => return,
                r = self.poll(self.config.wait) => r,
            };
            match result {
                Ok(polled) => {
                    backoff = Duration::from_millis(50);
                    // Counted from the batch's receive: the time spent applying it is part of
                    // the linger, so a busy consumer does not linger at all (module docs).
                    if let Some((acked, received)) = polled {
                        if acked > 0 && acked < self.config.batch_size && !self.config.linger.is_zero() {
                            tokio::select! {
                                _ = shutdown.changed() => return,
                                _ = tokio::time::sleep_until(received + self.config.linger) => {}
                            }
                        }
                    }
                }
                Err(e) => {
                    metrics::counter!("cashflow_consolidation_failures_total").increment(1);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "consolidation failed; retrying");
                    // A store failure (the batch was released); queue failures are `QueueError`s.
                    let store_down = e.downcast_ref::<StoreError>().is_some();
                    loop {
                        tokio::select! {
                            _ = shutdown.changed() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(self.config.max_backoff);
                        // Receiving while the store is down would spend a receive of every
                        // message per retry (see the module docs).
                        if !store_down || self.store.ping().await.is_ok() {
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use cashflow_domain::{Amount, Balance, BusinessDate, Currency, DayTotals, EntryId, EntryType, MerchantId};
    use cashflow_events::{EntryRecorded, EventBody, EventPublisher, OutboundMessage, QueueError};
    use cashflow_queue::{EmbeddedQueue, EmbeddedQueueConfig};

    use super::*;
    use crate::cache::NoCache;
    use crate::store::{ApplySummary, MerchantBooks};
    use crate::SqliteConsolidationStore;

    /// A real store whose database can be "down" (every call fails while `down` is set) or
    /// slow (each batch takes `apply_delay` longer to apply).
    struct FlakyStore {
        inner: SqliteConsolidationStore,
        down: AtomicBool,
        apply_delay: Duration,
    }

    impl FlakyStore {
        fn check(&self) -> Result<(), StoreError> {
            match self.down.load(Ordering::SeqCst) {
                true => Err(StoreError::Unavailable("connection refused".into())),
                false => Ok(()),
            }
        }
    }

    #[async_trait]
    impl ConsolidationStore for FlakyStore {
        async fn apply(&self, events: &[Event]) -> Result<ApplySummary, StoreError> {
            self.check()?;
            tokio::time::sleep(self.apply_delay).await;
            self.inner.apply(events).await
        }
        async fn merchant(&self, id: MerchantId) -> Result<Option<MerchantBooks>, StoreError> {
            self.check()?;
            self.inner.merchant(id).await
        }
        async fn days(
            &self,
            merchant: MerchantId,
            from: BusinessDate,
            to: BusinessDate,
        ) -> Result<(Balance, BTreeMap<BusinessDate, DayTotals>), StoreError> {
            self.check()?;
            self.inner.days(merchant, from, to).await
        }
        async fn merchants(&self) -> Result<Vec<MerchantId>, StoreError> {
            self.check()?;
            self.inner.merchants().await
        }
        async fn adjustments(
            &self,
            merchant: MerchantId,
            from: BusinessDate,
            to: BusinessDate,
        ) -> Result<crate::store::Adjustments, StoreError> {
            self.check()?;
            self.inner.adjustments(merchant, from, to).await
        }
        async fn day_marks(
            &self,
            merchant: MerchantId,
            from: BusinessDate,
            to: BusinessDate,
        ) -> Result<Vec<crate::store::DayMark>, StoreError> {
            self.check()?;
            self.inner.day_marks(merchant, from, to).await
        }
        async fn rebuild_day(
            &self,
            day: &crate::store::DayRebuild,
        ) -> Result<crate::store::RebuildOutcome, StoreError> {
            self.check()?;
            self.inner.rebuild_day(day).await
        }
        async fn prune_processed(
            &self,
            applied_before: chrono::DateTime<chrono::Utc>,
            limit: u32,
        ) -> Result<u64, StoreError> {
            self.check()?;
            self.inner.prune_processed(applied_before, limit).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.check()
        }
    }

    fn sale(merchant: MerchantId) -> OutboundMessage {
        let event = Event::new(
            chrono::Utc::now(),
            EventBody::EntryRecorded(EntryRecorded {
                merchant_id: merchant,
                entry_id: EntryId::new(),
                business_date: BusinessDate::parse("2026-11-23").unwrap(),
                kind: EntryType::Credit,
                amount: Amount::from_minor(100).unwrap(),
                currency: Currency::BRL,
                recorded_at: chrono::Utc::now(),
                reversal_of: None,
                adjusts_date: None,
            }),
        );
        OutboundMessage { event_id: event.event_id, body: event.to_json() }
    }

    #[tokio::test]
    async fn a_batch_that_failed_on_a_store_outage_is_applied_as_soon_as_the_store_is_back() {
        // Given queued events, a 30 s visibility timeout, dead letters after a second receive,
        // and a store that is down
        let dir = tempfile::tempdir().unwrap();
        let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
        let queue = Arc::new(
            EmbeddedQueue::open(&url("queue.db"), EmbeddedQueueConfig { max_receives: 2, ..Default::default() })
                .await
                .unwrap(),
        );
        let store = Arc::new(FlakyStore {
            inner: SqliteConsolidationStore::open(&url("consolidation.db")).await.unwrap(),
            down: AtomicBool::new(true),
            apply_delay: Duration::ZERO,
        });
        let merchant = MerchantId::new();
        let messages: Vec<_> = (0..20).map(|_| sale(merchant)).collect();
        queue.publish(&messages).await.unwrap();
        let consumer = Consumer::new(store.clone(), queue.clone(), Arc::new(NoCache), ConsumerConfig::default());
        let (stop, shutdown) = watch::channel(false);
        let running = tokio::spawn(consumer.run(shutdown));

        // When the consumer has failed on it for a while and the store comes back
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(queue.depth().await.unwrap(), Some(20), "nothing applied while the store is down");
        store.down.store(false, Ordering::SeqCst);
        let back = std::time::Instant::now();

        // Then every event is applied within a second or two, not after the 30 s lease
        while queue.depth().await.unwrap() != Some(0) {
            assert!(
                back.elapsed() < Duration::from_secs(5),
                "still leased {:?} after the store came back",
                back.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("converged {:?} after the store came back", back.elapsed());
        let (_, days) = store
            .days(merchant, BusinessDate::parse("2026-11-23").unwrap(), BusinessDate::parse("2026-11-23").unwrap())
            .await
            .unwrap();
        assert_eq!(days.values().map(|d| d.entry_count).sum::<u64>(), 20);
        // And the outage cost each message one receive, not one per retry: none dead-lettered
        assert_eq!(queue.dead_letter_depth().await.unwrap(), Some(0));
        stop.send(true).unwrap();
        running.await.unwrap();
    }

    #[tokio::test]
    async fn an_event_of_a_kind_this_release_does_not_know_is_acknowledged_not_dead_lettered() {
        // Given a queue holding a sale and an event of a kind a newer ledger produces
        let dir = tempfile::tempdir().unwrap();
        let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
        let queue = Arc::new(
            EmbeddedQueue::open(&url("queue.db"), EmbeddedQueueConfig { max_receives: 1, ..Default::default() })
                .await
                .unwrap(),
        );
        let store = Arc::new(SqliteConsolidationStore::open(&url("consolidation.db")).await.unwrap());
        let sale = sale(MerchantId::new());
        let newer = OutboundMessage {
            event_id: cashflow_domain::EventId::new(),
            body: sale.body.replace(r#""type":"entry_recorded""#, r#""type":"till_counted""#),
        };
        queue.publish(&[sale, newer]).await.unwrap();

        // When the consumer drains the queue
        let consumer = Consumer::new(store, queue.clone(), Arc::new(NoCache), ConsumerConfig::default());
        let acknowledged = consumer.drain().await.unwrap();

        // Then both were acknowledged: nothing is left and nothing was dead-lettered
        assert_eq!(acknowledged, 2);
        assert_eq!(queue.depth().await.unwrap(), Some(0));
        assert_eq!(queue.dead_letter_depth().await.unwrap(), Some(0));
    }

    /// The real queue, noting when each receive that brought messages returned.
    struct Noted {
        queue: EmbeddedQueue,
        receives: std::sync::Mutex<Vec<std::time::Instant>>,
    }

    #[async_trait]
    impl EventSource for Noted {
        async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<cashflow_events::Delivery>, QueueError> {
            let batch = self.queue.receive(max, wait).await?;
            if !batch.is_empty() {
                self.receives.lock().unwrap().push(std::time::Instant::now());
            }
            Ok(batch)
        }
        async fn ack(&self, receipts: &[String]) -> Result<(), QueueError> {
            self.queue.ack(receipts).await
        }
        async fn depth(&self) -> Result<Option<u64>, QueueError> {
            self.queue.depth().await
        }
    }

    /// The time between the first two receives of a consumer lingering `linger` over a store
    /// taking `apply_delay` per batch, with one event queued at first and another published
    /// while the first is being applied.
    async fn between_two_receives(linger: Duration, apply_delay: Duration) -> Duration {
        let dir = tempfile::tempdir().unwrap();
        let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
        let noted = Arc::new(Noted {
            queue: EmbeddedQueue::open(&url("queue.db"), EmbeddedQueueConfig::default()).await.unwrap(),
            receives: Default::default(),
        });
        let store = Arc::new(FlakyStore {
            inner: SqliteConsolidationStore::open(&url("consolidation.db")).await.unwrap(),
            down: AtomicBool::new(false),
            apply_delay,
        });
        let merchant = MerchantId::new();
        noted.queue.publish(&[sale(merchant)]).await.unwrap();
        let config = ConsumerConfig { linger, ..ConsumerConfig::default() };
        let (stop, shutdown) = watch::channel(false);
        let running = tokio::spawn(Consumer::new(store, noted.clone(), Arc::new(NoCache), config).run(shutdown));
        while noted.receives.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        noted.queue.publish(&[sale(merchant)]).await.unwrap();
        while noted.receives.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        stop.send(true).unwrap();
        running.await.unwrap();
        let receives = noted.receives.lock().unwrap();
        receives[1] - receives[0]
    }

    #[tokio::test]
    async fn after_a_small_batch_the_consumer_lingers_before_its_next_receive() {
        // Given a consumer lingering 300 ms and a store that applies at once
        // When a second event is published just after the first batch was received
        let between = between_two_receives(Duration::from_millis(300), Duration::ZERO).await;
        // Then it is received a linger after the first, not as soon as it is published
        assert!(between >= Duration::from_millis(300), "received again after {between:?}");
    }

    #[tokio::test]
    async fn the_linger_counts_from_the_receive_so_a_slow_batch_is_followed_at_once() {
        // Given a consumer lingering 300 ms and a store that takes 600 ms to apply a batch
        // When a second event is published while the first batch is being applied
        let between = between_two_receives(Duration::from_millis(300), Duration::from_millis(600)).await;
        // Then the next receive follows the slow batch at once (about 600 ms after the first),
        // not a further linger after it (900 ms): the time spent applying was the linger
        assert!(between >= Duration::from_millis(600), "received again after {between:?}");
        assert!(between < Duration::from_millis(850), "lingered after a slow batch: received again after {between:?}");
    }
}
