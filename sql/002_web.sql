-- Indexes for the dashboard and the JSON API (src/store/queries.rs).
--
-- The price-history chart and distribution read one event over a time range. A covering index
-- answers them with an index-only scan (no heap visit per row), which keeps them well under
-- 200 ms with 10M rows. It has the same key as price_history_event_time from 001, which it
-- replaces, so the engine's COPY still maintains one index for this question, not two.
-- Building it locks writes to price_history for the duration: apply on a large table in a
-- quiet moment.
CREATE INDEX price_history_event_time_cover
    ON price_history (event_id, "timestamp") INCLUDE (price, change_kind);
DROP INDEX price_history_event_time;

-- Index-only scans need the visibility map to be current. price_history is insert-only, so
-- autovacuum would visit it only after 20% new rows; vacuuming after 1% keeps recent pages,
-- the ones the dashboard reads, all-visible.
ALTER TABLE price_history SET (autovacuum_vacuum_insert_scale_factor = 0.01);
