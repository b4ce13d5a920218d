//! The business rules of cashflow, free of I/O.
//!
//! Everything a merchant's books must obey lives here, so that the HTTP services, the storage
//! adapters and the property tests all share one definition of "correct":
//!
//! - money is an integer count of minor units tagged with an ISO 4217 currency; arithmetic is
//!   checked and decimal strings carry exactly the currency's minor digits;
//! - an [`Entry`] is immutable once recorded; a correction is a reversal, a new entry of the
//!   opposite type;
//! - every entry belongs to a business date, the calendar day of its `occurred_at` in the
//!   merchant's time zone;
//! - the daily consolidation is a fold of postings into per-day totals, idempotent per event.
//!
//! # Layout
//! - [`money`]: [`Currency`], [`Amount`] (a positive entry amount) and [`Balance`] (signed).
//! - [`ids`]: [`MerchantId`], [`EntryId`], [`EventId`].
//! - [`calendar`]: [`BusinessDate`] and [`MerchantTimeZone`].
//! - [`merchant`]: [`Merchant`] and its name.
//! - [`entry`]: [`Entry`], [`EntryType`], [`Description`], [`Category`] and the recording rules.
//! - [`consolidation`]: [`DayTotals`], [`DailyBalance`], the fold that turns postings into
//!   daily balances, and [`MerchantDays`], the reference model the stores are tested against.
//!
//! Types are built with `parse`/`TryFrom`: a value that exists is valid.

pub mod calendar;
pub mod consolidation;
pub mod entry;
pub mod ids;
pub mod merchant;
pub mod money;
mod text;

pub use calendar::{BusinessDate, CalendarError, MerchantTimeZone};
pub use consolidation::{
    daily_balances, ApplyOutcome, ConsolidationError, DailyBalance, DayTotals, MerchantDays, Posting,
};
pub use entry::{Category, Description, Entry, EntryError, EntryType, NewEntry};
pub use ids::{EntryId, EventId, IdError, MerchantId};
pub use merchant::{Merchant, MerchantName};
pub use money::{Amount, Balance, Currency, MoneyError};
