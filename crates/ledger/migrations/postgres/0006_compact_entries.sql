-- Compact entries: a third fewer bytes per entry (issue 17). An entry took ~270 bytes with its
-- indexes: a 134-byte row (the merchant's 16-byte uuid, `type` as 'credit'/'debit' text, and
-- columns in an order that padded them for alignment) and 52-byte tuples in the by-date index,
-- whose pages are half full (inserts at every merchant's position split them 50/50).
--
-- - The merchant is its 4-byte integer key (`merchants.seq`), not its uuid: the by-date index
--   holds (merchant, business_date, id) in 24 bytes plus the tuple header, instead of 44.
-- - `type` is a 1-byte "char": 'c' (credit) or 'd' (debit).
-- - Columns are ordered for alignment, so no byte is padding: the 8-byte ones first, then the
--   uuid id (16 bytes, byte-aligned), the 4-byte ones (with `adjusts_date`, which takes no byte
--   when NULL and keeps its 4-byte alignment when not), the "char", and then the
--   variable-length and the nullable ones, which need no alignment.
--
-- The conversion runs in the migration's one transaction: a new table, a copy with conversion
-- (in id order, so the rows are stored in their primary key's order), the swap. It holds an
-- exclusive lock on `entries` while it runs (seconds per million entries): writes and reads of
-- entries wait for it. Same constraint and index names as before (named here: while the old
-- table exists, Postgres would number the generated ones), so a violation still names
-- `entries_one_reversal_per_entry`. Triggers go with the old table (DROP TABLE fires none) and
-- come back on the new one, with the same function.

-- The merchant's key in `entries`: existing merchants are numbered now, new ones by the identity.
ALTER TABLE merchants ADD COLUMN seq integer GENERATED ALWAYS AS IDENTITY
    CONSTRAINT merchants_seq_key UNIQUE;

ALTER TABLE entries RENAME TO entries_v5;
-- Index names are the schema's: the new table's must be free.
ALTER INDEX entries_pkey RENAME TO entries_v5_pkey;
DROP INDEX entries_by_business_date;
DROP INDEX entries_one_reversal_per_entry;
DROP INDEX entries_idempotency_key_per_merchant;

CREATE TABLE entries (
    amount_minor    bigint      NOT NULL CONSTRAINT entries_amount_minor_check
                                         CHECK (amount_minor BETWEEN 1 AND 999999999999999),
    occurred_at     timestamptz NOT NULL,                             -- microsecond precision
    recorded_at     timestamptz NOT NULL,
    id              uuid        CONSTRAINT entries_pkey PRIMARY KEY,  -- UUIDv7: sorts by recording time
    merchant        integer     NOT NULL CONSTRAINT entries_merchant_fkey REFERENCES merchants (seq),
    business_date   date        NOT NULL,                             -- in the merchant's time zone
    adjusts_date    date                 CONSTRAINT entries_adjust_an_earlier_day CHECK (adjusts_date < business_date),
    type            "char"      NOT NULL CONSTRAINT entries_type_check CHECK (type IN ('c', 'd')),   -- credit, debit
    currency        text        NOT NULL CONSTRAINT entries_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    description     text        NOT NULL CONSTRAINT entries_description_check
                                         CHECK (char_length(description) BETWEEN 1 AND 280),
    category        text                 CONSTRAINT entries_category_check CHECK (char_length(category) BETWEEN 1 AND 64),
    reversal_of     uuid                 CONSTRAINT entries_reversal_of_fkey REFERENCES entries (id)
                                         CONSTRAINT entries_check CHECK (reversal_of <> id),
    idempotency_key text,
    request_hash    text,
    CONSTRAINT entries_idempotency_key_has_a_request_hash CHECK ((idempotency_key IS NULL) = (request_hash IS NULL))
);
INSERT INTO entries (amount_minor, occurred_at, recorded_at, id, merchant, business_date, adjusts_date, type,
                     currency, description, category, reversal_of, idempotency_key, request_hash)
SELECT e.amount_minor, e.occurred_at, e.recorded_at, e.id, m.seq, e.business_date, e.adjusts_date,
       CASE e.type WHEN 'credit' THEN 'c'::"char" WHEN 'debit' THEN 'd'::"char" END,
       e.currency, e.description, e.category, e.reversal_of, e.idempotency_key, e.request_hash
FROM entries_v5 e JOIN merchants m ON m.id = e.merchant_id
ORDER BY e.id;

DROP TABLE entries_v5;

-- The page query (by cursor), the day and range totals, the close's totals: one merchant's days.
CREATE INDEX entries_by_business_date ON entries (merchant, business_date, id);
-- One reversal per entry at most: a second one is refused here, even under concurrency.
CREATE UNIQUE INDEX entries_one_reversal_per_entry ON entries (reversal_of) WHERE reversal_of IS NOT NULL;
-- Idempotent writes: a key is unique per merchant, and this is the arbiter of
-- `INSERT … ON CONFLICT (merchant, idempotency_key) WHERE idempotency_key IS NOT NULL`.
CREATE UNIQUE INDEX entries_idempotency_key_per_merchant ON entries (merchant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Integrity above all: the database itself refuses to edit, delete or truncate entries.
CREATE TRIGGER entries_are_immutable BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION entries_are_immutable();
CREATE TRIGGER entries_are_never_truncated BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION entries_are_immutable();
