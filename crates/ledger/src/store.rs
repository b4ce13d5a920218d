//! The ledger's storage port, owned by the use cases ([`crate::service`]). [`crate::sqlite`]
//! (embedded) and [`crate::postgres`] (RDS) implement it, chosen by URL.

use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use cashflow_domain::{BusinessDate, DayTotals, Entry, EntryId, EventId, Merchant, MerchantId};
use cashflow_events::Event;

/// A storage failure, already sorted by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The idempotency key was used before with a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyConflict,
    /// The entry already has a reversal.
    #[error("entry already reversed")]
    AlreadyReversed,
    /// The merchant id is taken.
    #[error("merchant already exists")]
    MerchantExists,
    /// The entry's business date is on or before the merchant's closed-books watermark.
    #[error("the books are closed through the day before {first_open}")]
    DayClosed {
        /// The earliest day that still takes entries.
        first_open: BusinessDate,
    },
    /// The day asked to be closed is already closed (itself or by a later close).
    #[error("the books are already closed through {through}")]
    AlreadyClosed { through: BusinessDate },
    /// The day asked to be reopened is not closed.
    #[error("the day is not closed")]
    NotClosed {
        /// The watermark, if any day is closed.
        closed_through: Option<BusinessDate>,
    },
    /// The database could not be reached or failed; retrying later may work.
    #[error("ledger store unavailable: {0}")]
    Unavailable(String),
    /// A stored row no longer parses into the domain: a bug or manual tampering.
    #[error("corrupt ledger row: {0}")]
    Corrupt(String),
}

/// The idempotency key of a write and a digest of the request it was first used with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

/// The result of recording an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Written now.
    Created(Entry),
    /// The same request was recorded before under the same key; this is that entry.
    Replayed(Entry),
}

/// A page of entries in `from..=to` business dates, ordered by (business date, id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryQuery {
    pub from: BusinessDate,
    pub to: BusinessDate,
    /// Resume strictly after this position.
    pub after: Option<(BusinessDate, EntryId)>,
    pub limit: u32,
}

/// One unpublished outbox event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRecord {
    pub seq: i64,
    pub event_id: String,
    pub body: String,
}

/// Where a store hands the outbox rows it has just committed, for a reader in the same process
/// to deliver without reading them back ([`crate::outbox_source`]). Called by the store's
/// writer after the commit returned, never before; a row that is never handed over is still
/// in the outbox, where a read finds it.
pub trait OutboxTap: Send + Sync + 'static {
    /// Rows of one commit, in the order they were written.
    fn committed(&self, rows: Vec<OutboxRecord>);
}

/// A store's [`OutboxTap`], once one is set; shared with its writers.
#[derive(Clone, Default)]
pub(crate) struct TapSlot(Arc<RwLock<Option<Arc<dyn OutboxTap>>>>);

impl TapSlot {
    pub(crate) fn set(&self, tap: Arc<dyn OutboxTap>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(tap);
    }

    /// The tap, if any: a writer collects its rows only when someone listens.
    pub(crate) fn get(&self) -> Option<Arc<dyn OutboxTap>> {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// How much the relay has left to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxBacklog {
    pub count: u64,
    pub oldest: Option<DateTime<Utc>>,
}

/// A day's totals from the sums of a grouped query (a negative count would mean corrupt rows).
pub(crate) fn day_totals_of_sums(credits: i64, debits: i64, count: i64) -> Result<DayTotals, StoreError> {
    Ok(DayTotals {
        total_credits: cashflow_domain::Balance::from_minor(credits),
        total_debits: cashflow_domain::Balance::from_minor(debits),
        entry_count: u64::try_from(count).map_err(|e| StoreError::Corrupt(format!("day totals: {e}")))?,
    })
}

/// A request to close a merchant's books through `date`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseDay {
    pub merchant_id: MerchantId,
    pub date: BusinessDate,
    pub closed_at: DateTime<Utc>,
    /// The token's subject or client: who closed the day.
    pub closed_by: String,
    /// What was counted in the drawer, in minor units, if the merchant counted it.
    pub counted_cash_minor: Option<i64>,
    pub note: Option<String>,
}

