//! The ledger's application service: the use cases behind the HTTP handlers and the CLI.
//! It turns validated requests into domain entries and events and hands both to the store in
//! one call, so an entry never exists without the event that tells consolidation about it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, SubsecRound, Utc};
use tokio::sync::Notify;

use cashflow_domain::{
    BusinessDate, Currency, Description, Entry, EntryError, EntryId, Merchant, MerchantId, MerchantName,
    MerchantTimeZone, NewEntry,
};
use cashflow_events::{EntryRecorded, Event, EventBody, MerchantRegistered};

use crate::relay;
use crate::store::{
    CloseDay, DayAudit, DayClose, EntryQuery, Idempotency, LedgerStore, Recorded, ReopenDay, StoreError,
};

/// Why a ledger use case failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The token names a merchant this ledger does not know.
    #[error("unknown merchant")]
    UnknownMerchant,
    /// No such entry for this merchant (another merchant's entry is "not found" too).
    #[error("entry not found")]
    EntryNotFound,
    /// A day after the merchant's today cannot be closed.
    #[error("{0} has not ended yet in the merchant's time zone")]
    FutureDay(BusinessDate),
    /// The request breaks a domain rule.
    #[error(transparent)]
    Entry(#[from] EntryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What to do with an entry whose business day is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClosedDay {
    /// Refuse it ([`StoreError::DayClosed`], naming the first open day).
    #[default]
    Refuse,
    /// Record it on the first open day as an adjustment of the day it was meant for
    /// ([`Entry::adjusts_date`]).
    AdjustIntoOpenDay,
}

/// How many times a write refused for a closed day is re-dated onto the first open day the
/// store named: only closes committed in between can refuse it again.
const ADJUST_ATTEMPTS: usize = 4;

/// The ledger.
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    /// Merchant settings never change after creation, so they are cached for the hot path.
    merchants: RwLock<HashMap<MerchantId, Merchant>>,
    /// Signalled after every commit that wrote an outbox event, to wake the relay at once.
    outbox_written: Arc<Notify>,
}

