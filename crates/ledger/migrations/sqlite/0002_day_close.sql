-- Closing the day: one watermark per merchant (the books are closed *through* that date; NULL
-- when no day was ever closed) and the immutable close records.
ALTER TABLE merchants ADD COLUMN closed_through TEXT;   -- YYYY-MM-DD

CREATE TABLE day_closes (
    seq                    INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id            TEXT    NOT NULL REFERENCES merchants (id),
    business_date          TEXT    NOT NULL,   -- the day closed (and every earlier one with it)
    closed_at              INTEGER NOT NULL,   -- unix microseconds
    closed_by              TEXT    NOT NULL,
    credits_minor          INTEGER NOT NULL,   -- of entries dated on business_date
    debits_minor           INTEGER NOT NULL,
    entry_count            INTEGER NOT NULL,
    expected_balance_minor INTEGER NOT NULL,   -- every entry dated on or before business_date
    counted_cash_minor     INTEGER,
    note                   TEXT
);
CREATE INDEX day_closes_by_date ON day_closes (merchant_id, business_date, seq);

CREATE TRIGGER day_closes_are_immutable BEFORE UPDATE ON day_closes
BEGIN SELECT RAISE(ABORT, 'close records are immutable'); END;
CREATE TRIGGER day_closes_are_never_deleted BEFORE DELETE ON day_closes
BEGIN SELECT RAISE(ABORT, 'close records are never deleted'); END;
