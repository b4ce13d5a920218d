-- Identities of the built-in OAuth 2.0 issuer on Postgres: machine clients
-- (client_credentials), human users (password grant) and the token signing key. Runs in the
-- `identity` schema (the pool's search_path).
--
-- Client secrets are 256-bit random values, so a plain SHA-256 is enough to make a stolen
-- table useless; passwords are chosen by people and get argon2id. The signing key is kept so
-- that tokens issued before a restart still verify after it.

CREATE TABLE clients (
    client_id     text        PRIMARY KEY,
    secret_sha256 text        NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
    merchant_id   uuid        NOT NULL,
    scopes        text        NOT NULL,            -- space-separated, canonical order
    name          text        CHECK (char_length(name) BETWEEN 1 AND 120),
    created_at    timestamptz NOT NULL
);
CREATE INDEX clients_by_merchant ON clients (merchant_id);

CREATE TABLE users (
    username      text        PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9._@-]{3,64}$'),
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2%'),   -- PHC string
    merchant_id   uuid        NOT NULL,
    scopes        text        NOT NULL,
    created_at    timestamptz NOT NULL
);
-- `Alice` and `alice` are one user (usernames are ASCII, so lower() is exact); lookups use it.
CREATE UNIQUE INDEX users_username_ignoring_case ON users (lower(username));
CREATE INDEX users_by_merchant ON users (merchant_id);

CREATE TABLE signing_keys (
    kid        text        PRIMARY KEY,
    pkcs8      bytea       NOT NULL,               -- Ed25519 private key, PKCS#8 v2 DER
    active     boolean     NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL
);
-- At most one active key: concurrent first starts race on INSERT … ON CONFLICT DO NOTHING and
-- all end up with the winner's key. Inactive rows are room for rotation.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;
