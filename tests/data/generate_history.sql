-- Deterministic price history for the dashboard's browser test and query benchmark.
--
-- conscope_generate_history(n_events, listings_per_event, days, step_seconds) fills events,
-- price_history (one observation per listing every step_seconds over the last `days` days,
-- ending now), price_alerts (every drop of at least 10% and $5, as the default rule would),
-- listing_state and hourly price_windows. Rows are n_events * listings_per_event *
-- (days * 86400 / step_seconds). Prices follow two sine waves per listing, so charts have shape
-- and drops; everything is a function of the arguments and now().

CREATE OR REPLACE FUNCTION conscope_price(e int, l int, k int) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    -- Two waves, plus a sharp one-step dip (a drop alert, then the recovery) every 53 steps.
    SELECT round(((60 + (e * 37) % 180) * (1 + (l % 7) * 0.3)
                  * (1 + 0.16 * sin(k / 45.0 + l) + 0.06 * sin(k / 6.0 + e * l))
                  * CASE WHEN (k + l * 13 + e * 7) % 53 = 0 THEN 0.82 ELSE 1 END)::numeric, 2)
$$;

CREATE OR REPLACE FUNCTION conscope_generate_history(
    n_events int, listings_per_event int, days int, step_seconds int
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    steps int := days * 86400 / step_seconds;
    t_end timestamptz := now() - interval '1 minute';
    names text[] := ARRAY['Aurora Tour', 'Night Lights Live', 'The Midnight Orchestra', 'Crimson Coast',
                          'Harbour Lights Festival', 'Velvet Echo', 'Northern Skies', 'Paper Kites Reunion'];
    venues text[] := ARRAY['Riverside Arena', 'Civic Hall', 'Harbour Stadium', 'The Foundry',
                           'Grand Pavilion', 'Lakeside Bowl'];
    sources text[] := ARRAY['stubhub', 'vivid', 'mock'];
    e int;
    n bigint := 0;
BEGIN
    INSERT INTO events (event_id, event_name, venue, event_date, city)
    SELECT format('gen_%s', g),
           names[1 + (g - 1) % array_length(names, 1)]
               || CASE WHEN g > array_length(names, 1) THEN format(' #%s', g) ELSE '' END,
           venues[1 + (g * 5) % array_length(venues, 1)],
           date_trunc('day', now()) + make_interval(days => 30 + g, hours => 20),
           'Springfield'
      FROM generate_series(1, n_events) g
    ON CONFLICT (event_id) DO NOTHING;

    -- One event at a time keeps each statement's memory and WAL small.
    FOR e IN 1 .. n_events LOOP
        INSERT INTO price_history (event_id, listing_key, source, section, "row", seat, price, total_price,
                                   "timestamp", listing_id, listing_url, quantity, previous_price,
                                   change_kind, kafka_partition, kafka_offset)
        SELECT format('gen_%s', e),
               format('%s:gen-%s-%s', sources[1 + l % 3], e, l),
               sources[1 + l % 3],
               (ARRAY['Floor A', '112', '118', '228', '330'])[1 + l % 5],
               (1 + l % 20)::text,
               (1 + l % 24)::text,
               p.now,
               p.now,
               t_end - make_interval(secs => (steps - 1 - k) * step_seconds + (l * 7) % step_seconds),
               format('gen-%s-%s', e, l),
               format('https://tickets.example/gen_%s/%s', e, l),
               1 + l % 4,
               p.prev,
               CASE WHEN k = 0 THEN 'new'
                    WHEN p.now < p.prev THEN 'drop'
                    WHEN p.now > p.prev THEN 'increase'
                    ELSE 'unchanged' END,
               9999,  -- no real raw_prices partition: generated rows never collide with ingested ones
               ((e - 1)::bigint * listings_per_event + (l - 1)) * steps + k
          FROM generate_series(1, listings_per_event) l, generate_series(0, steps - 1) k,
               LATERAL (SELECT conscope_price(e, l, k) AS now,
                               CASE WHEN k > 0 THEN conscope_price(e, l, k - 1) END AS prev) p;
        n := n + listings_per_event::bigint * steps;
    END LOOP;

    INSERT INTO price_alerts (alert_id, event_id, alert_type, rule, alert_timestamp, listing_key, old_price,
                              new_price, drop_amount, drop_percent, section, "row", seat, source, listing_id,
                              listing_url, kafka_partition, kafka_offset, payload)
    SELECT md5(listing_key || ':' || kafka_offset), event_id, 'price_drop', 'default', "timestamp", listing_key,
           previous_price, price, previous_price - price,
           ((previous_price - price) * 100 / previous_price)::float8,
           section, "row", seat, source, listing_id, listing_url, kafka_partition, kafka_offset, '{}'::jsonb
      FROM price_history
     WHERE change_kind = 'drop' AND event_id LIKE 'gen\_%'
       AND previous_price - price >= 5 AND (previous_price - price) * 10 >= previous_price
    ON CONFLICT (alert_id) DO NOTHING;

    INSERT INTO listing_state (listing_key, event_id, source, last_price, lowest_price, first_seen, last_seen,
                               observations)
    SELECT listing_key, min(event_id), min(source),
           (array_agg(price ORDER BY "timestamp" DESC))[1], min(price), min("timestamp"), max("timestamp"),
           count(*)
      FROM price_history WHERE event_id LIKE 'gen\_%'
     GROUP BY listing_key
    ON CONFLICT (listing_key) DO NOTHING;

    INSERT INTO price_windows (event_id, source, width_seconds, window_start, window_end, observations,
                               distinct_listings, min_price, max_price, sum_price, mean_price, first_price,
                               last_price, drops, rises)
    SELECT event_id, source, 3600, w, w + interval '1 hour', count(*), count(DISTINCT listing_key),
           min(price), max(price), sum(price), round(avg(price), 4),
           (array_agg(price ORDER BY "timestamp"))[1], (array_agg(price ORDER BY "timestamp" DESC))[1],
           count(*) FILTER (WHERE change_kind = 'drop'), count(*) FILTER (WHERE change_kind = 'increase')
      FROM (SELECT *, date_bin('1 hour', "timestamp", TIMESTAMPTZ '2000-01-01') AS w
              FROM price_history WHERE event_id LIKE 'gen\_%') h
     GROUP BY event_id, source, w
    ON CONFLICT DO NOTHING;
    RETURN n;
END
$$;
