-- Daily consolidation: per-day totals, the events already applied, and each merchant's
-- freshness. Opening balances are derived (sum of earlier nets), so a backdated entry changes
-- every later day without rewriting any row.
CREATE TABLE merchants (
    merchant_id TEXT    PRIMARY KEY,
    currency    TEXT    NOT NULL,
    as_of       INTEGER NOT NULL          -- unix microseconds: newest ledger commit reflected
);

CREATE TABLE daily_totals (
    merchant_id   TEXT    NOT NULL,
    business_date TEXT    NOT NULL,       -- YYYY-MM-DD
    total_credits INTEGER NOT NULL,       -- minor units
    total_debits  INTEGER NOT NULL,
    entry_count   INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, business_date)
) WITHOUT ROWID;

-- Deduplication: an event id is recorded in the same transaction as its effect.
CREATE TABLE processed_events (
    event_id   TEXT    PRIMARY KEY,
    applied_at INTEGER NOT NULL
) WITHOUT ROWID;
