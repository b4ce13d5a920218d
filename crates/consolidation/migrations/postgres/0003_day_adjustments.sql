-- Adjustments: entries counted on a day but meant for an earlier, closed one (`adjusts_date`),
-- summed per (day, closed day) so a report shows what its day carries for closed days. They are
-- part of the day's totals too (daily_totals); this only says which part, so it can never
-- overflow where the day's totals did not.
CREATE TABLE day_adjustments (
    merchant_id   uuid   NOT NULL,
    business_date date   NOT NULL,
    adjusts_date  date   NOT NULL,
    total_credits bigint NOT NULL CHECK (total_credits >= 0),
    total_debits  bigint NOT NULL CHECK (total_debits >= 0),
    entry_count   bigint NOT NULL CHECK (entry_count >= 0),
    PRIMARY KEY (merchant_id, business_date, adjusts_date)
);
