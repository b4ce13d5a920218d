//! Business days. A merchant closes its books per calendar day in its own time zone: a sale
//! at 22:30 in São Paulo on the 23rd belongs to the 23rd even though it is already the 24th in
//! UTC.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A rejected date or time zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("`{0}` is not a valid date (expected YYYY-MM-DD)")]
    InvalidDate(String),
    #[error("`{0}` is not a known IANA time zone (for example America/Sao_Paulo)")]
    UnknownTimeZone(String),
}

/// A calendar day in a merchant's time zone, the unit of the daily consolidation. Written and
/// read as `YYYY-MM-DD` (always four digits of year: see [`BusinessDate::MIN`] and
/// [`BusinessDate::MAX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BusinessDate(NaiveDate);

impl BusinessDate {
    /// Earliest business date we accept: nobody backdates a cash-flow entry before 1970, and
    /// the bound keeps every date inside what every storage backend represents.
    pub const MIN: BusinessDate = BusinessDate(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap());
    /// Latest business date we accept.
    pub const MAX: BusinessDate = BusinessDate(NaiveDate::from_ymd_opt(9999, 12, 31).unwrap());

    /// Parses exactly `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Self, CalendarError> {
        let invalid = || CalendarError::InvalidDate(text.chars().take(32).collect());
        // By hand rather than with a chrono format string, which is parsed again on every call:
        // this runs on every report request.
        let b = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| {
            b[range].iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
        };
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(invalid());
        }
        let (Some(year), Some(month), Some(day)) = (digits(0..4), digits(5..7), digits(8..10)) else {
            return Err(invalid());
        };
        let date = i32::try_from(year).ok().and_then(|y| NaiveDate::from_ymd_opt(y, month, day)).ok_or_else(invalid)?;
        Self::from_naive(date).ok_or_else(invalid)
    }

    /// Wraps a date within [`BusinessDate::MIN`]..=[`BusinessDate::MAX`].
    pub fn from_naive(date: NaiveDate) -> Option<Self> {
        let d = BusinessDate(date);
        (Self::MIN <= d && d <= Self::MAX).then_some(d)
    }

    /// The business date of an instant in a time zone.
    pub fn of(instant: DateTime<Utc>, tz: MerchantTimeZone) -> Self {
        BusinessDate(instant.with_timezone(&tz.0).date_naive())
    }

    /// The underlying calendar date.
    pub fn naive(&self) -> NaiveDate {
        self.0
    }

    /// The next day, if any.
    pub fn succ(&self) -> Option<Self> {
        self.0.checked_add_days(Days::new(1)).and_then(Self::from_naive)
    }

    /// The previous day, if any.
    pub fn pred(&self) -> Option<Self> {
        self.0.checked_sub_days(Days::new(1)).and_then(Self::from_naive)
    }

    /// Days from `self` to `later` (0 when equal, negative when `later` is earlier).
    pub fn days_until(&self, later: BusinessDate) -> i64 {
        (later.0 - self.0).num_days()
    }
}

impl BusinessDate {
    /// `YYYY-MM-DD`, written by hand: every entry's event, row and response writes its date,
    /// and chrono's `format` reads its format string again at every call (BENCHMARKS.md,
    /// session 28).
    fn text(&self) -> [u8; 10] {
        use chrono::Datelike;
        let digit = |n: u32| b'0' + (n % 10) as u8;
        // Within MIN..=MAX the year has four digits.
        let (year, month, day) = (self.0.year().unsigned_abs(), self.0.month(), self.0.day());
        [
            digit(year / 1000),
            digit(year / 100),
            digit(year / 10),
            digit(year),
            b'-',
            digit(month / 10),
            digit(month),
            b'-',
            digit(day / 10),
            digit(day),
        ]
    }
}

impl fmt::Display for BusinessDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text();
        f.pad(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for BusinessDate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.text();
        serializer.serialize_str(std::str::from_utf8(&text).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for BusinessDate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::text::deserialize(deserializer, "a date as YYYY-MM-DD", BusinessDate::parse)
    }
}

