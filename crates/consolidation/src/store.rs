//! The consolidation's storage port.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use cashflow_domain::{
    Amount, ApplyOutcome, Balance, BusinessDate, Currency, DayTotals, EntryType, EventId, MerchantId,
};
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

/// One of a day's entries as the ledger has it: what rebuilding the day needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerPosting {
    /// The id of the event that announced the entry: recorded as applied by the rebuild.
    pub event_id: EventId,
    pub kind: EntryType,
    pub amount: Amount,
    /// The ledger's commit time (the merchant's `as_of` moves to the newest).
    pub recorded_at: DateTime<Utc>,
}

/// A drifting day to set to the ledger's entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRebuild {
    pub merchant: MerchantId,
    pub currency: Currency,
    pub date: BusinessDate,
    /// The day's consolidated totals when reconciliation read them, before it read the ledger:
    /// the day is rebuilt only if they are still the same. A consumer that applied an event of
    /// the day in between wins, and the day is left for the next run (see
    /// `docs/architecture.md`, reconciliation).
    pub found: DayTotals,
    /// Every entry of the day in the ledger.
    pub entries: Vec<LedgerPosting>,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildOutcome {
    /// The day now holds exactly the ledger's entries, and their events are recorded as applied.
    Rebuilt,
    /// The day changed since it was read; nothing was written.
    Moved,
}

impl DayRebuild {
    /// The totals of the ledger's entries (checked: an overflow is an error, not a wrap).
    pub fn totals(&self) -> Result<DayTotals, StoreError> {
        let mut totals = DayTotals::default();
        for e in &self.entries {
            totals.post(e.kind, e.amount).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        }
        Ok(totals)
    }
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

/// Whether a mark closed or reopened days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkAction {
    Close,
    Reopen,
}

impl MarkAction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MarkAction::Close => "close",
            MarkAction::Reopen => "reopen",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "close" => Ok(MarkAction::Close),
            "reopen" => Ok(MarkAction::Reopen),
            other => Err(StoreError::Corrupt(format!("mark action: {other}"))),
        }
    }
}

/// A close or reopen as the ledger announced it ([`cashflow_events::DayClosed`],
/// [`cashflow_events::DayReopened`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayMark {
    /// The ledger's order of the merchant's closes and reopens.
    pub seq: i64,
    pub action: MarkAction,
    /// The day closed, or the first day reopened.
    pub date: BusinessDate,
    /// A close: the first day it closed (`None`: every day up to `date`).
    pub from: Option<BusinessDate>,
    /// The watermark after this mark.
    pub closed_through: Option<BusinessDate>,
    pub at: DateTime<Utc>,
    pub counted_cash: Option<i64>,
    pub difference: Option<i64>,
}

impl DayMark {
    /// The mark an event records, if it is a close or a reopen.
    pub(crate) fn of(event: &Event) -> Option<(MerchantId, DayMark)> {
        match &event.body {
            cashflow_events::EventBody::DayClosed(c) => Some((
                c.merchant_id,
                DayMark {
                    seq: c.seq,
                    action: MarkAction::Close,
                    date: c.date,
                    from: c.previous_closed_through.and_then(|d| d.succ()),
                    closed_through: Some(c.date),
                    at: c.closed_at,
                    counted_cash: c.counted_cash,
                    difference: c.difference,
                },
            )),
            cashflow_events::EventBody::DayReopened(r) => Some((
                r.merchant_id,
                DayMark {
                    seq: r.seq,
                    action: MarkAction::Reopen,
                    date: r.date,
                    from: None,
                    closed_through: r.closed_through,
                    at: r.reopened_at,
                    counted_cash: None,
                    difference: None,
                },
            )),
            _ => None,
        }
    }
}

/// Adjustment totals by (the day they count on, the closed day they were meant for).
pub type Adjustments = BTreeMap<(BusinessDate, BusinessDate), DayTotals>;

/// Adds an applied entry to the batch's adjustment totals if it is an adjustment. The sums are
/// a part of its day's totals, which were checked, so they cannot overflow.
pub(crate) fn add_adjustment(
    adjustments: &mut BTreeMap<(MerchantId, BusinessDate, BusinessDate), DayTotals>,
    entry: &cashflow_events::EntryRecorded,
) {
    if let Some(meant_for) = entry.adjusts_date {
        let totals = adjustments.entry((entry.merchant_id, entry.business_date, meant_for)).or_default();
        if totals.post(entry.kind, entry.amount).is_err() {
            tracing::error!(entry_id = %entry.entry_id, "adjustment totals overflow; not counted as an adjustment");
        }
    }
}

/// What a closed day's report says about its close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedDay {
    /// When the close that covers the day was made.
    pub closed_at: DateTime<Utc>,
    /// Only on the day the close was made for (the one whose drawer was counted).
    pub counted_cash: Option<i64>,
    pub difference: Option<i64>,
}

/// Whether `day` is closed, given the merchant's marks (at least the newest one and every close
/// covering `day`, as [`ConsolidationStore::day_marks`] returns them): closed when the newest
/// mark's watermark is on or after it, by the newest close covering it. Applying marks in any
/// order gives the same answer, since only `seq` decides.
pub fn closed_day(marks: &[DayMark], day: BusinessDate) -> Option<ClosedDay> {
    let newest = marks.iter().max_by_key(|m| m.seq)?;
    if newest.closed_through.is_none_or(|through| day > through) {
        return None;
    }
    let close = marks
        .iter()
        .filter(|m| m.action == MarkAction::Close && day <= m.date && m.from.is_none_or(|from| from <= day))
        .max_by_key(|m| m.seq)?;
    let own = close.date == day;
    Some(ClosedDay {
        closed_at: close.at,
        counted_cash: close.counted_cash.filter(|_| own),
        difference: close.difference.filter(|_| own),
    })
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

    /// The merchant's newest close or reopen and every close covering a day of `from..=to`
    /// (what [`closed_day`] needs for those days).
    async fn day_marks(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Vec<DayMark>, StoreError>;

    /// The adjustments counted on each day of `from..=to` that has any, by (day, the closed
    /// day they were meant for): the part of the day's totals recorded for closed days.
    async fn adjustments(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Adjustments, StoreError>;

    /// Every merchant consolidation knows, in id order.
    async fn merchants(&self) -> Result<Vec<MerchantId>, StoreError>;

    /// Sets one day to the ledger's entries in one transaction: the day's totals (the row is
    /// removed when the ledger has no entry that day), every entry's event id recorded as
    /// applied (so that event, still in flight, is a duplicate when it arrives) and the
    /// merchant's `as_of`; only if the day still holds [`DayRebuild::found`].
    async fn rebuild_day(&self, day: &DayRebuild) -> Result<RebuildOutcome, StoreError>;

    /// Forgets the oldest deduplication markers of events applied before `applied_before`, at
    /// most `limit` of them, in one short transaction; returns how many it removed. A redelivery
    /// of a forgotten event would count again: callers keep the markers for a window longer than
    /// any redelivery can come (see [`crate::dedup`]).
    async fn prune_processed(&self, applied_before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;

    /// Readiness probe.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Connection pools for metrics: (pool name, open connections, idle connections).
    fn pool_usage(&self) -> Vec<(&'static str, u32, u32)> {
        Vec::new()
    }
}
