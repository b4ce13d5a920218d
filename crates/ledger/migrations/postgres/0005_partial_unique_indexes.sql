-- Only the entries that have an idempotency key, and only the reversals, enter the indexes that
-- keep those unique (issue 17: every entry entered both, with NULLs, 17 bytes per entry). Same
-- names, so a violation still names `entries_one_reversal_per_entry`; the idempotent insert's
-- `ON CONFLICT (merchant_id, idempotency_key) WHERE idempotency_key IS NOT NULL` infers the
-- partial index as its arbiter. Built inside the migration's transaction: it blocks writes to
-- `entries` while it runs (seconds per million entries).
ALTER TABLE entries DROP CONSTRAINT entries_one_reversal_per_entry;
CREATE UNIQUE INDEX entries_one_reversal_per_entry ON entries (reversal_of) WHERE reversal_of IS NOT NULL;

ALTER TABLE entries DROP CONSTRAINT entries_idempotency_key_per_merchant;
CREATE UNIQUE INDEX entries_idempotency_key_per_merchant ON entries (merchant_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