/// An immutable close record: what the ledger's own entries said when the day was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayClose {
    pub merchant_id: MerchantId,
    pub date: BusinessDate,
    pub closed_at: DateTime<Utc>,
    pub closed_by: String,
    /// Credits and debits dated on `date`, in minor units, and how many entries that is.
    pub credits_minor: i64,
    pub debits_minor: i64,
    pub entry_count: u64,
    /// Credits minus debits of every entry dated on or before `date`: what the drawer
    /// should hold.
    pub expected_balance_minor: i64,
    pub counted_cash_minor: Option<i64>,
    pub note: Option<String>,
}

impl DayClose {
    /// The "quebra de caixa": counted minus expected, when cash was counted (`None` if it was
    /// not, or if the difference does not fit in `i64`).
    pub fn difference_minor(&self) -> Option<i64> {
        self.counted_cash_minor?.checked_sub(self.expected_balance_minor)
    }
}

/// A request to reopen a merchant's books from `date`: the watermark moves back to the day
/// before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReopenDay {
    pub merchant_id: MerchantId,
    pub date: BusinessDate,
    pub reopened_at: DateTime<Utc>,
    /// The token's subject or client: who reopened.
    pub reopened_by: String,
    /// Why (required: reopening changes what a closed report said).
    pub reason: String,
}

/// What one close or reopen did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayAction {
    Close,
    Reopen,
}

impl DayAction {
    /// `"close"` or `"reopen"`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DayAction::Close => "close",
            DayAction::Reopen => "reopen",
        }
    }

    /// The stored name back; anything else is a corrupt row.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "close" => Ok(DayAction::Close),
            "reopen" => Ok(DayAction::Reopen),
            other => Err(StoreError::Corrupt(format!("day action: {other}"))),
        }
    }
}

/// An immutable audit row: who closed or reopened which day, when and why, and how the
/// watermark moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayAudit {
    /// Orders the merchant's closes and reopens as they were committed.
    pub seq: i64,
    pub merchant_id: MerchantId,
    pub action: DayAction,
    /// The day closed, or the first day reopened.
    pub date: BusinessDate,
    pub at: DateTime<Utc>,
    pub by: String,
    /// The close's note or the reopen's reason.
    pub reason: Option<String>,
    pub closed_through_before: Option<BusinessDate>,
    pub closed_through_after: Option<BusinessDate>,
}

/// The event that tells consolidation about a close, once its audit row has its `seq`.
pub(crate) fn day_closed_event(close: &DayClose, previous: Option<BusinessDate>, seq: i64) -> Event {
    Event::new(
        close.closed_at,
        cashflow_events::EventBody::DayClosed(cashflow_events::DayClosed {
            merchant_id: close.merchant_id,
            date: close.date,
            previous_closed_through: previous,
            closed_at: close.closed_at,
            counted_cash: close.counted_cash_minor,
            difference: close.difference_minor(),
            seq,
        }),
    )
}

/// The event that tells consolidation about a reopen.
pub(crate) fn day_reopened_event(audit: &DayAudit, previous: BusinessDate) -> Event {
    Event::new(
        audit.at,
        cashflow_events::EventBody::DayReopened(cashflow_events::DayReopened {
            merchant_id: audit.merchant_id,
            date: audit.date,
            previous_closed_through: previous,
            closed_through: audit.closed_through_after,
            reopened_at: audit.at,
            seq: audit.seq,
        }),
    )
}

