//! Money as a merchant reads and types it: `R$ 1.234,56` in Portuguese, `R$1,234.56` in
//! English. One function formats and one parses, so what the page shows can always be typed
//! back (a property test holds them to that). Amounts stay integer minor units throughout.

use crate::i18n::Lang;

/// Why a typed amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("no digits")]
    Empty,
    #[error("unexpected character `{0}`")]
    Unexpected(char),
    #[error("thousands separators must group three digits")]
    Grouping,
    #[error("more than {0} decimal places")]
    TooManyDecimals(u8),
    #[error("too large")]
    TooLarge,
}

/// The currency symbol a merchant expects to see.
fn symbol(currency: &str) -> &str {
    match currency {
        "BRL" => "R$",
        "USD" => "US$",
        "EUR" => "€",
        other => other,
    }
}

fn separators(lang: Lang) -> (char, char) {
    match lang {
        Lang::Pt => ('.', ','),
        Lang::En => (',', '.'),
    }
}

/// Formats `minor` units of `currency` (with `digits` decimal places) for `lang`:
/// `R$ 1.234,56`, `-R$ 0,50`; in English `R$1,234.56`.
pub fn format(minor: i64, currency: &str, digits: u8, lang: Lang) -> String {
    let (group, decimal) = separators(lang);
    let scale = 10u64.pow(u32::from(digits));
    let abs = minor.unsigned_abs();
    let units = (abs / scale).to_string();
    let mut grouped = String::with_capacity(units.len() + units.len() / 3 + 8);
    for (i, c) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(group);
        }
        grouped.push(c);
    }
    let sign = if minor < 0 { "-" } else { "" };
    let space = match lang {
        Lang::Pt => " ",
        Lang::En => "",
    };
    let symbol = symbol(currency);
    if digits == 0 {
        return format!("{sign}{symbol}{space}{grouped}");
    }
    format!("{sign}{symbol}{space}{grouped}{decimal}{:0width$}", abs % scale, width = usize::from(digits))
}

/// Formats an amount for an input field (no symbol, no grouping): `1234,56` / `1234.56`.
pub fn format_plain(minor: i64, digits: u8, lang: Lang) -> String {
    let (_, decimal) = separators(lang);
    let scale = 10u64.pow(u32::from(digits));
    let abs = minor.unsigned_abs();
    let sign = if minor < 0 { "-" } else { "" };
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    format!("{sign}{}{decimal}{:0width$}", abs / scale, abs % scale, width = usize::from(digits))
}

/// Reads an amount typed in `lang` into minor units with `digits` decimal places.
///
/// Accepts what [`format`] writes (sign, symbol, grouping) and what people type:
/// `1.234,56`, `1234,56` and `1234` in Portuguese; `1,234.56` and `1234.56` in English. A lone
/// separator of the other language followed by one or two digits (`1234.56` in Portuguese) is
/// unambiguous and read as the decimal point; anything that could be read two ways (`10.50`
/// where `.` groups thousands) is an error rather than a guess.
pub fn parse(text: &str, currency: &str, digits: u8, lang: Lang) -> Result<i64, AmountError> {
    let (group, decimal) = separators(lang);
    let mut rest = text.trim();
    let negative = rest.starts_with('-');
    if negative {
        rest = rest[1..].trim_start();
    }
    for prefix in [symbol(currency), currency] {
        if let Some(r) = rest.strip_prefix(prefix) {
            rest = r.trim_start();
            break;
        }
    }
    let decimal = match (rest.contains(decimal), rest.rfind(group)) {
        (false, Some(at)) if rest.matches(group).count() == 1 && (1..=2).contains(&(rest.len() - at - 1)) => group,
        _ => decimal,
    };
    let (whole, fraction) = match rest.split_once(decimal) {
        Some((w, f)) => (w, Some(f)),
        None => (rest, None),
    };
    let mut units: i64 = 0;
    let mut seen_digits = 0usize;
    let mut first = true;
    let grouped = whole.contains(group) && decimal != group;
    for part in whole.split(if grouped { group } else { '\u{0}' }) {
        if grouped && ((first && !(1..=3).contains(&part.len())) || (!first && part.len() != 3)) {
            return Err(AmountError::Grouping);
        }
        first = false;
        for c in part.chars() {
            let d = c.to_digit(10).ok_or(AmountError::Unexpected(c))?;
            units = units.checked_mul(10).and_then(|u| u.checked_add(i64::from(d))).ok_or(AmountError::TooLarge)?;
            seen_digits += 1;
        }
    }
    let scale = 10i64.pow(u32::from(digits));
    let mut minor = units.checked_mul(scale).ok_or(AmountError::TooLarge)?;
    if let Some(fraction) = fraction {
        if fraction.len() > usize::from(digits) {
            return Err(AmountError::TooManyDecimals(digits));
        }
        let mut place = scale;
        for c in fraction.chars() {
            let d = c.to_digit(10).ok_or(AmountError::Unexpected(c))?;
            place /= 10;
            minor = minor.checked_add(i64::from(d) * place).ok_or(AmountError::TooLarge)?;
            seen_digits += 1;
        }
    }
    if seen_digits == 0 {
        return Err(AmountError::Empty);
    }
    Ok(if negative { -minor } else { minor })
}

