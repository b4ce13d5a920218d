-- Deduplication markers are kept for a window (issue 17), not forever: the pruner deletes the
-- oldest by `applied_at`, in small batches, through this index. The ids become their 16 bytes
-- (they were 36-character text: 58 bytes per applied event in all). Converted in place, in the
-- migration's one transaction.
ALTER TABLE processed_events RENAME TO processed_events_v3;

CREATE TABLE processed_events (
    event_id   BLOB    PRIMARY KEY,   -- the UUID's 16 bytes
    applied_at INTEGER NOT NULL       -- unix microseconds
) WITHOUT ROWID;

INSERT INTO processed_events (event_id, applied_at)
SELECT unhex(replace(event_id, '-', '')), applied_at FROM processed_events_v3 ORDER BY 1;

DROP TABLE processed_events_v3;

CREATE INDEX processed_events_by_time ON processed_events (applied_at);
