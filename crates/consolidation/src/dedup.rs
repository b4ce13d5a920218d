//! How long deduplication markers are kept, and the pruner that forgets older ones.
//!
//! The consumer records each applied event's id (`processed_events`) in the transaction that
//! applies it, so a redelivery changes nothing. Kept forever, those markers grew by one row per
//! entry (58 bytes per applied event on SQLite). A marker is only needed while its event can
//! still arrive again, and every way an event arrives again is bounded in time:
//! - the queue redelivers a message it still holds, and SQS holds a message at most its
//!   retention (at most 14 days) after it was *sent*, which is before it was applied;
//! - the embedded queue redelivers an unacknowledged message once its lease (the visibility
//!   timeout, seconds) has run out, to the consumer that runs beside this pruner;
//! - the relay republishes an event it published but could not forget at its next pass.
//!
//! So a marker older than a window longer than the queue's retention guards nothing, and
//! [`DedupWindow`] refuses a window that is not. The pruner deletes markers older than the
//! window in small batches (one short transaction each, by an index on the marker's time), so
//! the consumer's writes wait at most one batch. It first runs one interval after it starts,
//! never at once: a consumer starting after a long stop receives what the queue kept for it
//! first. `docs/architecture.md` ("Deduplication window") has the whole argument.
//!
//! A process that cannot keep a background task (a Lambda function, frozen between
//! invocations) prunes from its own work instead, through a [`PruneSchedule`]: one batch after
//! a piece of work when a pass is due, which is once per interval, or at once while the last
//! pass found a full batch (a backlog, after a long stop, drains a batch per invocation).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::store::{ConsolidationStore, StoreError};

/// The longest a queue we publish to keeps a message: SQS's maximum retention (14 days).
pub const MAX_QUEUE_RETENTION: Duration = Duration::from_secs(14 * 24 * 3600);

/// The window by default: one day more than [`MAX_QUEUE_RETENTION`].
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 24 * 3600);

/// Markers one transaction deletes at most.
pub const PRUNE_BATCH: u32 = 1_000;

/// How long a deduplication marker is kept: longer than the queue keeps a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupWindow(Duration);

/// A window that would let a redelivered event count twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the deduplication window ({window_secs} s) must be longer than the queue's retention ({retention_secs} s): \
     a message redelivered after its marker was pruned would be counted twice"
)]
pub struct WindowTooShort {
    pub window_secs: u64,
    pub retention_secs: u64,
}

impl DedupWindow {
    /// A window of `window`, for a queue that keeps a message at most `queue_retention`.
    pub fn new(window: Duration, queue_retention: Duration) -> Result<Self, WindowTooShort> {
        if window > queue_retention {
            Ok(Self(window))
        } else {
            Err(WindowTooShort { window_secs: window.as_secs(), retention_secs: queue_retention.as_secs() })
        }
    }

    /// The window.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// Markers of events applied before this instant are no longer needed at `now`.
    fn cutoff(self, now: DateTime<Utc>) -> DateTime<Utc> {
        chrono::Duration::from_std(self.0).ok().and_then(|w| now.checked_sub_signed(w)).unwrap_or(DateTime::UNIX_EPOCH)
    }
}

impl Default for DedupWindow {
    fn default() -> Self {
        Self(DEFAULT_WINDOW)
    }
}

/// Forgets every marker older than `window` at `now`, [`PRUNE_BATCH`] at a time, yielding
/// between batches; returns how many were removed. The function the scheduled pruner runs, and
/// the one a scheduled Lambda function can call.
pub async fn prune_expired(
    store: &dyn ConsolidationStore,
    window: DedupWindow,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let cutoff = window.cutoff(now);
    let mut removed = 0;
    loop {
        let n = store.prune_processed(cutoff, PRUNE_BATCH).await?;
        removed += n;
        metrics::counter!("cashflow_dedup_markers_pruned_total").increment(n);
        if n < u64::from(PRUNE_BATCH) {
            return Ok(removed);
        }
        // Let the consumer's next batch in before the next delete.
        tokio::task::yield_now().await;
    }
}

