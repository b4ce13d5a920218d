-- Adjustments: an entry meant for a closed day is recorded on the first open day and keeps the
-- day it was meant for here (NULL for every other entry, so existing rows need nothing).
ALTER TABLE entries ADD COLUMN adjusts_date TEXT;   -- YYYY-MM-DD, before business_date