impl FromStr for BusinessDate {
    type Err = CalendarError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for BusinessDate {
    type Error = CalendarError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<BusinessDate> for String {
    fn from(d: BusinessDate) -> Self {
        d.to_string()
    }
}

/// A merchant's IANA time zone; it decides which business date an instant belongs to.
/// Serialized as its IANA name, so an unknown zone is refused where it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MerchantTimeZone(Tz);

impl MerchantTimeZone {
    /// The default time zone of a new merchant.
    pub const DEFAULT: MerchantTimeZone = MerchantTimeZone(Tz::America__Sao_Paulo);

    /// Parses an IANA name such as `America/Sao_Paulo` or `UTC`.
    pub fn parse(name: &str) -> Result<Self, CalendarError> {
        Tz::from_str(name)
            .map(MerchantTimeZone)
            .map_err(|_| CalendarError::UnknownTimeZone(name.chars().take(64).collect()))
    }

    /// The IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The chrono-tz zone, to render instants in the merchant's local offset.
    pub fn tz(&self) -> Tz {
        self.0
    }
}

impl Default for MerchantTimeZone {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<String> for MerchantTimeZone {
    type Error = CalendarError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<MerchantTimeZone> for String {
    fn from(tz: MerchantTimeZone) -> Self {
        tz.name().to_owned()
    }
}

impl fmt::Display for MerchantTimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_late_evening_sale_belongs_to_the_local_day() {
        // 2026-11-24T01:30Z is 22:30 on the 23rd in São Paulo (UTC-3).
        let instant = Utc.with_ymd_and_hms(2026, 11, 24, 1, 30, 0).unwrap();
        assert_eq!(BusinessDate::of(instant, MerchantTimeZone::DEFAULT).to_string(), "2026-11-23");
        let utc = MerchantTimeZone::parse("UTC").unwrap();
        assert_eq!(BusinessDate::of(instant, utc).to_string(), "2026-11-24");
    }

    #[test]
    fn dates_must_be_strict_iso_days() {
        assert!(BusinessDate::parse("2026-11-23").is_ok());
        for bad in [
            "2026-02-30",
            "2026-1-5",
            "26-11-23",
            "2026/11/23",
            "",
            "1969-12-31",
            "2026-11-23T00:00:00",
            "+026-11-23",
            "2026-+1-23",
            "2026-13-01",
            "2026-00-10",
            "2026-11-00",
            "2026-11-2a",
            "2026-11-2\u{e9}",
        ] {
            assert!(BusinessDate::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// The hand-written parser accepts exactly what chrono's `%Y-%m-%d` accepts in ten
        /// characters, within the supported range, and reads the same day, except that it is
        /// stricter on purpose where chrono is lenient: padding spaces (`2000- 1- 1`) are refused.
        #[test]
        fn dates_parse_as_chrono_parses_them(
            text in "[0-9+ -]{4}-[0-9+ -]{2}-[0-9+ -]{2}|[0-9]{4}-[01][0-9]-[0-3][0-9]"
        ) {
            let chrono = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                .ok()
                .and_then(BusinessDate::from_naive)
                .filter(|_| !text.contains(' '));
            proptest::prop_assert_eq!(BusinessDate::parse(&text).ok(), chrono, "{}", text);
        }

        /// Every supported day is written as chrono's `%Y-%m-%d` writes it, in JSON too, and
        /// read back.
        #[test]
        fn dates_are_written_as_chrono_writes_them(days in 0u64..=2_932_896) {
            let date = BusinessDate::MIN.naive().checked_add_days(Days::new(days)).and_then(BusinessDate::from_naive);
            let date = date.ok_or_else(|| proptest::test_runner::TestCaseError::reject("past MAX"))?;
            let expected = date.naive().format("%Y-%m-%d").to_string();
            proptest::prop_assert_eq!(date.to_string(), expected.clone());
            let json = serde_json::to_string(&date).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            proptest::prop_assert_eq!(&json, &format!("\"{expected}\""));
            proptest::prop_assert_eq!(serde_json::from_str::<BusinessDate>(&json).ok(), Some(date));
        }
    }

    #[test]
    fn the_edges_of_the_supported_range_are_written_with_four_digits() {
        assert_eq!(BusinessDate::MIN.to_string(), "1970-01-01");
        assert_eq!(BusinessDate::MAX.to_string(), "9999-12-31");
        assert_eq!(format!("[{:>12}]", BusinessDate::MIN), "[  1970-01-01]");
        assert!(serde_json::from_str::<BusinessDate>("\"2026-13-01\"").is_err());
        assert!(serde_json::from_str::<BusinessDate>("20261201").is_err());
    }

    #[test]
    fn unknown_time_zones_are_rejected() {
        assert!(MerchantTimeZone::parse("Mars/Olympus_Mons").is_err());
        assert_eq!(MerchantTimeZone::parse("Europe/Lisbon").unwrap().name(), "Europe/Lisbon");
    }

    #[test]
    fn days_step_across_month_ends() {
        let d = BusinessDate::parse("2026-02-28").unwrap();
        assert_eq!(d.succ().unwrap().to_string(), "2026-03-01");
        assert_eq!(d.succ().unwrap().pred(), Some(d));
        assert_eq!(d.days_until(BusinessDate::parse("2026-03-02").unwrap()), 2);
    }
}