/// Reads an amount as the API writes it (`-1234.56`).
pub fn parse_api(text: &str, digits: u8) -> Option<i64> {
    parse(text, "", digits, Lang::En).ok()
}

/// Writes minor units as the API reads them (`1234.56`).
pub fn to_api(minor: i64, digits: u8) -> String {
    format_plain(minor, digits, Lang::En)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn portuguese_groups_with_dots_and_uses_a_decimal_comma() {
        assert_eq!(format(123_456, "BRL", 2, Lang::Pt), "R$ 1.234,56");
        assert_eq!(format(-50, "BRL", 2, Lang::Pt), "-R$ 0,50");
        assert_eq!(format(100_000_000, "BRL", 2, Lang::Pt), "R$ 1.000.000,00");
    }

    #[test]
    fn english_groups_with_commas_and_has_no_space_after_the_symbol() {
        assert_eq!(format(123_456, "BRL", 2, Lang::En), "R$1,234.56");
        assert_eq!(format(7, "BRL", 2, Lang::En), "R$0.07");
    }

    #[test]
    fn the_ways_people_type_an_amount_are_read() {
        for typed in ["1.234,56", "1234,56", "R$ 1.234,56", " 1234.56 "] {
            assert_eq!(parse(typed, "BRL", 2, Lang::Pt), Ok(123_456), "pt {typed}");
        }
        for typed in ["1,234.56", "1234.56", "R$1,234.56"] {
            assert_eq!(parse(typed, "BRL", 2, Lang::En), Ok(123_456), "en {typed}");
        }
        assert_eq!(parse("1234", "BRL", 2, Lang::Pt), Ok(123_400));
        assert_eq!(parse("0,5", "BRL", 2, Lang::Pt), Ok(50));
    }

    #[test]
    fn ambiguous_or_malformed_amounts_are_refused_not_guessed() {
        assert_eq!(parse("10.5000", "BRL", 2, Lang::Pt), Err(AmountError::Grouping));
        assert_eq!(parse("1,2345", "BRL", 2, Lang::Pt), Err(AmountError::TooManyDecimals(2)));
        assert_eq!(parse("12a", "BRL", 2, Lang::Pt), Err(AmountError::Unexpected('a')));
        assert_eq!(parse("", "BRL", 2, Lang::Pt), Err(AmountError::Empty));
        assert_eq!(parse("99999999999999999999", "BRL", 2, Lang::Pt), Err(AmountError::TooLarge));
    }

    proptest! {
        #[test]
        fn formatting_then_parsing_gives_back_the_same_minor_units(
            minor in -999_999_999_999_999i64..=999_999_999_999_999,
            digits in 0u8..=3,
            en in any::<bool>(),
        ) {
            let lang = if en { Lang::En } else { Lang::Pt };
            let shown = format(minor, "BRL", digits, lang);
            prop_assert_eq!(parse(&shown, "BRL", digits, lang), Ok(minor), "{}", shown);
            let plain = format_plain(minor, digits, lang);
            prop_assert_eq!(parse(&plain, "BRL", digits, lang), Ok(minor), "{}", plain);
        }
    }
}
