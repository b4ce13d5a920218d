//! Money: integer minor units tagged with an ISO 4217 currency. Never floats.
//!
//! Amounts travel as decimal strings (`"150.00"`) so that no client ever rounds through a
//! binary float; we parse them into minor units with at most the currency's minor digits and
//! format them back with exactly that many.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a currency or an amount was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not a supported ISO 4217 currency code")]
    UnknownCurrency(String),
    #[error("amount must be a decimal string such as \"150.00\"")]
    InvalidFormat,
    #[error("amount has more decimal places than {currency} allows ({max})")]
    TooManyDecimals { currency: String, max: u8 },
    #[error("amount must be greater than zero")]
    NotPositive,
    #[error("amount exceeds the maximum of {max} minor units")]
    TooLarge { max: i64 },
    #[error("arithmetic overflow on money")]
    Overflow,
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(String, String),
}

/// ISO 4217 codes we support and their minor digits. The full list changes rarely; adding a
/// currency is adding a line here.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BHD", 3),
    ("BOB", 2),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("UYU", 2),
    ("VND", 0),
    ("ZAR", 2),
];

/// An ISO 4217 currency with its number of minor digits (BRL: 2, JPY: 0, KWD: 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    minor_digits: u8,
}

impl Currency {
    /// Brazilian real, the default currency of a merchant.
    pub const BRL: Currency = Currency { code: "BRL", minor_digits: 2 };

    /// Parses an upper-case ISO 4217 code.
    pub fn parse(code: &str) -> Result<Self, MoneyError> {
        CURRENCIES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|&(code, minor_digits)| Currency { code, minor_digits })
            .ok_or_else(|| MoneyError::UnknownCurrency(code.chars().take(16).collect()))
    }

    /// The three-letter code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// How many decimal places the currency's amounts have.
    pub fn minor_digits(&self) -> u8 {
        self.minor_digits
    }

    /// Formats a signed number of minor units with exactly this currency's minor digits.
    pub fn format_minor(&self, minor: i64) -> String {
        let digits = u32::from(self.minor_digits);
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        if digits == 0 {
            return format!("{sign}{abs}");
        }
        let scale = 10u64.pow(digits);
        format!("{sign}{}.{:0width$}", abs / scale, abs % scale, width = digits as usize)
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::text::deserialize(d, "an ISO 4217 currency code", Currency::parse)
    }
}