/// Everything the ledger persists.
#[async_trait]
pub trait LedgerStore: Send + Sync + 'static {
    /// Stores a merchant and its registration event atomically.
    async fn create_merchant(&self, merchant: &Merchant, event: &Event) -> Result<(), StoreError>;

    /// A merchant by id.
    async fn merchant(&self, id: MerchantId) -> Result<Option<Merchant>, StoreError>;

    /// Every merchant, oldest first, for operators.
    async fn merchants(&self) -> Result<Vec<Merchant>, StoreError>;

    /// How many merchants exist (the first start creates a demo one when there are none).
    async fn merchant_count(&self) -> Result<u64, StoreError>;

    /// Stores an entry and its event in one transaction. With an idempotency key already
    /// used for the same request, returns the original entry and writes nothing.
    async fn record(
        &self,
        entry: &Entry,
        idempotency: Option<&Idempotency>,
        event: &Event,
    ) -> Result<Recorded, StoreError>;

    /// One of the merchant's entries.
    async fn entry(&self, merchant: MerchantId, id: EntryId) -> Result<Option<Entry>, StoreError>;

    /// A page of the merchant's entries.
    async fn entries(&self, merchant: MerchantId, query: &EntryQuery) -> Result<Vec<Entry>, StoreError>;

    /// The ledger's own totals of each business date in `from..=to` that has entries, in date
    /// order, computed by the database with one grouped query over the entries' index: the
    /// authority consolidation is reconciled with.
    async fn day_totals(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Vec<(BusinessDate, DayTotals)>, StoreError>;

    /// Closes the merchant's books through `close.date`, with totals computed from the stored
    /// entries in the same transaction that moves the watermark, so that no concurrent
    /// [`record`](Self::record) lands in a closed day after the totals were taken.
    /// [`StoreError::AlreadyClosed`] if the books are already closed through that date. Writes
    /// the close's audit row and the event that tells consolidation in the same transaction.
    async fn close_day(&self, close: &CloseDay) -> Result<DayClose, StoreError>;

    /// Moves the merchant's watermark back to the day before `reopen.date`, writing an audit
    /// row and the event that tells consolidation, in the same transaction and serialized with
    /// records and closes exactly like [`close_day`](Self::close_day).
    /// [`StoreError::NotClosed`] if `reopen.date` is after the watermark (or none is set).
    async fn reopen_day(&self, reopen: &ReopenDay) -> Result<DayAudit, StoreError>;

    /// The merchant's closes and reopens of days in `from..=to`, in commit order.
    async fn day_audit(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Vec<DayAudit>, StoreError>;

    /// The last day the merchant's books are closed through, if any.
    async fn closed_through(&self, merchant: MerchantId) -> Result<Option<BusinessDate>, StoreError>;

    /// The merchant's close records for days in `from..=to`, by date then close time.
    async fn day_closes(
        &self,
        merchant: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Vec<DayClose>, StoreError>;

    /// The oldest unpublished events, in commit order.
    async fn outbox_batch(&self, limit: u32) -> Result<Vec<OutboxRecord>, StoreError>;

    /// The outbox rows of `events` that are still unpublished, in commit order.
    async fn outbox_events(&self, events: &[EventId]) -> Result<Vec<OutboxRecord>, StoreError>;

    /// Forgets published events. Stores may make this delete non-durable: a delete lost in a
    /// crash only republishes events, which the queue and consolidation deduplicate.
    async fn delete_outbox(&self, seqs: &[i64]) -> Result<(), StoreError>;

    /// Hands every outbox row this store's writers commit from now on to `tap` as well (they
    /// stay in the outbox until deleted). Replaces an earlier tap. The default hands nothing
    /// over: the rows are found by reading the outbox.
    fn tap_outbox(&self, tap: Arc<dyn OutboxTap>) {
        let _ = tap;
    }

    /// Unpublished events and the age of the oldest.
    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StoreError>;

    /// Readiness probe.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Connection pools for metrics: (pool name, open connections, idle connections).
    fn pool_usage(&self) -> Vec<(&'static str, u32, u32)> {
        Vec::new()
    }
}
