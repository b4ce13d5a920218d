-- Failed token requests, counted per key (an account or a source address), so that password
-- and secret guessing is slowed down in every process that shares this database. A count
-- whose last failure is older than the throttle's window is forgotten (and deleted).

CREATE TABLE login_failures (
    key          text   PRIMARY KEY,   -- `account:<client>:<username>`, `client:<id>`, `addr:<ip>`
    failures     bigint NOT NULL CHECK (failures > 0),
    last_failure bigint NOT NULL       -- milliseconds since the epoch
);
CREATE INDEX login_failures_by_age ON login_failures (last_failure);
