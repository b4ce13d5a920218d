//! Identifiers. UUIDs, version 7 when we mint them, so they sort by creation time: entry ids
//! double as a stable, index-friendly pagination key.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A malformed identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid identifier (expected a UUID)")]
pub struct IdError(pub String);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) identifier.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }

            /// Parses the hyphenated UUID form.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                Uuid::parse_str(s).map(Self).map_err(|_| IdError(truncate(s)))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

/// Keeps error messages short when the input is huge.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

uuid_id!(
    /// A merchant: the tenant every entry, balance and token belongs to.
    MerchantId
);
uuid_id!(
    /// One ledger entry.
    EntryId
);
uuid_id!(
    /// One integration event; consolidation deduplicates deliveries by this id.
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text_form() {
        let id = EntryId::new();
        assert_eq!(EntryId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn minted_ids_sort_by_creation_time() {
        let a = EntryId::new();
        let b = EntryId::new();
        assert!(a < b);
    }

    #[test]
    fn garbage_is_not_an_id() {
        assert!(MerchantId::parse("not-a-uuid").is_err());
        assert!(MerchantId::parse("").is_err());
    }
}
