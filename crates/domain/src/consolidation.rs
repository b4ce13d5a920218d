//! The daily consolidation fold.
//!
//! Consolidation keeps, per merchant and business date, the totals of credits and debits and
//! the number of entries. A day's opening balance is the sum of every earlier day's net, so a
//! backdated entry changes its own day and, through the openings, every later day, without
//! rewriting them. Storage adapters implement exactly this model; [`MerchantDays`] is the
//! in-memory reference: its property test holds it to the direct sum of the entries, and the
//! consolidation's store contract holds every store to it.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::{Amount, Balance, BusinessDate, EntryId, EntryType, EventId, MoneyError};

/// Why a consolidation step failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsolidationError {
    #[error(transparent)]
    Money(#[from] MoneyError),
    #[error("`from` ({from}) is after `to` ({to})")]
    InvertedRange { from: BusinessDate, to: BusinessDate },
}

/// What one ledger entry contributes to its business date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub entry_id: EntryId,
    pub business_date: BusinessDate,
    #[serde(rename = "type")]
    pub kind: EntryType,
    pub amount: Amount,
}

/// Totals of one business date.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayTotals {
    pub total_credits: Balance,
    pub total_debits: Balance,
    pub entry_count: u64,
}

impl DayTotals {
    /// Adds one entry to the day.
    pub fn post(&mut self, kind: EntryType, amount: Amount) -> Result<(), ConsolidationError> {
        let amount = Balance::from(amount);
        match kind {
            EntryType::Credit => self.total_credits = self.total_credits.checked_add(amount)?,
            EntryType::Debit => self.total_debits = self.total_debits.checked_add(amount)?,
        }
        self.entry_count += 1;
        Ok(())
    }

    /// Credits minus debits.
    pub fn net(&self) -> Result<Balance, ConsolidationError> {
        Ok(self.total_credits.checked_sub(self.total_debits)?)
    }
}

/// The consolidated balance of one business date, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyBalance {
    pub date: BusinessDate,
    /// The previous day's closing balance.
    pub opening_balance: Balance,
    pub total_credits: Balance,
    pub total_debits: Balance,
    pub net: Balance,
    pub closing_balance: Balance,
    pub entry_count: u64,
}

/// Builds the report of every day in `from..=to`, days without entries included.
///
/// `opening` is the sum of the nets of every day before `from`; `days` holds the totals of the
/// days in range that have entries (others are ignored).
pub fn daily_balances(
    opening: Balance,
    from: BusinessDate,
    to: BusinessDate,
    days: &BTreeMap<BusinessDate, DayTotals>,
) -> Result<Vec<DailyBalance>, ConsolidationError> {
    if from > to {
        return Err(ConsolidationError::InvertedRange { from, to });
    }
    let mut out = Vec::with_capacity(usize::try_from(from.days_until(to) + 1).unwrap_or(0));
    let mut running = opening;
    let mut date = Some(from);
    while let Some(d) = date.filter(|d| *d <= to) {
        let totals = days.get(&d).copied().unwrap_or_default();
        let net = totals.net()?;
        let closing = running.checked_add(net)?;
        out.push(DailyBalance {
            date: d,
            opening_balance: running,
            total_credits: totals.total_credits,
            total_debits: totals.total_debits,
            net,
            closing_balance: closing,
            entry_count: totals.entry_count,
        });
        running = closing;
        date = d.succ();
    }
    Ok(out)
}

/// What became of one event applied to the books: the same answer from the reference model
/// and from every store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// It changed the books, and is remembered as processed.
    Applied,
    /// It had been applied before (a redelivery); nothing changed.
    Duplicate,
    /// Its posting would overflow its day's totals; nothing changed, and it is not remembered,
    /// so a redelivery is rejected again (and ends in the dead-letter queue) instead of passing
    /// for a duplicate.
    Rejected,
}

/// The in-memory reference model of one merchant's consolidation: postings applied exactly
/// once per event id, in any order.
#[derive(Debug, Clone, Default)]
pub struct MerchantDays {
    processed: HashSet<EventId>,
    days: BTreeMap<BusinessDate, DayTotals>,
}

