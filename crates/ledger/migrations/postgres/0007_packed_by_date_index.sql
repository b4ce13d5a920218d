-- The by-date index packed as it grows (issue 17): 72 bytes per entry with half-empty pages,
-- 33 with full ones, measured on 200,000 entries over 32 merchants.
--
-- Why it was half empty: new entries land at the end of each merchant's run of the index, not
-- at the index's right edge, and Postgres splits such a page half and half unless it sees
-- ascending inserts ("split after the new item", nbtsplitloc.c). It looks for them only in
-- indexes whose tuples are at most two 8-byte keys wide: (merchant, business_date, id) with a
-- 16-byte uuid never qualified. A bigint in the uuid's place does: the merchant's page then
-- splits at the leaf fillfactor (90 %) and its left half stays full.
--
-- The bigint is the uuid's first eight bytes, shifted right by one bit so that it is never
-- negative: it never decreases as the uuid grows, so (business_date, entry_order(id), id) sorts
-- exactly as (business_date, id), the API's page order, and the page query reads the index in
-- order and sorts only the entries that share those eight bytes (UUIDv7: a millisecond and 12
-- bits), which a LIMIT makes few. Deduplication is off: two entries of one millisecond share a
-- key, and a posting list would make the page's tuples unequal in size, which turns the split
-- back into a 50/50 one.
--
-- A SQL-standard body (bound when created, not through the search path) that the planner
-- inlines, into the index's expression and into the query's alike.
CREATE FUNCTION entry_order(id uuid) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN (('x' || encode(substring(uuid_send(id) FROM 1 FOR 8), 'hex'))::bit(64) >> 1)::bigint;

-- Rebuilt inside the migration's transaction: DROP INDEX locks `entries` exclusively, so reads
-- and writes of entries wait while the new index is built (seconds per million entries).
DROP INDEX entries_by_business_date;
CREATE INDEX entries_by_business_date ON entries (merchant, business_date, entry_order(id))
    WITH (deduplicate_items = off);
