-- The ledger: merchants, immutable entries and the transactional outbox.
CREATE TABLE merchants (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    currency   TEXT    NOT NULL,
    time_zone  TEXT    NOT NULL,
    created_at INTEGER NOT NULL            -- unix microseconds
);

CREATE TABLE entries (
    id              TEXT    PRIMARY KEY,   -- UUIDv7: sorts by recording time
    merchant_id     TEXT    NOT NULL REFERENCES merchants (id),
    type            TEXT    NOT NULL CHECK (type IN ('credit', 'debit')),
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    currency        TEXT    NOT NULL,
    description     TEXT    NOT NULL,
    category        TEXT,
    occurred_at     INTEGER NOT NULL,      -- unix microseconds
    business_date   TEXT    NOT NULL,      -- YYYY-MM-DD in the merchant's time zone
    recorded_at     INTEGER NOT NULL,      -- unix microseconds
    reversal_of     TEXT    UNIQUE REFERENCES entries (id),  -- one reversal per entry at most
    idempotency_key TEXT,
    request_hash    TEXT,
    UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX entries_by_business_date ON entries (merchant_id, business_date, id);

-- Integrity above all: the database itself refuses to edit or delete an entry.
CREATE TRIGGER entries_are_immutable BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable; record a reversal'); END;
CREATE TRIGGER entries_are_never_deleted BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are never deleted; record a reversal'); END;

-- Events written in the same transaction as the entry; the relay publishes and deletes them.
CREATE TABLE outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id   TEXT    NOT NULL UNIQUE,
    body       TEXT    NOT NULL,
    created_at INTEGER NOT NULL            -- unix microseconds
);
