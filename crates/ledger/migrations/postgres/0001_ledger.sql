-- The ledger on Postgres: merchants, immutable entries and the transactional outbox.
-- Runs in the `ledger` schema (the pool's search_path); no name here is schema-qualified.

CREATE TABLE merchants (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 120),
    currency   text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),   -- ISO 4217
    time_zone  text        NOT NULL CHECK (time_zone <> ''),         -- IANA name
    created_at timestamptz NOT NULL
);

CREATE TABLE entries (
    id              uuid        PRIMARY KEY,                          -- UUIDv7: sorts by recording time
    merchant_id     uuid        NOT NULL REFERENCES merchants (id),
    type            text        NOT NULL CHECK (type IN ('credit', 'debit')),
    amount_minor    bigint      NOT NULL CHECK (amount_minor BETWEEN 1 AND 999999999999999),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description     text        NOT NULL CHECK (char_length(description) BETWEEN 1 AND 280),
    category        text                 CHECK (char_length(category) BETWEEN 1 AND 64),
    occurred_at     timestamptz NOT NULL,                             -- microsecond precision
    business_date   date        NOT NULL,                             -- in the merchant's time zone
    recorded_at     timestamptz NOT NULL,
    reversal_of     uuid                 REFERENCES entries (id) CHECK (reversal_of <> id),
    idempotency_key text,
    request_hash    text,
    -- One reversal per entry at most: a second one is refused here, even under concurrency.
    CONSTRAINT entries_one_reversal_per_entry UNIQUE (reversal_of),
    -- The arbiter of `INSERT … ON CONFLICT` for idempotent writes.
    CONSTRAINT entries_idempotency_key_per_merchant UNIQUE (merchant_id, idempotency_key),
    CONSTRAINT entries_idempotency_key_has_a_request_hash CHECK ((idempotency_key IS NULL) = (request_hash IS NULL))
);
CREATE INDEX entries_by_business_date ON entries (merchant_id, business_date, id);

-- Integrity above all: the database itself refuses to edit, delete or truncate entries.
CREATE FUNCTION entries_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger entries are immutable and never deleted; record a reversal'
        USING ERRCODE = 'integrity_constraint_violation';
END
$$;
CREATE TRIGGER entries_are_immutable BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION entries_are_immutable();
CREATE TRIGGER entries_are_never_truncated BEFORE TRUNCATE ON entries
    FOR EACH STATEMENT EXECUTE FUNCTION entries_are_immutable();

-- Events written in the same transaction as the entry; the relay publishes and deletes them.
-- `seq` is taken at insert, not at commit, so a later seq may commit first: the relay then
-- publishes it first, which is harmless (consolidation does not depend on order).
CREATE TABLE outbox (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id   uuid        NOT NULL UNIQUE,
    body       text        NOT NULL,                                  -- the event's JSON, as published
    created_at timestamptz NOT NULL
);
