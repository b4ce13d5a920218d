//! Identity links: the merchant an external issuer's subject or machine client acts for, when
//! its tokens carry no merchant claim.
//!
//! Cognito writes the merchant into a token only if the pool has a custom attribute (ID
//! tokens) or a pre-token-generation trigger (access tokens). Without either, an operator
//! links the token's `sub` (a person) or, for a machine-to-machine token, its `client_id`, to
//! a merchant with `cashflow identity link`; the link may cap the scopes the token grants.
//! The [`crate::OidcVerifier`] resolves the merchant in order: the merchant claim, a subject
//! link, a client link (machine tokens only: a person's token is never bound to a merchant
//! by the app client they signed in with), else it refuses the token naming what is missing.
//!
//! Links are checked in memory, from a [`Links`] table that the process's
//! [`crate::Refresher`] reloads with the revocations, so a new or removed link takes effect
//! in every process within [`crate::REFRESH_INTERVAL`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use cashflow_domain::MerchantId;

use crate::Scopes;

/// The longest subject or client id a link accepts (Cognito's are 36 and 26 characters).
pub const MAX_EXTERNAL_ID_LEN: usize = 256;

/// Which claim of a token a link matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// The token's `sub`: a person (or anything the issuer names by subject).
    Subject,
    /// A machine-to-machine token's `client_id`.
    Client,
}

impl LinkKind {
    /// The name stored and printed: `subject` or `client`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Subject => "subject",
            LinkKind::Client => "client",
        }
    }

    /// The kind stored as `name`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "subject" => Some(LinkKind::Subject),
            "client" => Some(LinkKind::Client),
            _ => None,
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityLink {
    pub kind: LinkKind,
    /// The subject or client id, exactly as the issuer writes it.
    pub external_id: String,
    /// The merchant its tokens act for.
    pub merchant_id: MerchantId,
    /// The most its tokens can grant; `None`: what the token grants.
    pub scopes: Option<Scopes>,
    /// When it was made (milliseconds since the epoch).
    pub created_at_ms: i64,
}

/// Refuses an id no issuer writes, saying why: empty, too long, or with control characters or
/// outer blanks (a paste gone wrong would otherwise make a link that never matches).
pub(crate) fn check_external_id(kind: LinkKind, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_EXTERNAL_ID_LEN {
        return Err(format!("a {kind} id is 1 to {MAX_EXTERNAL_ID_LEN} bytes"));
    }
    if id.chars().any(char::is_control) || id.trim() != id {
        return Err(format!("a {kind} id has no control characters or outer blanks"));
    }
    Ok(())
}

/// What a link grants a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkGrant {
    pub merchant_id: MerchantId,
    pub scopes: Option<Scopes>,
}

/// The links as loaded, by kind and id.
#[derive(Debug, Default)]
pub struct LinkTable {
    subjects: HashMap<String, LinkGrant>,
    clients: HashMap<String, LinkGrant>,
}

impl LinkTable {
    pub fn new(links: impl IntoIterator<Item = IdentityLink>) -> Self {
        let mut table = Self::default();
        for link in links {
            let grant = LinkGrant { merchant_id: link.merchant_id, scopes: link.scopes };
            match link.kind {
                LinkKind::Subject => table.subjects.insert(link.external_id, grant),
                LinkKind::Client => table.clients.insert(link.external_id, grant),
            };
        }
        table
    }

    /// The grant of the link of `kind` for `id`, if there is one.
    pub fn get(&self, kind: LinkKind, id: &str) -> Option<LinkGrant> {
        match kind {
            LinkKind::Subject => self.subjects.get(id),
            LinkKind::Client => self.clients.get(id),
        }
        .copied()
    }
}

/// The links every verifier of a process reads, replaced whole on each reload.
#[derive(Debug)]
pub struct Links {
    table: RwLock<(Arc<LinkTable>, Option<Instant>)>,
}

impl Default for Links {
    /// No link, never loaded.
    fn default() -> Self {
        Self { table: RwLock::new((Arc::default(), None)) }
    }
}

impl Links {
    /// Replaces the table.
    pub fn set(&self, links: Vec<IdentityLink>) {
        *self.table.write().unwrap_or_else(PoisonError::into_inner) =
            (Arc::new(LinkTable::new(links)), Some(Instant::now()));
    }

    /// The table as last loaded.
    pub fn table(&self) -> Arc<LinkTable> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner).0)
    }

    /// When the table was last loaded, if ever.
    pub fn loaded_at(&self) -> Option<Instant> {
        self.table.read().unwrap_or_else(PoisonError::into_inner).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_no_issuer_writes_are_refused() {
        for id in ["", " padded", "tab\there", &"x".repeat(MAX_EXTERNAL_ID_LEN + 1)] {
            assert!(check_external_id(LinkKind::Subject, id).is_err(), "{id:?}");
        }
        check_external_id(LinkKind::Client, "5p8n3q1f0aq2l6dq9q7a3c1b0e").unwrap();
    }

    #[test]
    fn a_table_finds_a_link_by_kind_and_exact_id() {
        let merchant = MerchantId::new();
        let link = |kind, id: &str| IdentityLink {
            kind,
            external_id: id.to_owned(),
            merchant_id: merchant,
            scopes: None,
            created_at_ms: 0,
        };
        let links = Links::default();
        assert!(links.loaded_at().is_none());
        links.set(vec![link(LinkKind::Subject, "abc")]);
        let table = links.table();
        assert_eq!(table.get(LinkKind::Subject, "abc").map(|g| g.merchant_id), Some(merchant));
        assert_eq!(table.get(LinkKind::Client, "abc"), None, "a subject link is not a client link");
        assert_eq!(table.get(LinkKind::Subject, "ABC"), None, "ids are exact");
        assert!(links.loaded_at().is_some());
    }
}
