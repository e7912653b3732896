-- An observation older than its listing's last-seen time is stored with change_kind
-- 'out_of_order': kept in the history, but it moved neither the listing's current price, its
-- lowest price nor its alert state (docs/architecture.md, "Order of observations").
--
-- NOT VALID: every existing row passed the narrower check, so the table is not scanned again.
ALTER TABLE price_history DROP CONSTRAINT IF EXISTS price_history_change_kind_check;
ALTER TABLE price_history ADD CONSTRAINT price_history_change_kind_check
    CHECK (change_kind IN ('new', 'unchanged', 'drop', 'increase', 'out_of_order')) NOT VALID;
