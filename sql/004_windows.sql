-- Windowed statistics: one row per (event, width, start, source) and instance, so instances that
-- share the database each write the listings of their own partitions (listings are
-- partition-disjoint, so readers add them up). first_at/last_at are the event times of the first
-- and last price. window_progress keeps each instance's watermark, written in the same
-- transaction as the windows it closed.

ALTER TABLE price_windows ADD COLUMN instance INTEGER NOT NULL DEFAULT 0;
ALTER TABLE price_windows ADD COLUMN first_at TIMESTAMPTZ;
ALTER TABLE price_windows ADD COLUMN last_at TIMESTAMPTZ;
ALTER TABLE price_windows DROP CONSTRAINT price_windows_pkey;
ALTER TABLE price_windows ADD PRIMARY KEY (event_id, width_seconds, window_start, source, instance);

CREATE TABLE window_progress (
    instance   INTEGER PRIMARY KEY,
    watermark  TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
