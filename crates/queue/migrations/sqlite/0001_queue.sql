-- The embedded queue: a durable stand-in for SQS with the same contract (at-least-once,
-- visibility timeout, receive count, dead-letter after N receives).
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT    NOT NULL UNIQUE,   -- deduplication id, as SQS's MessageDeduplicationId
    body          TEXT    NOT NULL,
    enqueued_at   INTEGER NOT NULL,          -- unix microseconds
    visible_at    INTEGER NOT NULL,          -- unix microseconds; leased until then
    receive_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_by_visibility ON messages (visible_at, id);

CREATE TABLE dead_letters (
    id            INTEGER PRIMARY KEY,
    event_id      TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    enqueued_at   INTEGER NOT NULL,
    failed_at     INTEGER NOT NULL,
    receive_count INTEGER NOT NULL
);
