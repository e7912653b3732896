-- price_history keeps every field of the observation that processed_prices carries, so a
-- record republished after a crash (the publish outbox reads price_history) is the same
-- record, byte for byte in meaning, as the one published live.
ALTER TABLE price_history ADD COLUMN IF NOT EXISTS delivery_method TEXT;
ALTER TABLE price_history ADD COLUMN IF NOT EXISTS seller_notes TEXT;
