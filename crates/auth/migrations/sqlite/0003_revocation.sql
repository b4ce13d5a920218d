-- Revocable credentials and signing-key rotation.
--
-- A revoked client or disabled user gets no new token, and the verifiers of every process
-- refuse its outstanding ones once they reload this table. Times are milliseconds since the
-- epoch. A rotated signing key stays published until `retires_at`, when every token it
-- signed has expired; a new key signs from `activates_at`, once every verifier has it.

ALTER TABLE clients ADD COLUMN revoked_at INTEGER;
ALTER TABLE users ADD COLUMN disabled_at INTEGER;
ALTER TABLE signing_keys ADD COLUMN activates_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE signing_keys ADD COLUMN retires_at INTEGER;
