-- Deduplication markers are kept for a window (issue 17), not forever: the pruner deletes the
-- oldest by `applied_at`, in small batches, through this index.
CREATE INDEX processed_events_by_time ON processed_events (applied_at);
