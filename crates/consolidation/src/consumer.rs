//! The consumer: takes events from the queue and applies them to the consolidation store.
//!
//! Deliveries are at least once, in any order, possibly duplicated. A batch is applied in one
//! transaction that also records each event id, so a redelivered event changes nothing; only
//! after the commit are the messages acknowledged. A crash between commit and ack means a
//! redelivery, which the dedupe absorbs. A message that cannot be parsed or applied is left
//! unacknowledged: the queue redelivers it and, after too many receives, dead-letters it,
//! while the rest of its batch is applied and acknowledged.
//!
//! After a batch that was not full the consumer *lingers* a few milliseconds before the next
//! receive, so that under load each receive, transaction and acknowledgement carries many
//! events instead of the one or two published since the last look (each costs a commit); a
//! full batch means a backlog, and the next receive follows at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use cashflow_events::{Event, EventBody, EventSource};

use crate::cache::ReportCache;
use crate::store::ConsolidationStore;

/// Counters of what a batch did, and the consolidation lag: from the ledger's commit of an
/// event to its effect being committed here (what "how stale is the report" means).
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

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Messages per receive and per transaction.
    pub batch_size: usize,
    /// Long-poll wait of one receive.
    pub wait: Duration,
    /// Longest pause between retries while the queue or the store is down.
    pub max_backoff: Duration,
    /// Pause after a batch that was not full (see the module docs).
    pub linger: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            wait: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            linger: Duration::from_millis(10),
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
        let deliveries = self.source.receive(self.config.batch_size, wait).await?;
        if deliveries.is_empty() {
            return Ok(0);
        }
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
        let summary = self.store.apply(&events).await?;
        record_applied(&events, &summary);
        for event in &events {
            // Joins the producing request's trace: the same trace id as the ledger's log line.
            let trace_id = event.trace.as_deref().and_then(|t| t.split('-').nth(1)).unwrap_or("");
            tracing::debug!(event_id = %event.event_id, trace_id, "event consolidated");
        }
        let rejected: std::collections::HashSet<_> = summary.rejected.iter().collect();
        // Duplicates invalidate too: a redelivery after a crash between the commit and the
        // invalidation is what heals a cache that missed it (Redis outlives our process).
        let mut changed_from = summary.changed_from.clone();
        for event in events.iter().filter(|e| !rejected.contains(&e.event_id)) {
            if let EventBody::EntryRecorded(e) = &event.body {
                changed_from
                    .entry(e.merchant_id)
                    .and_modify(|d| *d = (*d).min(e.business_date))
                    .or_insert(e.business_date);
            }
        }
        for (merchant, from) in &changed_from {
            self.cache.invalidate(*merchant, *from).await;
        }
        let mut ack = Vec::with_capacity(events.len());
        let mut parsed = events.iter();
        for receipt in receipts {
            let Some(receipt) = receipt else { continue };
            let Some(event) = parsed.next() else { break };
            if !rejected.contains(&event.event_id) {
                ack.push(receipt);
            }
        }
        self.source.ack(&ack).await?;
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
                r = self.poll_once(self.config.wait) => r,
            };
            match result {
                Ok(n) => {
                    backoff = Duration::from_millis(50);
                    if n > 0 && n < self.config.batch_size && !self.config.linger.is_zero() {
                        tokio::select! {
                            _ = shutdown.changed() => return,
                            _ = tokio::time::sleep(self.config.linger) => {}
                        }
                    }
                }
                Err(e) => {
                    metrics::counter!("cashflow_consolidation_failures_total").increment(1);
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "consolidation failed; retrying");
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
    }
}
