//! How an entry's values are stored in SQLite, in one place: ids as their 16 bytes, the type as
//! 0/1, business dates as `YYYYMMDD` integers (see `migrations/sqlite/0005_compact_entries.sql`
//! for why). Reading a stored value that does not decode is [`StoreError::Corrupt`].

use chrono::Datelike;
use uuid::Uuid;

use cashflow_domain::{BusinessDate, EntryType};

use crate::store::StoreError;

/// `type` of a credit.
pub(crate) const CREDIT: i64 = 0;
/// `type` of a debit.
pub(crate) const DEBIT: i64 = 1;

pub(crate) fn kind_code(kind: EntryType) -> i64 {
    match kind {
        EntryType::Credit => CREDIT,
        EntryType::Debit => DEBIT,
    }
}

pub(crate) fn kind_of_code(code: i64) -> Result<EntryType, StoreError> {
    match code {
        CREDIT => Ok(EntryType::Credit),
        DEBIT => Ok(EntryType::Debit),
        other => Err(StoreError::Corrupt(format!("type: {other}"))),
    }
}

/// A business date as stored: `YYYYMMDD`, which orders like the date.
pub(crate) fn date_key(date: BusinessDate) -> i64 {
    let d = date.naive();
    i64::from(d.year()) * 10_000 + i64::from(d.month()) * 100 + i64::from(d.day())
}

/// The business date a stored `YYYYMMDD` names.
pub(crate) fn date_of_key(key: i64, what: &'static str) -> Result<BusinessDate, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("{what}: {key}"));
    let (year, month, day) = (key / 10_000, key / 100 % 100, key % 100);
    let year = i32::try_from(year).map_err(|_| corrupt())?;
    let (month, day) = (u32::try_from(month).map_err(|_| corrupt())?, u32::try_from(day).map_err(|_| corrupt())?);
    chrono::NaiveDate::from_ymd_opt(year, month, day).and_then(BusinessDate::from_naive).ok_or_else(corrupt)
}

/// A UUID as stored: its 16 bytes.
pub(crate) fn uuid_of_bytes(bytes: &[u8], what: &'static str) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|_| StoreError::Corrupt(format!("{what}: {} bytes, expected 16", bytes.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_key_reads_as_its_date_and_orders_like_it() {
        let dates = ["1970-01-01", "2026-02-28", "2026-11-23", "2026-12-31", "9999-12-31"].map(|d| {
            let date = BusinessDate::parse(d).unwrap();
            assert_eq!(date_of_key(date_key(date), "d").unwrap(), date);
            date_key(date)
        });
        assert!(dates.windows(2).all(|w| w[0] < w[1]), "{dates:?}");
        assert_eq!(dates[2], 20_261_123);
        for bad in [20_261_131, 20_261_323, 0, -20_261_123, 19_691_231] {
            assert!(matches!(date_of_key(bad, "d"), Err(StoreError::Corrupt(_))), "{bad}");
        }
    }

    #[test]
    fn a_type_code_reads_back_and_another_code_is_corrupt() {
        for kind in [EntryType::Credit, EntryType::Debit] {
            assert_eq!(kind_of_code(kind_code(kind)).unwrap(), kind);
        }
        assert!(matches!(kind_of_code(2), Err(StoreError::Corrupt(_))));
        assert!(matches!(uuid_of_bytes(&[0; 15], "id"), Err(StoreError::Corrupt(_))));
    }
}
