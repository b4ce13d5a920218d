//! Every problem `type` the API can answer, in one list.
//!
//! Clients match on a problem's `type` (`/problems/<slug>`), never on its `title`, so the slugs are
//! part of the contract like the paths are. They used to be string literals at each call site,
//! where a typo made a new, undocumented type. Now [`crate::Problem::new`] takes a
//! [`ProblemType`], so a type that is not in this list does not compile; the OpenAPI document
//! enumerates exactly [`ProblemType::ALL`] as the `Problem` schema's `type` (so the contract
//! check rejects any other), and `docs/problems.md` is checked against the list by a test.
//!
//! The doc comment of each variant is its description, served in the document and the docs.

macro_rules! problem_types {
    ($( $(#[doc = $doc:literal])+ $variant:ident = $slug:literal, )+) => {
        /// A stable problem `type`: its slug, and what it means.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ProblemType {
            $( $(#[doc = $doc])+ $variant, )+
        }

        impl ProblemType {
            /// Every type, in the order of the documentation.
            pub const ALL: &'static [ProblemType] = &[$(ProblemType::$variant),+];

            /// The kebab-case slug: the `type` member is `/problems/<slug>`.
            pub const fn slug(self) -> &'static str {
                match self { $(ProblemType::$variant => $slug,)+ }
            }

            /// What the type means and when the API answers it (its doc comment).
            pub fn description(self) -> &'static str {
                match self { $(ProblemType::$variant => concat!($($doc),+).trim(),)+ }
            }
        }
    };
}

problem_types! {
    // Authentication and authorisation.
    /// No access token, or one that is invalid, expired, revoked or maps to no merchant (401).
    Unauthorized = "unauthorized",
    /// The token is valid but lacks the scope the operation requires, named in `scope` (403).
    InsufficientScope = "insufficient-scope",
    /// The token's merchant is not registered in the ledger (403).
    UnknownMerchant = "unknown-merchant",
    // The token endpoint (each also carries the OAuth 2.0 `error` code).
    /// A token request missing a parameter or malformed (400, `invalid_request`).
    InvalidRequest = "invalid-request",
    /// Unknown client or wrong client secret (401, `invalid_client`).
    InvalidClient = "invalid-client",
    /// Wrong username or password (400, `invalid_grant`).
    InvalidGrant = "invalid-grant",
    /// A grant type the issuer does not support (400, `unsupported_grant_type`).
    UnsupportedGrantType = "unsupported-grant-type",
    /// A scope the client or user may not have (400, `invalid_scope`).
    InvalidScope = "invalid-scope",
    /// Too many failed attempts: wait `Retry-After` seconds (429, `slow_down`).
    SlowDown = "slow-down",
    // The request as a whole.
    /// No such route, or no such resource for this caller (404).
    NotFound = "not-found",
    /// The route exists but not with this method (405).
    MethodNotAllowed = "method-not-allowed",
    /// A body that is not `application/json` (415).
    UnsupportedMediaType = "unsupported-media-type",
    /// A body that is not valid JSON (400).
    MalformedJson = "malformed-json",
    /// A JSON body of the wrong shape: a missing, unknown or mistyped member (400).
    InvalidBody = "invalid-body",
    /// A body over the size limit (413).
    PayloadTooLarge = "payload-too-large",
    /// A query string that does not parse (400).
    InvalidQuery = "invalid-query",
    // Fields, each naming the `field` at fault (400).
    /// `type` is neither `credit` nor `debit`.
    InvalidType = "invalid-type",
    /// `amount` is not a positive decimal in the merchant's currency's minor units.
    InvalidAmount = "invalid-amount",
    /// `amount` is above the largest amount an entry may carry.
    AmountTooLarge = "amount-too-large",
    /// `description` is empty, too long or has control characters.
    InvalidDescription = "invalid-description",
    /// `category` is empty, too long or has control characters.
    InvalidCategory = "invalid-category",
    /// `occurred_at` is not RFC 3339, is in the future, or is before 1970.
    InvalidOccurredAt = "invalid-occurred-at",
    /// An entry the domain refuses for another reason, said in `detail`.
    InvalidEntry = "invalid-entry",
    /// The `Idempotency-Key` header is not 1 to 255 visible ASCII characters.
    InvalidIdempotencyKey = "invalid-idempotency-key",
    /// An entry id that is not a UUID.
    InvalidId = "invalid-id",
    /// A date that is not `YYYY-MM-DD` from 1970.
    InvalidDate = "invalid-date",
    /// `from` is after `to`.
    InvalidDateRange = "invalid-date-range",
    /// A range longer than a report may span (366 days).
    DateRangeTooLong = "date-range-too-long",
    /// A page `cursor` this API did not hand out.
    InvalidCursor = "invalid-cursor",
    /// A page `limit` outside 1 to 500.
    InvalidLimit = "invalid-limit",
    /// A close's `note` that is too long.
    InvalidNote = "invalid-note",
    /// A close's `counted_cash` that is not an amount (zero is allowed).
    InvalidCountedCash = "invalid-counted-cash",
    /// A reopen's `reason` that is empty, too long or has control characters.
    InvalidReason = "invalid-reason",
    // Conflicts with what is recorded (409) and rules of the books (422).
    /// The `Idempotency-Key` was used before with a different body (409).
    IdempotencyKeyReused = "idempotency-key-reused",
    /// The entry has already been reversed (409).
    AlreadyReversed = "already-reversed",
    /// A reversal cannot itself be reversed (409).
    CannotReverseAReversal = "cannot-reverse-a-reversal",
    /// The entry's business day is closed; `first_open_day` takes entries, or send
    /// `adjust_into_open_day` (409).
    DayClosed = "day-closed",
    /// The day, or a later one, is already closed; reopen first (409).
    DayAlreadyClosed = "day-already-closed",
    /// A reopen of a day that is not closed (409).
    DayNotClosed = "day-not-closed",
    /// A close of a day that has not begun in the merchant's time zone (422).
    DayNotOver = "day-not-over",
    /// A balance beyond the representable range (422).
    BalanceOverflow = "balance-overflow",
    // Reports.
    /// Consolidation has not yet received this merchant's registration; retry shortly (404).
    MerchantNotConsolidated = "merchant-not-consolidated",
    // The server.
    /// A dependency (database, queue) is unavailable; retry (503).
    Unavailable = "unavailable",
    /// A bug on our side; the request id in the body finds it in our logs (500).
    Internal = "internal",
}

impl ProblemType {
    /// The `type` member's value: `/problems/<slug>`.
    pub fn uri(self) -> String {
        format!("/problems/{}", self.slug())
    }

    /// The type of a `type` member (`/problems/<slug>`) or of a bare slug, if it is one of ours.
    pub fn parse(text: &str) -> Option<Self> {
        let slug = text.strip_prefix("/problems/").unwrap_or(text);
        Self::ALL.iter().copied().find(|kind| kind.slug() == slug)
    }
}

impl std::fmt::Display for ProblemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.slug())
    }
}