/// The background task that keeps the markers within the window.
pub struct Pruner {
    store: std::sync::Arc<dyn ConsolidationStore>,
    window: DedupWindow,
    /// Time between passes (and before the first).
    every: Duration,
}

impl Pruner {
    /// A pruner of `store`'s markers older than `window`, every `every`.
    pub fn new(store: std::sync::Arc<dyn ConsolidationStore>, window: DedupWindow, every: Duration) -> Self {
        Self { store, window, every }
    }

    /// Prunes every `every` until `shutdown` turns true. A failed pass is logged and the next
    /// one tries again.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            if *shutdown.borrow() {
                return;
            }
            match prune_expired(&*self.store, self.window, Utc::now()).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "deduplication markers past the window pruned"),
                Err(e) => tracing::warn!(error = %e, "pruning deduplication markers failed; trying again later"),
            }
        }
    }
}

/// When a process without a background task prunes: [`PruneSchedule::prune_if_due`] after
/// each piece of work (a Lambda invocation) deletes one batch when a pass is due. A pass is due
/// at the first call, then `every` after a pass that found fewer than a full batch, and at once
/// after one that found a full batch or failed to run (so a backlog drains a batch a call, and
/// a failure is tried again by the next call).
#[derive(Debug)]
pub struct PruneSchedule {
    every: Duration,
    next: Mutex<Option<Instant>>,
}

impl PruneSchedule {
    /// A schedule of one pass every `every`.
    pub const fn new(every: Duration) -> Self {
        Self { every, next: Mutex::new(None) }
    }

    /// Whether a pass is due at `now`.
    fn due(&self, now: Instant) -> bool {
        self.next.lock().map_or(true, |next| next.is_none_or(|at| now >= at))
    }

    /// Records a pass at `now` that removed `removed` markers.
    fn passed(&self, now: Instant, removed: u64) {
        let next = if removed >= u64::from(PRUNE_BATCH) { now } else { now + self.every };
        if let Ok(mut at) = self.next.lock() {
            *at = Some(next);
        }
    }

    /// Deletes one batch of `store`'s markers older than `window` if a pass is due; how many
    /// it removed (0 when none was due).
    pub async fn prune_if_due(&self, store: &dyn ConsolidationStore, window: DedupWindow) -> Result<u64, StoreError> {
        let started = Instant::now();
        if !self.due(started) {
            return Ok(0);
        }
        let removed = store.prune_processed(window.cutoff(Utc::now()), PRUNE_BATCH).await?;
        metrics::counter!("cashflow_dedup_markers_pruned_total").increment(removed);
        self.passed(started, removed);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_is_due_at_first_then_once_an_interval_unless_a_full_batch_says_more_are_left() {
        let schedule = PruneSchedule::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(schedule.due(t0), "the first call prunes");

        schedule.passed(t0, 3);
        assert!(!schedule.due(t0 + Duration::from_secs(59)), "a pass that found few waits an interval");
        assert!(schedule.due(t0 + Duration::from_secs(60)));

        let t1 = t0 + Duration::from_secs(60);
        schedule.passed(t1, u64::from(PRUNE_BATCH));
        assert!(schedule.due(t1), "a full batch means a backlog: the next call prunes again");
    }

    #[test]
    fn a_window_must_be_longer_than_the_queue_keeps_a_message() {
        assert_eq!(DedupWindow::default().duration(), DEFAULT_WINDOW);
        assert!(DedupWindow::new(DEFAULT_WINDOW, MAX_QUEUE_RETENTION).is_ok());
        let refused = DedupWindow::new(MAX_QUEUE_RETENTION, MAX_QUEUE_RETENTION).unwrap_err();
        assert_eq!(refused, WindowTooShort { window_secs: 1_209_600, retention_secs: 1_209_600 });
        assert!(refused.to_string().contains("must be longer than the queue's retention"), "{refused}");
        assert!(DedupWindow::new(Duration::from_secs(3600), MAX_QUEUE_RETENTION).is_err());
    }

    #[test]
    fn the_cutoff_is_the_window_before_now() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T12:00:00Z").unwrap().with_timezone(&Utc);
        let cutoff = DedupWindow::default().cutoff(now);
        assert_eq!(cutoff.to_rfc3339(), "2026-11-21T12:00:00+00:00");
    }
}
