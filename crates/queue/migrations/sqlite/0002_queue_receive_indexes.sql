-- The dead-letter check of every receive (`receive_count >= max AND visible_at <= now`) used
-- the visibility index, which matches every visible message: with a backlog of a million
-- messages each receive scanned them all (twice), and draining slowed to under 1,000 messages
-- a second. An index led by the receive count finds the few over the limit directly.
-- Receives take the oldest visible messages in id order (a rowid scan that stops after the
-- batch), so the visibility index has no reader left.
DROP INDEX messages_by_visibility;
CREATE INDEX messages_by_receives ON messages (receive_count, visible_at);
