-- Closing the day: one watermark per merchant (the books are closed *through* that date; NULL
-- when no day was ever closed) and the immutable close records. The watermark lives on the
-- merchant's row so that the row every writer locks always exists (see `postgres.rs`).
ALTER TABLE merchants ADD COLUMN closed_through date;

CREATE TABLE day_closes (
    seq                    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id            uuid        NOT NULL REFERENCES merchants (id),
    business_date          date        NOT NULL,   -- the day closed (and every earlier one with it)
    closed_at              timestamptz NOT NULL,
    closed_by              text        NOT NULL CHECK (char_length(closed_by) BETWEEN 1 AND 200),
    credits_minor          bigint      NOT NULL,   -- of entries dated on business_date
    debits_minor           bigint      NOT NULL,
    entry_count            bigint      NOT NULL CHECK (entry_count >= 0),
    expected_balance_minor bigint      NOT NULL,   -- every entry dated on or before business_date
    counted_cash_minor     bigint,
    note                   text                    CHECK (char_length(note) <= 500)
);
CREATE INDEX day_closes_by_date ON day_closes (merchant_id, business_date, seq);

CREATE FUNCTION day_closes_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'close records are immutable and never deleted'
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER day_closes_are_immutable BEFORE UPDATE OR DELETE ON day_closes
    FOR EACH ROW EXECUTE FUNCTION day_closes_are_immutable();