/// The amount of one entry: strictly positive, in minor units. The direction (credit or
/// debit) is the entry's type, never a sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    /// The largest amount one entry may carry: 15 digits of minor units. It keeps every amount
    /// exact in a JavaScript number (2^53) and leaves a daily sum of thousands of maximal
    /// entries far from `i64` overflow.
    pub const MAX_MINOR: i64 = 999_999_999_999_999;

    /// Builds an amount from minor units.
    pub fn from_minor(minor: i64) -> Result<Self, MoneyError> {
        if minor <= 0 {
            Err(MoneyError::NotPositive)
        } else if minor > Self::MAX_MINOR {
            Err(MoneyError::TooLarge { max: Self::MAX_MINOR })
        } else {
            Ok(Self(minor))
        }
    }

    /// Parses a decimal string (`"150"`, `"150.5"`, `"150.50"`) in the given currency. At most
    /// the currency's minor digits are accepted; no sign, exponent, spaces or separators.
    pub fn parse(text: &str, currency: Currency) -> Result<Self, MoneyError> {
        let (int_part, frac_part) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
            return Err(MoneyError::InvalidFormat);
        }
        let frac = frac_part.unwrap_or("");
        let digits = usize::from(currency.minor_digits());
        if frac.len() > digits {
            return Err(MoneyError::TooManyDecimals {
                currency: currency.code().to_owned(),
                max: currency.minor_digits(),
            });
        }
        let too_large = MoneyError::TooLarge { max: Self::MAX_MINOR };
        // Leading zeros are harmless; strip them so a long run of them cannot overflow.
        let int_part = int_part.trim_start_matches('0');
        if int_part.len() > 18 {
            return Err(too_large);
        }
        let int: i64 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| too_large.clone())? };
        let mut frac_minor: i64 = 0;
        for i in 0..digits {
            let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
            frac_minor = frac_minor * 10 + d;
        }
        let scale = 10i64.pow(u32::from(currency.minor_digits()));
        let minor = int.checked_mul(scale).and_then(|v| v.checked_add(frac_minor)).ok_or(too_large)?;
        Self::from_minor(minor)
    }

    /// Parses a count of money, such as the cash found in a drawer: an amount as [`parse`]
    /// takes it, or zero (an empty drawer is a count too). Returns minor units.
    ///
    /// [`parse`]: Amount::parse
    pub fn parse_count(text: &str, currency: Currency) -> Result<i64, MoneyError> {
        match Self::parse(text, currency) {
            Ok(amount) => Ok(amount.minor()),
            Err(MoneyError::NotPositive) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// The amount in minor units.
    pub fn minor(&self) -> i64 {
        self.0
    }
}

/// A signed sum of money in minor units (a balance, a net, a total). Arithmetic is checked:
/// an overflow is an error, never a wrap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Balance(i64);

impl Balance {
    /// Zero.
    pub const ZERO: Balance = Balance(0);

    /// Wraps a number of minor units.
    pub const fn from_minor(minor: i64) -> Self {
        Self(minor)
    }

    /// The value in minor units.
    pub const fn minor(&self) -> i64 {
        self.0
    }

    /// `self + other`, or an overflow error.
    pub fn checked_add(self, other: Balance) -> Result<Balance, MoneyError> {
        self.0.checked_add(other.0).map(Balance).ok_or(MoneyError::Overflow)
    }

    /// `self - other`, or an overflow error.
    pub fn checked_sub(self, other: Balance) -> Result<Balance, MoneyError> {
        self.0.checked_sub(other.0).map(Balance).ok_or(MoneyError::Overflow)
    }

    /// Formats with exactly the currency's minor digits (`-12.50`).
    pub fn format(&self, currency: Currency) -> String {
        currency.format_minor(self.0)
    }
}

impl From<Amount> for Balance {
    fn from(a: Amount) -> Self {
        Balance(a.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brl(s: &str) -> Result<i64, MoneyError> {
        Amount::parse(s, Currency::BRL).map(|a| a.minor())
    }

    #[test]
    fn decimal_strings_become_minor_units() {
        assert_eq!(brl("150.00"), Ok(15_000));
        assert_eq!(brl("150.5"), Ok(15_050));
        assert_eq!(brl("150"), Ok(15_000));
        assert_eq!(brl("0.01"), Ok(1));
        assert_eq!(brl("000123.45"), Ok(12_345));
    }

    #[test]
    fn a_count_may_be_zero_but_keeps_every_other_rule_of_an_amount() {
        assert_eq!(Amount::parse_count("0", Currency::BRL), Ok(0));
        assert_eq!(Amount::parse_count("0.00", Currency::BRL), Ok(0));
        assert_eq!(Amount::parse_count("12.50", Currency::BRL), Ok(1250));
        assert!(Amount::parse_count("-1", Currency::BRL).is_err());
        assert!(Amount::parse_count("0.001", Currency::BRL).is_err());
    }

    #[test]
    fn amounts_respect_the_currency_minor_digits() {
        let jpy = Currency::parse("JPY").unwrap();
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(Amount::parse("1500", jpy).map(|a| a.minor()), Ok(1500));
        assert!(matches!(Amount::parse("1500.0", jpy), Err(MoneyError::TooManyDecimals { .. })));
        assert_eq!(Amount::parse("1.234", kwd).map(|a| a.minor()), Ok(1234));
        assert!(matches!(brl("1.001"), Err(MoneyError::TooManyDecimals { .. })));
    }

    #[test]
    fn zero_negative_and_malformed_amounts_are_rejected() {
        assert_eq!(brl("0"), Err(MoneyError::NotPositive));
        assert_eq!(brl("0.00"), Err(MoneyError::NotPositive));
        for bad in ["-1.00", "+1.00", "", ".", "1.", ".5", "1e3", "1,50", " 1.00", "1.00 ", "NaN", "1.0.0", "١٢"] {
            assert_eq!(brl(bad), Err(MoneyError::InvalidFormat), "{bad:?}");
        }
    }

    #[test]
    fn amounts_that_would_overflow_are_rejected() {
        assert!(brl("9999999999999.99").is_ok());
        assert!(matches!(brl("10000000000000.00"), Err(MoneyError::TooLarge { .. })));
        assert!(matches!(brl("92233720368547758.07"), Err(MoneyError::TooLarge { .. })));
        assert!(matches!(brl(&"9".repeat(400)), Err(MoneyError::TooLarge { .. })));
    }

    #[test]
    fn balances_format_with_exactly_the_minor_digits() {
        assert_eq!(Balance::from_minor(-1250).format(Currency::BRL), "-12.50");
        assert_eq!(Balance::from_minor(5).format(Currency::BRL), "0.05");
        assert_eq!(Balance::from_minor(0).format(Currency::BRL), "0.00");
        assert_eq!(Balance::from_minor(i64::MIN).format(Currency::BRL), "-92233720368547758.08");
        assert_eq!(Balance::from_minor(7).format(Currency::parse("JPY").unwrap()), "7");
        assert_eq!(Balance::from_minor(7).format(Currency::parse("KWD").unwrap()), "0.007");
    }

    #[test]
    fn unknown_currencies_are_rejected() {
        assert!(Currency::parse("XYZ").is_err());
        assert!(Currency::parse("brl").is_err());
    }

    #[test]
    fn balance_arithmetic_is_checked() {
        assert_eq!(Balance::from_minor(i64::MAX).checked_add(Balance::from_minor(1)), Err(MoneyError::Overflow));
        assert_eq!(Balance::from_minor(i64::MIN).checked_sub(Balance::from_minor(1)), Err(MoneyError::Overflow));
    }

    proptest! {
        #[test]
        fn formatting_then_parsing_an_amount_is_the_identity(minor in 1i64..=Amount::MAX_MINOR) {
            let text = Currency::BRL.format_minor(minor);
            prop_assert_eq!(brl(&text), Ok(minor));
        }

        #[test]
        fn parsing_never_panics(text in ".{0,40}") {
            let _ = brl(&text);
        }

        #[test]
        fn checked_sums_never_wrap(a in any::<i64>(), b in any::<i64>()) {
            let sum = Balance::from_minor(a).checked_add(Balance::from_minor(b));
            match a.checked_add(b) {
                Some(v) => prop_assert_eq!(sum, Ok(Balance::from_minor(v))),
                None => prop_assert_eq!(sum, Err(MoneyError::Overflow)),
            }
        }
    }
}
