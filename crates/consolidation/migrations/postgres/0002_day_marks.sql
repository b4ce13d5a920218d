-- Closed days: every close and reopen the ledger announced, keyed by the ledger's order (`seq`)
-- so that applying them in any order, or twice, ends in the same state. The newest row holds the
-- watermark; a closed day's close is the newest close covering it.
CREATE TABLE day_marks (
    merchant_id    uuid        NOT NULL,
    seq            bigint      NOT NULL,
    action         text        NOT NULL CHECK (action IN ('close', 'reopen')),
    business_date  date        NOT NULL,   -- the day closed, or the first day reopened
    from_date      date,                   -- a close: the first day it closed (NULL: every earlier day)
    closed_through date,                   -- the watermark after it (NULL: no day closed)
    at             timestamptz NOT NULL,
    counted_cash   bigint,                 -- a close: minor units, when counted
    difference     bigint,
    PRIMARY KEY (merchant_id, seq)
);
