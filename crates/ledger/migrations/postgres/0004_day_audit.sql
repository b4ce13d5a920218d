-- Reopening: the audit trail of closes and reopens (who, when, why, and how the watermark
-- moved), immutable. The closes made before this migration are copied in, in their order;
-- there were no reopens then, so each close's previous watermark is the previous close's day.
CREATE TABLE day_audit (
    seq                   bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    merchant_id           uuid        NOT NULL REFERENCES merchants (id),
    action                text        NOT NULL CHECK (action IN ('close', 'reopen')),
    business_date         date        NOT NULL,   -- the day closed, or the first day reopened
    at                    timestamptz NOT NULL,
    by                    text        NOT NULL CHECK (char_length(by) BETWEEN 1 AND 200),
    reason                text                 CHECK (char_length(reason) <= 500),
    closed_through_before date,
    closed_through_after  date,
    CONSTRAINT day_audit_reopen_has_a_reason CHECK (action = 'close' OR reason IS NOT NULL)
);
CREATE INDEX day_audit_by_merchant ON day_audit (merchant_id, seq);

INSERT INTO day_audit (merchant_id, action, business_date, at, by, reason, closed_through_before, closed_through_after)
SELECT merchant_id, 'close', business_date, closed_at, closed_by, note,
       LAG(business_date) OVER (PARTITION BY merchant_id ORDER BY seq), business_date
FROM day_closes ORDER BY seq;

CREATE TRIGGER day_audit_is_immutable BEFORE UPDATE OR DELETE ON day_audit
    FOR EACH ROW EXECUTE FUNCTION day_closes_are_immutable();
