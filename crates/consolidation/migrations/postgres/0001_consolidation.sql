-- Daily consolidation on Postgres: per-day totals, the events already applied, and each
-- merchant's freshness. Runs in the `consolidation` schema (the pool's search_path).
-- Opening balances are derived (sum of earlier nets), so a backdated entry changes every later
-- day without rewriting any row.

CREATE TABLE merchants (
    merchant_id uuid        PRIMARY KEY,
    currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    as_of       timestamptz NOT NULL                 -- newest ledger commit reflected
);

-- Many consumers add to the same row of a busy day: totals only ever change by atomic
-- increments (`SET total = total + delta`), and the free space left on each page lets those
-- updates stay on the page (HOT) instead of bloating the index.
CREATE TABLE daily_totals (
    merchant_id   uuid   NOT NULL,
    business_date date   NOT NULL,
    total_credits bigint NOT NULL CHECK (total_credits >= 0),   -- minor units
    total_debits  bigint NOT NULL CHECK (total_debits >= 0),
    entry_count   bigint NOT NULL CHECK (entry_count >= 0),
    PRIMARY KEY (merchant_id, business_date)
) WITH (fillfactor = 80);

-- Deduplication: an event id is recorded in the same transaction as its effect.
CREATE TABLE processed_events (
    event_id   uuid        PRIMARY KEY,
    applied_at timestamptz NOT NULL
);