impl MerchantDays {
    /// Applies an event's posting unless that event was applied before or its posting would
    /// overflow the day.
    pub fn apply(&mut self, event_id: EventId, posting: Posting) -> ApplyOutcome {
        if self.processed.contains(&event_id) {
            return ApplyOutcome::Duplicate;
        }
        let mut totals = self.days.get(&posting.business_date).copied().unwrap_or_default();
        if totals.post(posting.kind, posting.amount).is_err() {
            return ApplyOutcome::Rejected;
        }
        self.days.insert(posting.business_date, totals);
        self.processed.insert(event_id);
        ApplyOutcome::Applied
    }

    /// The report for `from..=to`.
    pub fn balances(&self, from: BusinessDate, to: BusinessDate) -> Result<Vec<DailyBalance>, ConsolidationError> {
        let mut opening = Balance::ZERO;
        for totals in self.days.range(..from).map(|(_, t)| t) {
            opening = opening.checked_add(totals.net()?)?;
        }
        let in_range = self.days.range(from..=to).map(|(d, t)| (*d, *t)).collect();
        daily_balances(opening, from, to, &in_range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(s: &str) -> BusinessDate {
        BusinessDate::parse(s).unwrap()
    }

    fn posting(day: &str, kind: EntryType, minor: i64) -> Posting {
        Posting { entry_id: EntryId::new(), business_date: date(day), kind, amount: Amount::from_minor(minor).unwrap() }
    }

    #[test]
    fn a_day_without_entries_carries_the_previous_closing() {
        let mut books = MerchantDays::default();
        books.apply(EventId::new(), posting("2026-11-20", EntryType::Credit, 10_000));
        books.apply(EventId::new(), posting("2026-11-20", EntryType::Debit, 2_500));
        let days = books.balances(date("2026-11-20"), date("2026-11-21")).unwrap();
        assert_eq!(days[0].closing_balance, Balance::from_minor(7_500));
        assert_eq!(days[0].entry_count, 2);
        assert_eq!(days[1].opening_balance, Balance::from_minor(7_500));
        assert_eq!(days[1].closing_balance, Balance::from_minor(7_500));
        assert_eq!(days[1].entry_count, 0);
        assert_eq!(days[1].net, Balance::ZERO);
    }

    #[test]
    fn a_backdated_entry_rolls_every_later_opening() {
        let mut books = MerchantDays::default();
        books.apply(EventId::new(), posting("2026-11-22", EntryType::Credit, 1_000));
        books.apply(EventId::new(), posting("2026-11-10", EntryType::Debit, 300));
        let days = books.balances(date("2026-11-22"), date("2026-11-23")).unwrap();
        assert_eq!(days[0].opening_balance, Balance::from_minor(-300));
        assert_eq!(days[1].closing_balance, Balance::from_minor(700));
    }

    #[test]
    fn a_redelivered_event_is_applied_once() {
        let mut books = MerchantDays::default();
        let id = EventId::new();
        let p = posting("2026-11-22", EntryType::Credit, 1_000);
        assert_eq!(books.apply(id, p), ApplyOutcome::Applied);
        assert_eq!(books.apply(id, p), ApplyOutcome::Duplicate);
        let day = books.balances(date("2026-11-22"), date("2026-11-22")).unwrap()[0];
        assert_eq!(day.total_credits, Balance::from_minor(1_000));
    }

    #[test]
    fn totals_that_would_overflow_are_errors_not_wraps() {
        let mut totals = DayTotals { total_credits: Balance::from_minor(i64::MAX - 5), ..DayTotals::default() };
        let err = totals.post(EntryType::Credit, Amount::from_minor(10).unwrap());
        assert!(err.is_err());
        assert_eq!(totals.total_credits, Balance::from_minor(i64::MAX - 5), "a failed post changes nothing");
    }

    #[test]
    fn an_overflowing_posting_is_rejected_and_not_remembered() {
        // Given a day one maximal credit short of overflowing
        let mut books = MerchantDays::default();
        let brim = Posting {
            amount: Amount::from_minor(Amount::MAX_MINOR).unwrap(),
            ..posting("2026-11-23", EntryType::Credit, 1)
        };
        let mut applied = 0;
        while books.apply(EventId::new(), brim) == ApplyOutcome::Applied {
            applied += 1;
        }
        // When one more arrives, twice
        let id = EventId::new();
        // Then it is rejected both times (not a duplicate), and the day is unchanged
        assert_eq!(books.apply(id, brim), ApplyOutcome::Rejected);
        assert_eq!(books.apply(id, brim), ApplyOutcome::Rejected);
        let day = books.balances(date("2026-11-23"), date("2026-11-23")).unwrap()[0];
        assert_eq!(day.entry_count, applied);
    }

    #[test]
    fn an_inverted_range_is_an_error() {
        let books = MerchantDays::default();
        assert!(books.balances(date("2026-11-22"), date("2026-11-21")).is_err());
    }

    /// A generated entry: day offset from 2026-01-01, credit or debit, minor units, and
    /// whether it is later reversed (the reversal posts on `reversal_day`).
    fn entries() -> impl Strategy<Value = Vec<(u8, bool, i64, Option<u8>)>> {
        prop::collection::vec((0u8..20, any::<bool>(), 1i64..=Amount::MAX_MINOR, prop::option::of(0u8..20)), 0..60)
    }

    proptest! {
        /// For any entries on any days, backdated and reversed, delivered in any order with
        /// duplicates, every daily report equals the direct sum of the entries.
        #[test]
        fn any_delivery_order_with_duplicates_reports_the_direct_sum(
            entries in entries(),
            order_seed in any::<u64>(),
            duplicate_every in 1usize..5,
        ) {
            let base = date("2026-01-01");
            let day = |offset: u8| {
                let mut d = base;
                for _ in 0..offset { d = d.succ().unwrap(); }
                d
            };
            // Every entry and reversal becomes one event.
            let mut events = Vec::new();
            for (offset, is_credit, minor, reversal_day) in &entries {
                let kind = if *is_credit { EntryType::Credit } else { EntryType::Debit };
                let amount = Amount::from_minor(*minor).unwrap();
                let original = Posting { entry_id: EntryId::new(), business_date: day(*offset), kind, amount };
                events.push((EventId::new(), original));
                if let Some(r) = reversal_day {
                    let reversal = Posting { entry_id: EntryId::new(), business_date: day(*r), kind: kind.opposite(), amount };
                    events.push((EventId::new(), reversal));
                }
            }
            // Deliver shuffled, with duplicates.
            let mut deliveries: Vec<_> = events.clone();
            deliveries.extend(events.iter().step_by(duplicate_every).copied());
            let mut state = order_seed | 1;
            for i in (1..deliveries.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                deliveries.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut books = MerchantDays::default();
            for (id, p) in &deliveries {
                prop_assert_ne!(books.apply(*id, *p), ApplyOutcome::Rejected);
            }
            let report = books.balances(base, day(25)).unwrap();
            let mut running: i128 = 0;
            for d in &report {
                let on_day: Vec<_> = events.iter().filter(|(_, p)| p.business_date == d.date).collect();
                let credits: i128 = on_day.iter().filter(|(_, p)| p.kind == EntryType::Credit).map(|(_, p)| i128::from(p.amount.minor())).sum();
                let debits: i128 = on_day.iter().filter(|(_, p)| p.kind == EntryType::Debit).map(|(_, p)| i128::from(p.amount.minor())).sum();
                prop_assert_eq!(i128::from(d.opening_balance.minor()), running);
                prop_assert_eq!(i128::from(d.total_credits.minor()), credits);
                prop_assert_eq!(i128::from(d.total_debits.minor()), debits);
                prop_assert_eq!(d.entry_count as usize, on_day.len());
                running += credits - debits;
                prop_assert_eq!(i128::from(d.closing_balance.minor()), running);
            }
            // Reversals cancel exactly: with every entry reversed, the final closing is zero.
            let all_reversed = entries.iter().all(|e| e.3.is_some());
            if all_reversed {
                prop_assert_eq!(report.last().unwrap().closing_balance, Balance::ZERO);
            }
        }
    }
}