/// Timestamps are stored with microsecond precision; truncating up front makes the entry we
/// return now identical to the one read back (or replayed) later.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Ledger {
    /// A ledger over a store.
    pub fn new(store: Arc<dyn LedgerStore>) -> Self {
        Self { store, merchants: RwLock::new(HashMap::new()), outbox_written: Arc::new(Notify::new()) }
    }

    /// The signal the relay waits on.
    pub fn outbox_signal(&self) -> Arc<Notify> {
        self.outbox_written.clone()
    }

    /// Registers a merchant (and tells consolidation about it).
    pub async fn create_merchant(
        &self,
        name: MerchantName,
        currency: Currency,
        time_zone: MerchantTimeZone,
    ) -> Result<Merchant, LedgerError> {
        let merchant = Merchant { id: MerchantId::new(), name, currency, time_zone, created_at: now() };
        let event = Event::new(
            merchant.created_at,
            EventBody::MerchantRegistered(MerchantRegistered { merchant_id: merchant.id, currency, time_zone }),
        );
        self.store.create_merchant(&merchant, &event).await?;
        relay::note_committed(event.event_id);
        self.outbox_written.notify_one();
        Ok(merchant)
    }

    /// A merchant's settings.
    pub async fn merchant(&self, id: MerchantId) -> Result<Merchant, LedgerError> {
        if let Some(m) = self.merchants.read().ok().and_then(|cache| cache.get(&id).cloned()) {
            return Ok(m);
        }
        let merchant = self.store.merchant(id).await?.ok_or(LedgerError::UnknownMerchant)?;
        if let Ok(mut cache) = self.merchants.write() {
            cache.insert(id, merchant.clone());
        }
        Ok(merchant)
    }

    /// Records an entry, or replays the one recorded earlier under the same idempotency key.
    /// `traceparent` is the caller's W3C trace context (the HTTP request's, or none), carried
    /// by the entry's event to the consolidator.
    pub async fn record(
        &self,
        merchant_id: MerchantId,
        new: NewEntry,
        idempotency: Option<Idempotency>,
        traceparent: Option<String>,
    ) -> Result<Recorded, LedgerError> {
        self.record_with(merchant_id, new, idempotency, traceparent, ClosedDay::Refuse).await
    }

    /// [`record`](Self::record), choosing what happens when the entry's day is closed. The
    /// store's watermark check, in the insert's transaction, is the authority: an adjustment is
    /// first written as is, and re-dated onto the first open day the refusal names (again if a
    /// close slipped in between), so it never lands in a closed day.
    pub async fn record_with(
        &self,
        merchant_id: MerchantId,
        new: NewEntry,
        idempotency: Option<Idempotency>,
        traceparent: Option<String>,
        closed_day: ClosedDay,
    ) -> Result<Recorded, LedgerError> {
        let span = cashflow_http::context::request_span(
            "ledger.record",
            || tracing::debug_span!("ledger.record", merchant_id = %merchant_id),
        )
        .with("merchant_id", merchant_id);
        span.run(self.record_attempts(merchant_id, new, idempotency, traceparent, closed_day)).await
    }

    /// [`record_with`](Self::record_with), inside its `ledger.record` span.
    async fn record_attempts(
        &self,
        merchant_id: MerchantId,
        new: NewEntry,
        idempotency: Option<Idempotency>,
        traceparent: Option<String>,
        closed_day: ClosedDay,
    ) -> Result<Recorded, LedgerError> {
        let merchant = self.merchant(merchant_id).await?;
        let entry = Entry::record(new, &merchant, EntryId::new(), now())?;
        let meant_for = entry.business_date;
        let mut attempt = entry.clone();
        for _ in 0..ADJUST_ATTEMPTS {
            match self.write(attempt, idempotency.as_ref(), traceparent.clone()).await {
                Err(LedgerError::Store(StoreError::DayClosed { first_open }))
                    if closed_day == ClosedDay::AdjustIntoOpenDay =>
                {
                    attempt = entry.clone().adjusted_into(first_open, meant_for);
                }
                outcome => return outcome,
            }
        }
        Err(LedgerError::Store(StoreError::Unavailable(
            "the books kept closing while an adjustment was written".into(),
        )))
    }

    /// Reverses an entry: a new entry of the opposite type and the same amount. `traceparent`
    /// as for [`record`](Self::record).
    #[tracing::instrument(name = "ledger.reverse", level = "debug", skip_all, fields(merchant_id = %merchant_id))]
    pub async fn reverse(
        &self,
        merchant_id: MerchantId,
        id: EntryId,
        description: Option<Description>,
        traceparent: Option<String>,
    ) -> Result<Entry, LedgerError> {
        let merchant = self.merchant(merchant_id).await?;
        let original = self.entry(merchant_id, id).await?;
        let reversal = original.reversal(EntryId::new(), description, merchant.time_zone, now())?;
        // The reversal of a closed day's entry is an adjustment of that day, dated on the
        // first open day; the store's refusal (a close in between) names the newer one.
        let closed_through = self.store.closed_through(merchant_id).await?;
        let mut attempt = match closed_through.filter(|through| original.business_date <= *through) {
            Some(through) => match through.succ() {
                Some(first_open) => reversal.clone().adjusted_into(first_open, original.business_date),
                None => reversal.clone(),
            },
            None => reversal.clone(),
        };
        for _ in 0..ADJUST_ATTEMPTS {
            match self.write(attempt, None, traceparent.clone()).await {
                Err(LedgerError::Store(StoreError::DayClosed { first_open }))
                    if original.business_date < first_open =>
                {
                    attempt = reversal.clone().adjusted_into(first_open, original.business_date);
                }
                Ok(Recorded::Created(entry) | Recorded::Replayed(entry)) => return Ok(entry),
                Err(e) => return Err(e),
            }
        }
        Err(LedgerError::Store(StoreError::Unavailable("the books kept closing while a reversal was written".into())))
    }

    async fn write(
        &self,
        entry: Entry,
        idempotency: Option<&Idempotency>,
        traceparent: Option<String>,
    ) -> Result<Recorded, LedgerError> {
        let event = Event::new(
            entry.recorded_at,
            EventBody::EntryRecorded(EntryRecorded {
                merchant_id: entry.merchant_id,
                entry_id: entry.id,
                business_date: entry.business_date,
                kind: entry.kind,
                amount: entry.amount,
                currency: entry.currency,
                recorded_at: entry.recorded_at,
                reversal_of: entry.reversal_of,
                adjusts_date: entry.adjusts_date,
            }),
        )
        .with_id(Event::id_of_entry(entry.id))
        .with_trace(traceparent);
        let recorded = self.store.record(&entry, idempotency, &event).await?;
        if matches!(recorded, Recorded::Created(_)) {
            relay::note_committed(event.event_id);
            self.outbox_written.notify_one();
        }
        Ok(recorded)
    }

    /// Closes the merchant's books through `date` (that day and every earlier one); the store
    /// takes the totals from its entries in the same transaction. `closed_by` is who asked.
    pub async fn close_day(
        &self,
        merchant_id: MerchantId,
        date: BusinessDate,
        counted_cash_minor: Option<i64>,
        note: Option<String>,
        closed_by: String,
    ) -> Result<DayClose, LedgerError> {
        let merchant = self.merchant(merchant_id).await?;
        let closed_at = now();
        if date > BusinessDate::of(closed_at, merchant.time_zone) {
            return Err(LedgerError::FutureDay(date));
        }
        let close = CloseDay { merchant_id, date, closed_at, closed_by, counted_cash_minor, note };
        let record = self.store.close_day(&close).await?;
        relay::note_committed_unidentified();
        self.outbox_written.notify_one();
        Ok(record)
    }

    /// Reopens the merchant's books from `date` (that day and every later closed one): the
    /// watermark moves back to the day before. `reason` is required, `reopened_by` is who asked.
    pub async fn reopen_day(
        &self,
        merchant_id: MerchantId,
        date: BusinessDate,
        reason: String,
        reopened_by: String,
    ) -> Result<DayAudit, LedgerError> {
        self.merchant(merchant_id).await?;
        let reopen = ReopenDay { merchant_id, date, reopened_at: now(), reopened_by, reason };
        let audit = self.store.reopen_day(&reopen).await?;
        relay::note_committed_unidentified();
        self.outbox_written.notify_one();
        Ok(audit)
    }

    /// The merchant's closes and reopens of days in `from..=to`, in the order they happened.
    pub async fn day_audit(
        &self,
        merchant_id: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Vec<DayAudit>, LedgerError> {
        Ok(self.store.day_audit(merchant_id, from, to).await?)
    }

    /// The last day the merchant's books are closed through, if any.
    pub async fn closed_through(&self, merchant_id: MerchantId) -> Result<Option<BusinessDate>, LedgerError> {
        Ok(self.store.closed_through(merchant_id).await?)
    }

    /// The merchant's close records for days in `from..=to`.
    pub async fn day_closes(
        &self,
        merchant_id: MerchantId,
        from: BusinessDate,
        to: BusinessDate,
    ) -> Result<Vec<DayClose>, LedgerError> {
        Ok(self.store.day_closes(merchant_id, from, to).await?)
    }

    /// One of the merchant's entries.
    pub async fn entry(&self, merchant_id: MerchantId, id: EntryId) -> Result<Entry, LedgerError> {
        self.store.entry(merchant_id, id).await?.ok_or(LedgerError::EntryNotFound)
    }

    /// A page of the merchant's entries.
    pub async fn entries(&self, merchant_id: MerchantId, query: &EntryQuery) -> Result<Vec<Entry>, LedgerError> {
        Ok(self.store.entries(merchant_id, query).await?)
    }
}
