-- Identity links: which merchant an external issuer's (Cognito's) subject or machine client
-- acts for, when its tokens carry no merchant claim. Written by `cashflow identity link`,
-- reloaded by every verifying process with the revocations.
--
-- `kind` says which claim `external_id` is matched against: `subject` the token's `sub`,
-- `client` a machine-to-machine token's `client_id`. `scopes` caps what the token grants
-- (NULL: no cap). One merchant per subject or client: relinking needs an unlink first.

CREATE TABLE identity_links (
    kind          TEXT NOT NULL CHECK (kind IN ('subject', 'client')),
    external_id   TEXT NOT NULL CHECK (length(external_id) BETWEEN 1 AND 256),
    merchant_id   TEXT NOT NULL,            -- UUID, hyphenated
    scopes        TEXT,                     -- space-separated, canonical order; NULL: no cap
    created_at    INTEGER NOT NULL,         -- milliseconds since the epoch
    PRIMARY KEY (kind, external_id)
) STRICT;

CREATE INDEX identity_links_by_merchant ON identity_links (merchant_id);
