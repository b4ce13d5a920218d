-- Identities of the built-in OAuth 2.0 issuer: machine clients (client_credentials), human
-- users (password grant) and the token signing key.
--
-- Client secrets are 256-bit random values, so a plain SHA-256 is enough to make a stolen
-- table useless; passwords are chosen by people and get argon2id. The signing key is kept so
-- that tokens issued before a restart still verify after it.

CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY NOT NULL,
    secret_sha256 TEXT NOT NULL,            -- lowercase hex
    merchant_id   TEXT NOT NULL,            -- UUID, hyphenated
    scopes        TEXT NOT NULL,            -- space-separated, canonical order
    name          TEXT,                     -- for people listing clients
    created_at    TEXT NOT NULL             -- RFC 3339, UTC
) STRICT;

CREATE INDEX clients_by_merchant ON clients (merchant_id);

CREATE TABLE users (
    username      TEXT PRIMARY KEY NOT NULL COLLATE NOCASE,  -- `Alice` and `alice` are one user
    password_hash TEXT NOT NULL,            -- argon2id PHC string
    merchant_id   TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    created_at    TEXT NOT NULL
) STRICT;

CREATE INDEX users_by_merchant ON users (merchant_id);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY NOT NULL,
    pkcs8      BLOB NOT NULL,               -- Ed25519 private key, PKCS#8 v2 DER
    active     INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at TEXT NOT NULL
) STRICT;

-- At most one active key: concurrent first starts race on INSERT OR IGNORE and all end up
-- with the winner's key. Inactive rows are room for rotation.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active = 1;
