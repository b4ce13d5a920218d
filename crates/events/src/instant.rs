//! Instants on the wire: RFC 3339 in UTC with a `Z`, the fraction as chrono's `AutoSi` writes
//! it (none, or 3, 6 or 9 digits). That is exactly what chrono's own `Serialize` writes, and
//! what every release before this one wrote; it is formatted and read here by hand.
//!
//! Why: chrono serializes an instant through `collect_str`, one piece at a time, and
//! `serde_json` escapes each piece apart; it parses one with its general format parser. The two
//! instants of an entry's event were half of the instructions of its serialization
//! (BENCHMARKS.md, session 28). Anything outside the shape written here (a year past 9999, a
//! leap second, an offset other than `Z`) is left to chrono, both ways, so the wire form is
//! unchanged and every form chrono read before is still read.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, Timelike, Utc};
use serde::{de, Deserializer, Serialize, Serializer};

/// Longest form written here: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LONGEST: usize = 30;

/// Writes `instant` as chrono does (`#[serde(serialize_with = "instant::serialize")]`).
pub(crate) fn serialize<S: Serializer>(instant: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut text = Text::default();
    if text.write(instant) {
        serializer.serialize_str(text.as_str())
    } else {
        instant.serialize(serializer)
    }
}

/// Reads what [`serialize`] writes, and anything else chrono reads
/// (`#[serde(deserialize_with = "instant::deserialize")]`).
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(InstantVisitor)
}

/// An instant as the value of a struct field, for hand-written `Serialize` impls.
pub(crate) struct Wire<'a>(pub(crate) &'a DateTime<Utc>);

impl Serialize for Wire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(self.0, serializer)
    }
}

/// An instant as a value read by hand-written `Deserialize` impls.
pub(crate) struct Value(pub(crate) DateTime<Utc>);

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize(deserializer).map(Value)
    }
}

struct InstantVisitor;

impl de::Visitor<'_> for InstantVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an RFC 3339 date and time")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        match read(text.as_bytes()) {
            Some(instant) => Ok(instant),
            // chrono's own `Deserialize` for `DateTime<Utc>` reads exactly this way.
            None => text.parse::<DateTime<FixedOffset>>().map(|t| t.with_timezone(&Utc)).map_err(E::custom),
        }
    }
}

/// The form [`serialize`] writes, or `None` for anything else.
fn read(text: &[u8]) -> Option<DateTime<Utc>> {
    let (head, fraction) = match text {
        [head @ .., b'Z'] if head.len() == 19 => (head, &[][..]),
        [head @ .., b'Z'] if head.len() > 20 && head.get(19) == Some(&b'.') => head.split_at(19),
        _ => return None,
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(at, byte)| head.get(at) != Some(&byte)) {
        return None;
    }
    let number = |from: usize, to: usize| {
        head.get(from..to)?.iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))
    };
    let digits = if fraction.is_empty() { fraction } else { fraction.get(1..).filter(|d| d.len() <= 9)? };
    let scale = 10u32.pow(9 - u32::try_from(digits.len()).ok()?);
    let nanos = digits.iter().try_fold(0u32, |n, &c| c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0')))?;
    let date = NaiveDate::from_ymd_opt(i32::try_from(number(0, 4)?).ok()?, number(5, 7)?, number(8, 10)?)?;
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    // Second 60 (a leap second) is chrono's to read.
    (second < 60).then_some(())?;
    Some(date.and_hms_nano_opt(hour, minute, second, nanos * scale)?.and_utc())
}

/// [`LONGEST`] bytes and how many of them are written.
#[derive(Default)]
struct Text {
    bytes: [u8; LONGEST],
    len: usize,
}

impl Text {
    /// Writes `instant`; false (with nothing usable written) when chrono must write it.
    fn write(&mut self, instant: &DateTime<Utc>) -> bool {
        let Ok(year) = u32::try_from(instant.year()) else { return false };
        let nanos = instant.nanosecond();
        if year > 9999 || nanos >= 1_000_000_000 {
            return false;
        }
        self.number(year, 4);
        self.byte(b'-');
        self.number(instant.month(), 2);
        self.byte(b'-');
        self.number(instant.day(), 2);
        self.byte(b'T');
        self.number(instant.hour(), 2);
        self.byte(b':');
        self.number(instant.minute(), 2);
        self.byte(b':');
        self.number(instant.second(), 2);
        // chrono's `SecondsFormat::AutoSi`: the fewest of 0, 3, 6 or 9 digits that are exact.
        let (fraction, width) = match nanos {
            0 => (0, 0),
            n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
            n if n % 1_000 == 0 => (n / 1_000, 6),
            n => (n, 9),
        };
        if width > 0 {
            self.byte(b'.');
            self.number(fraction, width);
        }
        self.byte(b'Z');
        true
    }

