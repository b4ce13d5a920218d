//! Ledger entries: immutable debits and credits. A mistake is corrected by a reversal, a new
//! entry of the opposite type and the same amount, never by editing or deleting.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::{Amount, BusinessDate, Currency, EntryId, Merchant, MerchantId, MerchantTimeZone};

/// Why an entry could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("`{0}` is not an entry type (expected \"credit\" or \"debit\")")]
    UnknownType(String),
    #[error("description must be 1 to {max} characters without control characters", max = Description::MAX_CHARS)]
    InvalidDescription,
    #[error("category must be 1 to {max} characters without control characters", max = Category::MAX_CHARS)]
    InvalidCategory,
    #[error(
        "occurred_at is in the future (more than {} seconds ahead of the server clock)",
        Entry::MAX_CLOCK_SKEW_SECS
    )]
    OccursInFuture,
    #[error("occurred_at is before 1970-01-01")]
    OccursTooEarly,
    #[error("a reversal cannot itself be reversed; record a new entry instead")]
    ReversalOfReversal,
}

/// The direction of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryType {
    /// Money in.
    Credit,
    /// Money out.
    Debit,
}

impl EntryType {
    /// The type a reversal of this entry has.
    pub fn opposite(self) -> Self {
        match self {
            EntryType::Credit => EntryType::Debit,
            EntryType::Debit => EntryType::Credit,
        }
    }

    /// `"credit"` or `"debit"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryType::Credit => "credit",
            EntryType::Debit => "debit",
        }
    }
}

impl FromStr for EntryType {
    type Err = EntryError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "credit" => Ok(EntryType::Credit),
            "debit" => Ok(EntryType::Debit),
            other => Err(EntryError::UnknownType(other.chars().take(32).collect())),
        }
    }
}

impl fmt::Display for EntryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn bounded_text(text: &str, max: usize) -> Option<String> {
    let ok = !text.trim().is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control);
    ok.then(|| text.to_owned())
}

/// What an entry was for: 1 to 280 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Description(String);

impl Description {
    /// Longest description accepted.
    pub const MAX_CHARS: usize = 280;

