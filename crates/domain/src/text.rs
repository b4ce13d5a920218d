//! Reading a value from its text in serde without an owned `String`: the borrowed text of the
//! input (or serde's buffer) goes straight to the type's `parse`.

use std::fmt;
use std::marker::PhantomData;

/// Deserializes a `T` from a string with `parse`, naming `expecting` in the error of a value
/// that is not a string.
pub(crate) fn deserialize<'de, D, T, E>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    E: fmt::Display,
{
    struct Visitor<T, E> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, E>,
        value: PhantomData<T>,
    }
    impl<T, E: fmt::Display> serde::de::Visitor<'_> for Visitor<T, E> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<Error: serde::de::Error>(self, text: &str) -> Result<T, Error> {
            (self.parse)(text).map_err(Error::custom)
        }
    }
    deserializer.deserialize_str(Visitor { expecting, parse, value: PhantomData })
}
