//! OAuth 2.0 scopes: what an access token lets its bearer do.
//!
//! A merchant's clients get one scope per kind of operation, so that a point-of-sale
//! integration can record entries without reading reports, a dashboard can read without
//! writing, and closing (or reopening) the books is a permission of its own. One more,
//! `ledger:read`, is the service scope the consolidation side reads the ledger with over gRPC.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One permission an access token can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Record ledger entries (and corrections).
    EntriesWrite,
    /// List and read ledger entries.
    EntriesRead,
    /// Read daily consolidated balances.
    ReportsRead,
    /// A service token: read any merchant's ledger over gRPC (entries and day totals), for the
    /// consolidation side's reconciliation. Never part of [`Scopes::all`].
    LedgerRead,
    /// Close a day's books ("fechamento de caixa").
    DaysClose,
    /// Reopen closed days.
    DaysReopen,
}

/// A scope name we do not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope `{0}`")]
pub struct UnknownScope(pub String);

impl Scope {
    /// Every scope, in canonical order.
    pub const ALL: [Scope; 6] = [
        Scope::EntriesWrite,
        Scope::EntriesRead,
        Scope::ReportsRead,
        Scope::LedgerRead,
        Scope::DaysClose,
        Scope::DaysReopen,
    ];

    /// The wire name, e.g. `entries:write`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::EntriesWrite => "entries:write",
            Scope::EntriesRead => "entries:read",
            Scope::ReportsRead => "reports:read",
            Scope::LedgerRead => "ledger:read",
            Scope::DaysClose => "days:close",
            Scope::DaysReopen => "days:reopen",
        }
    }

    /// Parses a scope name.
    ///
    /// Cognito (and other authorization servers) name custom scopes after their resource
    /// server, `https://api.cashflow/entries:write` or `cashflow/entries:write`; only the part
    /// after the last `/` names the permission, so both forms are accepted.
    pub fn parse(s: &str) -> Result<Self, UnknownScope> {
        let name = s.rsplit('/').next().unwrap_or(s);
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == name)
            .ok_or_else(|| UnknownScope(s.chars().take(64).collect()))
    }

    const fn bit(self) -> u8 {
        match self {
            Scope::EntriesWrite => 1,
            Scope::EntriesRead => 2,
            Scope::ReportsRead => 4,
            Scope::LedgerRead => 8,
            Scope::DaysClose => 16,
            Scope::DaysReopen => 32,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A set of scopes. A bit set, so it is `Copy` and cheap to carry in every [`crate::Principal`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Scopes(u8);

impl Scopes {
    /// No scope at all.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every scope a merchant's own clients and users get: not the service scope
    /// [`Scope::LedgerRead`], which reads every merchant's ledger and is granted only on purpose.
    pub const fn all() -> Self {
        Self(Scope::EntriesWrite.bit() | Scope::EntriesRead.bit() | Scope::ReportsRead.bit())
    }

    /// Parses a list separated by spaces and/or commas (`"entries:write entries:read"`,
    /// `"entries:write,reports:read"`). An empty list is the empty set; an unknown name is an
    /// error naming it, because a caller asking for a permission we do not have made a mistake.
    pub fn parse_list(s: &str) -> Result<Self, UnknownScope> {
        s.split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|part| !part.is_empty())
            .try_fold(Self::empty(), |acc, part| Ok(acc.with(Scope::parse(part)?)))
    }

    /// Whether `scope` is in the set.
    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The set plus `scope`.
    #[must_use]
    pub const fn with(self, scope: Scope) -> Self {
        Self(self.0 | scope.bit())
    }

    /// Adds `scope`.
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    /// Scopes in both sets.
    #[must_use]
    pub const fn intersection(self, other: Scopes) -> Self {
        Self(self.0 & other.0)
    }

    /// Whether every scope of `self` is also in `other`.
    pub const fn is_subset_of(self, other: Scopes) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(Self::empty(), Scopes::with)
    }
}

impl From<Scope> for Scopes {
    fn from(scope: Scope) -> Self {
        Self::empty().with(scope)
    }
}

/// Space-separated, canonical order: the `scope` format of RFC 6749 §3.3.
impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Scope::as_str)).finish()
    }
}

impl FromStr for Scopes {
    type Err = UnknownScope;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_list(s)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Scope::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Serialized as the space-separated string, like the `scope` claim.
impl Serialize for Scopes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Scopes::parse_list(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips_through_its_name() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Ok(scope));
        }
    }

    #[test]
    fn cognito_resource_server_prefixes_are_accepted() {
        assert_eq!(Scope::parse("https://api.cashflow/entries:write"), Ok(Scope::EntriesWrite));
        assert_eq!(Scope::parse("cashflow/reports:read"), Ok(Scope::ReportsRead));
    }

    #[test]
    fn unknown_scopes_are_named_in_the_error() {
        assert_eq!(Scopes::parse_list("entries:read admin"), Err(UnknownScope("admin".into())));
        assert!(Scope::parse("entries").is_err());
        assert!(Scope::parse("").is_err());
    }

    #[test]
    fn lists_split_on_spaces_and_commas_and_print_in_canonical_order() {
        let scopes = Scopes::parse_list(" reports:read,entries:write  entries:read, ").unwrap();
        assert_eq!(scopes, Scopes::all());
        assert_eq!(scopes.to_string(), "entries:write entries:read reports:read");
        assert_eq!(Scopes::parse_list("").unwrap(), Scopes::empty());
        assert_eq!(Scopes::empty().to_string(), "");
    }

    #[test]
    fn the_service_scope_parses_but_is_not_among_the_merchant_scopes() {
        assert_eq!(Scope::parse("ledger:read"), Ok(Scope::LedgerRead));
        assert!(!Scopes::all().contains(Scope::LedgerRead));
        let service = Scopes::parse_list("ledger:read").unwrap();
        assert_eq!(service.to_string(), "ledger:read");
    }

    #[test]
    fn subsets_and_intersections_follow_set_rules() {
        let read = Scopes::from(Scope::EntriesRead);
        assert!(read.is_subset_of(Scopes::all()));
        assert!(!Scopes::all().is_subset_of(read));
        assert!(Scopes::empty().is_subset_of(read));
        assert_eq!(Scopes::all().intersection(read), read);
        assert!(read.contains(Scope::EntriesRead));
        assert!(!read.contains(Scope::EntriesWrite));
    }
}
