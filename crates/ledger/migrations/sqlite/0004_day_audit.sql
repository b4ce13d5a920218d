-- Reopening: the audit trail of closes and reopens (who, when, why, and how the watermark
-- moved), immutable. The closes made before this migration are copied in, in their order;
-- there were no reopens then, so each close's previous watermark is the previous close's day.
CREATE TABLE day_audit (
    seq                   INTEGER PRIMARY KEY AUTOINCREMENT,
    merchant_id           TEXT    NOT NULL REFERENCES merchants (id),
    action                TEXT    NOT NULL CHECK (action IN ('close', 'reopen')),
    business_date         TEXT    NOT NULL,   -- the day closed, or the first day reopened
    at                    INTEGER NOT NULL,   -- unix microseconds
    by                    TEXT    NOT NULL,
    reason                TEXT,               -- the close's note, or the reopen's reason
    closed_through_before TEXT,
    closed_through_after  TEXT
);
CREATE INDEX day_audit_by_merchant ON day_audit (merchant_id, seq);

INSERT INTO day_audit (merchant_id, action, business_date, at, by, reason, closed_through_before, closed_through_after)
SELECT merchant_id, 'close', business_date, closed_at, closed_by, note,
       LAG(business_date) OVER (PARTITION BY merchant_id ORDER BY seq), business_date
FROM day_closes ORDER BY seq;

CREATE TRIGGER day_audit_is_immutable BEFORE UPDATE ON day_audit
BEGIN SELECT RAISE(ABORT, 'the day audit is immutable'); END;
CREATE TRIGGER day_audit_is_never_deleted BEFORE DELETE ON day_audit
BEGIN SELECT RAISE(ABORT, 'the day audit is never deleted'); END;
