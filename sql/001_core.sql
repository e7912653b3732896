-- ConScope core schema: events, price history, listing state, alerts, offsets, metrics.
-- Column names follow the first ConScope where a table existed there.
-- Prices are numeric(10,2) dollars; times are timestamptz (naive inputs were taken as UTC).

CREATE TABLE events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    event_name   TEXT NOT NULL,
    venue        TEXT NOT NULL,
    event_date   TIMESTAMPTZ,
    city         TEXT,
    state        TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_updated TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per accepted raw_prices record; (kafka_partition, kafka_offset) identifies it,
-- so a replayed record can never be stored twice.
CREATE TABLE price_history (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events (event_id),
    listing_key     TEXT NOT NULL,
    source          TEXT NOT NULL,
    section         TEXT NOT NULL DEFAULT '',
    "row"           TEXT NOT NULL DEFAULT '',
    seat            TEXT NOT NULL DEFAULT '',
    price           NUMERIC(10, 2) NOT NULL CHECK (price > 0),
    fees            NUMERIC(10, 2),
    total_price     NUMERIC(10, 2) NOT NULL,
    "timestamp"     TIMESTAMPTZ NOT NULL,
    listing_id      TEXT,
    listing_url     TEXT,
    quantity        INTEGER NOT NULL DEFAULT 1,
    previous_price  NUMERIC(10, 2),
    change_kind     TEXT NOT NULL CHECK (change_kind IN ('new', 'unchanged', 'drop', 'increase')),
    kafka_partition INTEGER NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (kafka_partition, kafka_offset)
);
-- The dashboard's question: the history of one event over a time range.
CREATE INDEX price_history_event_time ON price_history (event_id, "timestamp");

-- The last known state of every listing: the warm-start source of the price cache.
CREATE TABLE listing_state (
    listing_key  TEXT PRIMARY KEY,
    event_id     TEXT NOT NULL REFERENCES events (event_id),
    source       TEXT NOT NULL,
    last_price   NUMERIC(10, 2) NOT NULL,
    lowest_price NUMERIC(10, 2) NOT NULL,
    first_seen   TIMESTAMPTZ NOT NULL,
    last_seen    TIMESTAMPTZ NOT NULL,
    observations BIGINT NOT NULL DEFAULT 1,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX listing_state_event ON listing_state (event_id);

-- Detected alerts. alert_id is derived from (listing key, partition, offset, rule), so
-- re-detection after a crash yields the same id and ON CONFLICT DO NOTHING dedupes it.
CREATE TABLE price_alerts (
    alert_id        TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL REFERENCES events (event_id),
    alert_type      TEXT NOT NULL,
    rule            TEXT NOT NULL,
    alert_timestamp TIMESTAMPTZ NOT NULL,
    listing_key     TEXT NOT NULL,
    old_price       NUMERIC(10, 2) NOT NULL,
    new_price       NUMERIC(10, 2) NOT NULL,
    drop_amount     NUMERIC(10, 2) NOT NULL,
    drop_percent    DOUBLE PRECISION NOT NULL,
    section         TEXT NOT NULL DEFAULT '',
    "row"           TEXT NOT NULL DEFAULT '',
    seat            TEXT NOT NULL DEFAULT '',
    source          TEXT NOT NULL,
    listing_id      TEXT,
    listing_url     TEXT,
    kafka_partition INTEGER NOT NULL,
    kafka_offset    BIGINT NOT NULL,
    payload         JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX price_alerts_recent ON price_alerts (alert_timestamp DESC);
CREATE INDEX price_alerts_event_recent ON price_alerts (event_id, alert_timestamp DESC);
CREATE INDEX price_alerts_source ON price_alerts (kafka_partition, kafka_offset);

-- The first ConScope's name for drop alerts, kept for its dashboards' queries.
CREATE VIEW price_drop_alerts AS
SELECT alert_id, event_id, alert_type, alert_timestamp, old_price, new_price, drop_amount,
       drop_percent, section, "row", seat, source, listing_id, listing_url, created_at
FROM price_alerts
WHERE alert_type = 'price_drop';

-- User watches (the first ConScope's never-implemented `alerts` table, done properly).
CREATE TABLE watches (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id               TEXT,
    event_id              TEXT,
    event_name_pattern    TEXT,
    section               TEXT,
    max_row               TEXT,
    max_price             NUMERIC(10, 2),
    trigger_type          TEXT NOT NULL CHECK (trigger_type IN
                              ('at_or_below', 'drop_percent', 'drop_vs_low', 'new_low_listing', 'new_low_event')),
    target_price          NUMERIC(10, 2),
    drop_percent          DOUBLE PRECISION,
    lookback_days         INTEGER,
    channel               TEXT NOT NULL,
    notify_on_first_sight BOOLEAN NOT NULL DEFAULT true,
    cooldown_seconds      INTEGER NOT NULL DEFAULT 21600 CHECK (cooldown_seconds >= 0),
    active                BOOLEAN NOT NULL DEFAULT true,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_triggered        TIMESTAMPTZ,
    CHECK (event_id IS NOT NULL OR event_name_pattern IS NOT NULL)
);
CREATE INDEX watches_event ON watches (event_id) WHERE active;

-- One row per (alert, channel): written before anything is sent; sent only after a 2xx.
CREATE TABLE alert_deliveries (
    alert_id        TEXT NOT NULL REFERENCES price_alerts (alert_id),
    channel         TEXT NOT NULL,
    watch_id        BIGINT REFERENCES watches (id) ON DELETE SET NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'sent', 'failed', 'disabled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    http_status     INTEGER,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_id, channel)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at) WHERE status = 'pending';

-- Tumbling-window statistics per (event, source, width).
CREATE TABLE price_windows (
    event_id          TEXT NOT NULL,
    source            TEXT NOT NULL,
    width_seconds     INTEGER NOT NULL CHECK (width_seconds > 0),
    window_start      TIMESTAMPTZ NOT NULL,
    window_end        TIMESTAMPTZ NOT NULL,
    observations      BIGINT NOT NULL,
    distinct_listings INTEGER NOT NULL,
    min_price         NUMERIC(10, 2) NOT NULL,
    max_price         NUMERIC(10, 2) NOT NULL,
    sum_price         NUMERIC(16, 2) NOT NULL,
    mean_price        NUMERIC(12, 4) NOT NULL,
    first_price       NUMERIC(10, 2) NOT NULL,
    last_price        NUMERIC(10, 2) NOT NULL,
    drops             INTEGER NOT NULL DEFAULT 0,
    rises             INTEGER NOT NULL DEFAULT 0,
    late_records      INTEGER NOT NULL DEFAULT 0,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, width_seconds, window_start, source)
);

-- The next offset to read per (consumer, topic, partition), written in the same transaction
-- as the rows derived from the records before it. published_offset trails it: records below
-- it have also been produced to the output topics (the outbox mark).
CREATE TABLE kafka_offsets (
    consumer         TEXT NOT NULL,
    topic            TEXT NOT NULL,
    "partition"      INTEGER NOT NULL CHECK ("partition" >= 0),
    next_offset      BIGINT NOT NULL CHECK (next_offset >= 0),
    published_offset BIGINT NOT NULL DEFAULT 0 CHECK (published_offset >= 0),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, "partition")
);

-- Periodic metrics snapshots, one JSON document per instance and interval.
CREATE TABLE system_metrics (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    instance    INTEGER NOT NULL,
    snapshot    JSONB NOT NULL
);
CREATE INDEX system_metrics_recent ON system_metrics (recorded_at DESC);