    fn byte(&mut self, byte: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// `n` in exactly `width` digits, zero-padded.
    fn number(&mut self, n: u32, width: usize) {
        let end = (self.len + width).min(LONGEST);
        let mut rest = n;
        for slot in self.bytes.get_mut(self.len..end).into_iter().flatten().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        self.len = end;
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        self.bytes.get(..self.len).and_then(|bytes| std::str::from_utf8(bytes).ok()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    /// What chrono's own `Serialize` writes: the form every earlier release wrote.
    fn chrono_writes(instant: &DateTime<Utc>) -> String {
        serde_json::to_string(instant).unwrap()
    }

    fn ours(instant: &DateTime<Utc>) -> String {
        serde_json::to_string(&Wire(instant)).unwrap()
    }

    fn read_back(json: &str) -> DateTime<Utc> {
        #[derive(serde::Deserialize)]
        struct Field(#[serde(deserialize_with = "deserialize")] DateTime<Utc>);
        serde_json::from_str::<Field>(json).unwrap().0
    }

    #[test]
    fn every_fraction_is_written_as_chrono_writes_it() {
        let second = Utc.with_ymd_and_hms(2026, 11, 23, 13, 15, 0).unwrap();
        for nanos in [0, 120_000_000, 123_000_000, 123_456_000, 123_456_789, 1, 999_999_999] {
            let instant = second + chrono::Duration::nanoseconds(nanos);
            assert_eq!(ours(&instant), chrono_writes(&instant));
            assert_eq!(read_back(&ours(&instant)), instant);
        }
        assert_eq!(ours(&(second + chrono::Duration::microseconds(123_456))), r#""2026-11-23T13:15:00.123456Z""#);
    }

    #[test]
    fn what_only_chrono_writes_or_reads_is_left_to_chrono() {
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(ours(&far), chrono_writes(&far));
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_500_000_000)
            .unwrap()
            .and_utc();
        assert_eq!(ours(&leap), chrono_writes(&leap));
        // Whatever chrono reads (an offset, a space, a fraction of any length) or refuses, this does too.
        #[derive(Debug, serde::Deserialize)]
        struct Field(#[serde(deserialize_with = "deserialize")] DateTime<Utc>);
        for text in [
            "2026-11-23T10:15:00-03:00",
            "2026-11-23T13:15:00+00:00",
            "2026-11-23 13:15:00Z",
            "2026-11-23T13:15:00.5Z",
            "2026-11-23T13:15:00.1234567890Z",
            "2016-12-31T23:59:60Z",
            "2026-02-30T00:00:00Z",
            "2026-11-23T24:00:00Z",
            "2026-11-23T13:15:00.Z",
            "2026-11-23T13:15Z",
            "x",
        ] {
            let json = format!("\"{text}\"");
            let by_chrono = serde_json::from_str::<DateTime<Utc>>(&json).ok();
            assert_eq!(serde_json::from_str::<Field>(&json).ok().map(|f| f.0), by_chrono, "{text}");
        }
        assert!(serde_json::from_str::<Field>("\"2026-11-23T24:00:00Z\"").is_err());
    }

    proptest! {
        #[test]
        fn any_instant_is_written_as_chrono_writes_it_and_read_back(
            secs in -62_135_596_800i64..=253_402_300_799,
            nanos in prop_oneof![Just(0u32), 0u32..1_000, (0u32..1_000).prop_map(|n| n * 1_000_000), (0u32..1_000_000).prop_map(|n| n * 1_000), 0u32..1_000_000_000],
        ) {
            let instant = DateTime::from_timestamp(secs, nanos).unwrap();
            prop_assert_eq!(ours(&instant), chrono_writes(&instant));
            prop_assert_eq!(read_back(&ours(&instant)), instant);
        }
    }
}
