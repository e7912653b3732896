-- Alerting: what watches remember per listing (re-arm), notifiers disabled by a 404, and the
-- lookups the alert task makes.

-- One row per (watch, listing) the watch has evaluated. Written in the same transaction as the
-- alert consumer's offsets, so a replay after a crash decides exactly as the first run did.
CREATE TABLE watch_state (
    watch_id              BIGINT NOT NULL REFERENCES watches (id) ON DELETE CASCADE,
    listing_key           TEXT NOT NULL,
    -- The last price this watch evaluated for the listing, and which raw_prices record it was:
    -- a republished (older) record of the same listing is recognised and skipped.
    last_price            NUMERIC(10, 2) NOT NULL,
    last_source_partition INTEGER NOT NULL,
    last_source_offset    BIGINT NOT NULL,
    -- The last notification: the watch re-arms when the price falls below notified_price by at
    -- least the noise floor, or when cooldown_seconds have passed since notified_at (event time).
    notified_price        NUMERIC(10, 2),
    notified_at           TIMESTAMPTZ,
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (watch_id, listing_key)
);

-- A notifier whose webhook answered 404 (deleted) or 410 stays disabled while its URL is the
-- same (url_fingerprint is a hash, never the URL). A new URL in the config, or a successful
-- `conscope watch test`, enables it again.
CREATE TABLE notifier_state (
    channel         TEXT PRIMARY KEY,
    url_fingerprint TEXT NOT NULL,
    http_status     INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    disabled_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Watches ask for a listing's lowest price (all time, or the last N days).
CREATE INDEX price_history_listing_time ON price_history (listing_key, "timestamp");

-- Each channel's sender asks for its own due deliveries.
CREATE INDEX alert_deliveries_channel_due ON alert_deliveries (channel, next_attempt_at)
    WHERE status = 'pending';

-- A watch must carry the parameter its trigger needs (the alert task skips a row that does not,
-- but refusing it here tells the user at once).
ALTER TABLE watches ADD CONSTRAINT watches_trigger_parameters CHECK (
    CASE trigger_type
        WHEN 'at_or_below' THEN COALESCE(target_price > 0, false)
        WHEN 'drop_percent' THEN COALESCE(drop_percent > 0 AND drop_percent < 100, false)
        WHEN 'drop_vs_low' THEN COALESCE(drop_percent > 0 AND drop_percent < 100 AND lookback_days >= 1, false)
        ELSE true
    END
);
