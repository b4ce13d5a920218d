-- Compact entries: a third of the bytes per entry (issue 17). The UUIDs were stored as
-- 36-character text three or four times per row (row, primary key index, by-date index, the
-- idempotency index every row entered even without a key): 375 bytes per entry on disk.
--
-- - Ids are 16-byte BLOBs, and the entry is stored *in* its primary key's B-tree (WITHOUT
--   ROWID, keyed by the UUIDv7 id): ids grow with time, so rows append to the right edge and
--   the pages stay full; a by-id read is one seek, with no rowid in between.
-- - The merchant is its small integer key (`merchants.seq`), not its 36-character id: the
--   by-date index holds (merchant, business_date, id) in a few bytes plus the id.
-- - `type` is 0 (credit) or 1 (debit), which SQLite stores in no byte at all; dates are
--   YYYYMMDD integers (4 bytes, still readable and still ordered).
-- - The idempotency and reversal indexes are partial: only the entries with a key, only the
--   reversals, enter them.
--
-- The conversion runs in the migration's one transaction: a new table, a copy with conversion,
-- the swap. Triggers go with the old table (DROP TABLE fires none) and come back on the new one.

ALTER TABLE merchants ADD COLUMN seq INTEGER;   -- the merchant's key in `entries`
UPDATE merchants SET seq = rowid;
CREATE UNIQUE INDEX merchants_by_seq ON merchants (seq);

DROP TRIGGER entries_are_immutable;
DROP TRIGGER entries_are_never_deleted;
DROP INDEX entries_by_business_date;
ALTER TABLE entries RENAME TO entries_v4;

CREATE TABLE entries (
    id              BLOB    PRIMARY KEY,   -- the UUIDv7's 16 bytes: sorts by recording time
    merchant        INTEGER NOT NULL REFERENCES merchants (seq),
    type            INTEGER NOT NULL CHECK (type IN (0, 1)),   -- 0 credit, 1 debit
    amount_minor    INTEGER NOT NULL CHECK (amount_minor > 0),
    currency        TEXT    NOT NULL,
    description     TEXT    NOT NULL,
    category        TEXT,
    occurred_at     INTEGER NOT NULL,      -- unix microseconds
    business_date   INTEGER NOT NULL,      -- YYYYMMDD in the merchant's time zone
    recorded_at     INTEGER NOT NULL,      -- unix microseconds
    reversal_of     BLOB    REFERENCES entries (id),
    adjusts_date    INTEGER,               -- YYYYMMDD, before business_date
    idempotency_key TEXT,
    request_hash    TEXT
) WITHOUT ROWID;

INSERT INTO entries (id, merchant, type, amount_minor, currency, description, category, occurred_at,
                     business_date, recorded_at, reversal_of, adjusts_date, idempotency_key, request_hash)
SELECT unhex(replace(e.id, '-', '')), m.seq, CASE e.type WHEN 'credit' THEN 0 WHEN 'debit' THEN 1 END,
       e.amount_minor, e.currency, e.description, e.category, e.occurred_at,
       CAST(replace(e.business_date, '-', '') AS INTEGER), e.recorded_at, unhex(replace(e.reversal_of, '-', '')),
       CAST(replace(e.adjusts_date, '-', '') AS INTEGER), e.idempotency_key, e.request_hash
FROM entries_v4 e JOIN merchants m ON m.id = e.merchant_id
ORDER BY e.id;

DROP TABLE entries_v4;

-- The page query (by cursor), the day and range totals, the close's totals: one merchant's days.
CREATE INDEX entries_by_business_date ON entries (merchant, business_date, id);
-- One reversal per entry at most.
CREATE UNIQUE INDEX entries_one_reversal_per_entry ON entries (reversal_of) WHERE reversal_of IS NOT NULL;
-- Idempotent writes: a key is unique per merchant.
CREATE UNIQUE INDEX entries_idempotency_key_per_merchant ON entries (merchant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Integrity above all: the database itself refuses to edit or delete an entry.
CREATE TRIGGER entries_are_immutable BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are immutable; record a reversal'); END;
CREATE TRIGGER entries_are_never_deleted BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'ledger entries are never deleted; record a reversal'); END;