    /// Parses a description.
    pub fn parse(text: &str) -> Result<Self, EntryError> {
        bounded_text(text, Self::MAX_CHARS).map(Self).ok_or(EntryError::InvalidDescription)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A merchant-chosen label such as `sales` or `rent`: 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Category(String);

impl Category {
    /// Longest category accepted.
    pub const MAX_CHARS: usize = 64;

    /// Parses a category.
    pub fn parse(text: &str) -> Result<Self, EntryError> {
        bounded_text(text, Self::MAX_CHARS).map(Self).ok_or(EntryError::InvalidCategory)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated request to record an entry, before it gets an id and a business date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub kind: EntryType,
    pub amount: Amount,
    pub description: Description,
    pub category: Option<Category>,
    /// When the sale or payment happened; `None` means now.
    pub occurred_at: Option<DateTime<Utc>>,
}

/// A recorded entry. Immutable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub merchant_id: MerchantId,
    pub kind: EntryType,
    pub amount: Amount,
    pub currency: Currency,
    pub description: Description,
    pub category: Option<Category>,
    pub occurred_at: DateTime<Utc>,
    /// The day of `occurred_at` in the merchant's time zone, fixed when recorded.
    pub business_date: BusinessDate,
    /// When the ledger accepted it.
    pub recorded_at: DateTime<Utc>,
    /// Set on a reversal: the entry it cancels.
    pub reversal_of: Option<EntryId>,
    /// Set on an adjustment: the closed business day this entry was meant for. It counts on
    /// `business_date` (the first day that was open when it was recorded), so the closed day's
    /// totals stay as they were closed and every balance from `business_date` on is right.
    pub adjusts_date: Option<BusinessDate>,
}

impl Entry {
    /// How far ahead of the server clock `occurred_at` may be: clients' clocks drift.
    pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

    /// Records a new entry for a merchant at `now`.
    pub fn record(new: NewEntry, merchant: &Merchant, id: EntryId, now: DateTime<Utc>) -> Result<Entry, EntryError> {
        let occurred_at = new.occurred_at.unwrap_or(now);
        check_occurred_at(occurred_at, now)?;
        Ok(Entry {
            id,
            merchant_id: merchant.id,
            kind: new.kind,
            amount: new.amount,
            currency: merchant.currency,
            description: new.description,
            category: new.category,
            occurred_at,
            business_date: BusinessDate::of(occurred_at, merchant.time_zone),
            recorded_at: now,
            reversal_of: None,
            adjusts_date: None,
        })
    }

    /// The entry that cancels this one: opposite type, same amount, dated `now` in the
    /// merchant's time zone (a correction belongs to the day it is made; the original day's
    /// report stays as it was published, and the running balance is right from `now` on).
    pub fn reversal(
        &self,
        id: EntryId,
        description: Option<Description>,
        time_zone: MerchantTimeZone,
        now: DateTime<Utc>,
    ) -> Result<Entry, EntryError> {
        if self.reversal_of.is_some() {
            return Err(EntryError::ReversalOfReversal);
        }
        let description = description.unwrap_or_else(|| {
            let text: String =
                format!("Reversal of {}", self.description.as_str()).chars().take(Description::MAX_CHARS).collect();
            Description(text)
        });
        Ok(Entry {
            id,
            merchant_id: self.merchant_id,
            kind: self.kind.opposite(),
            amount: self.amount,
            currency: self.currency,
            description,
            category: self.category.clone(),
            occurred_at: now,
            business_date: BusinessDate::of(now, time_zone),
            recorded_at: now,
            reversal_of: Some(self.id),
            adjusts_date: None,
        })
    }

    /// The same entry counted on `open_day` instead of `meant_for`, a closed day: an
    /// adjustment. Nothing else changes (`occurred_at` still says when it happened).
    pub fn adjusted_into(self, open_day: BusinessDate, meant_for: BusinessDate) -> Entry {
        Entry { business_date: open_day, adjusts_date: Some(meant_for), ..self }
    }
}

fn check_occurred_at(occurred_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), EntryError> {
    if occurred_at > now + Duration::seconds(Entry::MAX_CLOCK_SKEW_SECS) {
        return Err(EntryError::OccursInFuture);
    }
    if occurred_at < Utc.timestamp_opt(0, 0).single().unwrap_or(occurred_at) {
        return Err(EntryError::OccursTooEarly);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MerchantName;

    fn merchant() -> Merchant {
        Merchant {
            id: MerchantId::new(),
            name: MerchantName::parse("Padaria").unwrap(),
            currency: Currency::BRL,
            time_zone: MerchantTimeZone::DEFAULT,
            created_at: Utc::now(),
        }
    }

    fn sale(occurred_at: Option<DateTime<Utc>>) -> NewEntry {
        NewEntry {
            kind: EntryType::Credit,
            amount: Amount::parse("150.00", Currency::BRL).unwrap(),
            description: Description::parse("Venda balcão").unwrap(),
            category: Some(Category::parse("sales").unwrap()),
            occurred_at,
        }
    }

    #[test]
    fn an_entry_gets_the_business_date_of_the_merchant_time_zone() {
        let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
        let late_evening = Utc.with_ymd_and_hms(2026, 11, 24, 1, 30, 0).unwrap();
        let entry = Entry::record(sale(Some(late_evening)), &merchant(), EntryId::new(), now).unwrap();
        assert_eq!(entry.business_date.to_string(), "2026-11-23");
        assert_eq!(entry.recorded_at, now);
        assert_eq!(entry.currency, Currency::BRL);
    }

    #[test]
    fn occurred_at_defaults_to_now() {
        let now = Utc::now();
        let entry = Entry::record(sale(None), &merchant(), EntryId::new(), now).unwrap();
        assert_eq!(entry.occurred_at, now);
    }

    #[test]
    fn entries_from_the_future_are_rejected_beyond_the_clock_skew() {
        let now = Utc::now();
        let slightly_ahead = now + Duration::seconds(60);
        let far_ahead = now + Duration::seconds(Entry::MAX_CLOCK_SKEW_SECS + 1);
        assert!(Entry::record(sale(Some(slightly_ahead)), &merchant(), EntryId::new(), now).is_ok());
        assert_eq!(
            Entry::record(sale(Some(far_ahead)), &merchant(), EntryId::new(), now),
            Err(EntryError::OccursInFuture)
        );
    }

    #[test]
    fn a_reversal_is_the_opposite_entry_and_cannot_be_reversed_again() {
        let m = merchant();
        let now = Utc::now();
        let original = Entry::record(sale(None), &m, EntryId::new(), now).unwrap();
        let reversal = original.reversal(EntryId::new(), None, m.time_zone, now).unwrap();
        assert_eq!(reversal.kind, EntryType::Debit);
        assert_eq!(reversal.amount, original.amount);
        assert_eq!(reversal.reversal_of, Some(original.id));
        assert_eq!(reversal.description.as_str(), "Reversal of Venda balcão");
        assert_eq!(reversal.reversal(EntryId::new(), None, m.time_zone, now), Err(EntryError::ReversalOfReversal));
    }

    #[test]
    fn an_adjustment_counts_on_the_open_day_and_remembers_the_day_it_was_meant_for() {
        let m = merchant();
        let now = Utc::now();
        let entry = Entry::record(sale(None), &m, EntryId::new(), now).unwrap();
        let (open, meant) = (BusinessDate::parse("2026-11-24").unwrap(), BusinessDate::parse("2026-11-20").unwrap());
        let adjusted = entry.clone().adjusted_into(open, meant);
        assert_eq!((adjusted.business_date, adjusted.adjusts_date), (open, Some(meant)));
        assert_eq!((adjusted.id, adjusted.amount, adjusted.occurred_at), (entry.id, entry.amount, entry.occurred_at));
        assert_eq!(entry.adjusts_date, None);
    }

    #[test]
    fn text_fields_are_bounded() {
        assert!(Description::parse("").is_err());
        assert!(Description::parse("   ").is_err());
        assert!(Description::parse("a\u{0}b").is_err());
        assert!(Description::parse(&"é".repeat(280)).is_ok());
        assert!(Description::parse(&"é".repeat(281)).is_err());
        assert!(Category::parse(&"x".repeat(65)).is_err());
        assert!("refund".parse::<EntryType>().is_err());
    }
}