#[cfg(test)]
mod tests {
    use super::ProblemType;
    use std::collections::HashSet;

    #[test]
    fn every_slug_is_unique_kebab_case_and_parses_back_to_its_type() {
        let mut seen = HashSet::new();
        for &kind in ProblemType::ALL {
            let slug = kind.slug();
            assert!(seen.insert(slug), "{slug} is listed twice");
            assert!(
                !slug.is_empty()
                    && !slug.starts_with('-')
                    && !slug.ends_with('-')
                    && !slug.contains("--")
                    && slug.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{slug} is not kebab-case"
            );
            assert_eq!(ProblemType::parse(&kind.uri()), Some(kind));
            assert_eq!(ProblemType::parse(slug), Some(kind));
        }
        assert_eq!(ProblemType::parse("/problems/no-such-thing"), None);
    }

    #[test]
    fn every_type_is_described_in_a_sentence() {
        for &kind in ProblemType::ALL {
            let description = kind.description();
            assert!(description.len() > 10 && description.ends_with('.'), "{kind}: {description:?}");
        }
    }

    #[test]
    fn docs_problems_md_lists_exactly_the_types_with_their_descriptions() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/problems.md");
        let docs = std::fs::read_to_string(path).unwrap_or_default();
        let rows: Vec<&str> = docs.lines().filter(|l| l.starts_with("| `")).collect();
        let expected: Vec<String> = ProblemType::ALL.iter().map(|k| table_row(*k)).collect();
        assert_eq!(
            rows,
            expected.iter().map(String::as_str).collect::<Vec<_>>(),
            "docs/problems.md's table is out of date; its rows should be:\n{}",
            expected.join("\n")
        );
    }

    fn table_row(kind: ProblemType) -> String {
        format!("| `{}` | {} |", kind.slug(), kind.description().replace('|', "\\|"))
    }
}
