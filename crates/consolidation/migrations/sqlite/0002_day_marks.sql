-- Closed days: every close and reopen the ledger announced, keyed by the ledger's order (`seq`)
-- so that applying them in any order, or twice, ends in the same state. The newest row holds the
-- watermark; a closed day's close is the newest close covering it.
CREATE TABLE day_marks (
    merchant_id    TEXT    NOT NULL,
    seq            INTEGER NOT NULL,
    action         TEXT    NOT NULL CHECK (action IN ('close', 'reopen')),
    business_date  TEXT    NOT NULL,   -- the day closed, or the first day reopened
    from_date      TEXT,               -- a close: the first day it closed (NULL: every earlier day)
    closed_through TEXT,               -- the watermark after it (NULL: no day closed)
    at             INTEGER NOT NULL,   -- unix microseconds
    counted_cash   INTEGER,            -- a close: minor units, when counted
    difference     INTEGER,
    PRIMARY KEY (merchant_id, seq)
) WITHOUT ROWID;
