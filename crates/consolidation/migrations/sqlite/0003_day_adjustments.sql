-- Adjustments: entries counted on a day but meant for an earlier, closed one (`adjusts_date`),
-- summed per (day, closed day) so a report shows what its day carries for closed days. They are
-- part of the day's totals too (daily_totals); this only says which part.
CREATE TABLE day_adjustments (
    merchant_id   TEXT    NOT NULL,
    business_date TEXT    NOT NULL,   -- the day they count on
    adjusts_date  TEXT    NOT NULL,   -- the closed day they were meant for
    total_credits INTEGER NOT NULL,   -- minor units
    total_debits  INTEGER NOT NULL,
    entry_count   INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, business_date, adjusts_date)
) WITHOUT ROWID;
