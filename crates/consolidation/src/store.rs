//! The consolidation's storage port.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use cashflow_domain::{ApplyOutcome, Balance, BusinessDate, Currency, DayTotals, EventId, MerchantId};
use cashflow_events::Event;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("consolidation store unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt consolidation row: {0}")]
    Corrupt(String),
}

/// A row that does not decode (`what` names the column) as a [`StoreError::Corrupt`].
pub(crate) fn corrupt<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// What consolidation knows of a merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MerchantBooks {
    pub currency: Currency,
    /// The newest ledger commit reflected in this merchant's reports.
    pub as_of: DateTime<Utc>,
}

/// What happened to each event of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplySummary {
    /// Applied now.
    pub applied: Vec<EventId>,
    /// Applied before (a redelivery); nothing changed.
    pub duplicates: Vec<EventId>,
    /// Not applicable (an overflowing total): left unacknowledged for the dead-letter queue.
    pub rejected: Vec<EventId>,
    /// The earliest business date each merchant had changed, for cache invalidation.
    pub changed_from: BTreeMap<MerchantId, BusinessDate>,
}

/// The first copy of each event of a batch, in delivery order; later copies are duplicates.
pub(crate) fn first_copies(events: &[Event]) -> Vec<&Event> {
    let mut seen = std::collections::HashSet::new();
    events.iter().filter(|e| seen.insert(e.event_id)).collect()
}

/// Folds an applied event into the merchant rows a batch refreshes: the currency of the first
/// event is kept, and the newest commit time seen (`as_of`).
pub(crate) fn touch<T: Ord + Copy>(
    merchants: &mut BTreeMap<MerchantId, (Currency, T)>,
    merchant: MerchantId,
    currency: Currency,
    as_of: T,
) {
    merchants.entry(merchant).and_modify(|(_, newest)| *newest = (*newest).max(as_of)).or_insert((currency, as_of));
}

impl ApplySummary {
    /// The summary of a batch in delivery order: each event's outcome, and a later copy of an
    /// event within the batch is a duplicate. An event without an outcome is a duplicate.
    pub(crate) fn in_delivery_order(
        events: &[Event],
        outcomes: &std::collections::HashMap<EventId, ApplyOutcome>,
        changed_from: BTreeMap<MerchantId, BusinessDate>,
    ) -> Self {
        let mut summary = ApplySummary { changed_from, ..ApplySummary::default() };
        let mut reported = std::collections::HashSet::new();
        for event in events {
            let outcome = match reported.insert(event.event_id) {
                true => outcomes.get(&event.event_id).copied().unwrap_or(ApplyOutcome::Duplicate),
                false => ApplyOutcome::Duplicate,
            };
            match outcome {
                ApplyOutcome::Applied => summary.applied.push(event.event_id),
                ApplyOutcome::Duplicate => summary.duplicates.push(event.event_id),
                ApplyOutcome::Rejected => summary.rejected.push(event.event_id),
            }
        }
        summary
    }
}

/// The consolidation's persistence.
#[async_trait]
pub trait ConsolidationStore: Send + Sync + 'static {
    /// Applies a batch in one transaction, each event at most once (deduplicated by id).
    async fn apply(&self, events: &[Event]) -> Result<ApplySummary, StoreError>;

    /// The merchant's currency and freshness, once its first event arrived.
    async fn merchant(&self, id: MerchantId) -> Result<Option<MerchantBooks>, StoreError>;

    /// The opening balance of `from` (sum of every earlier net) and the totals of the days in
    /// `from..=to` that have entries.
    async fn days(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<(Balance, BTreeMap<BusinessDate, DayTotals>), StoreError>;

    /// Readiness probe.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Connection pools for metrics: (pool name, open connections, idle connections).
    fn pool_usage(&self) -> Vec<(&'static str, u32, u32)> {
        Vec::new()
    }
}
