-- Adjustments: an entry meant for a closed day is recorded on the first open day and keeps the
-- day it was meant for here (NULL for every other entry). Adding a nullable column rewrites no
-- row, so the immutability trigger is not involved and existing databases migrate in place.
ALTER TABLE entries ADD COLUMN adjusts_date date
    CONSTRAINT entries_adjust_an_earlier_day CHECK (adjusts_date < business_date);
