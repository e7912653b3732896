//! Read queries behind the dashboard and the JSON API (`src/web/`).
//!
//! Every statement is parameterised and is served from an index or a small table, so each stays
//! fast with 10M rows in `price_history` (`examples/dashboard_bench.rs` measures them):
//!
//! | query | served from |
//! |---|---|
//! | [`list_events`], [`stats`] | `events`, `listing_state` (one row per listing, not per observation) |
//! | [`price_series`] (chart buckets, distribution) | `price_history_event_time_cover` (index-only range scans, sql/002) |
//! | [`event_drops`], [`recent_alerts`], drops today | `price_alerts_event_recent`, `price_alerts_recent` |
//! | [`windows`] | the `price_windows` primary key |
//!
//! Prices leave here as `f64` dollars: the page and API clients chart them, nobody sums them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::StoreError;

/// One event with what `listing_state` knows of it.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub event_id: String,
    pub event_name: String,
    pub venue: String,
    pub event_date: Option<DateTime<Utc>>,
    pub listings: i64,
    pub observations: i64,
    pub min_price: Option<f64>,
    pub max_price: Option<f64>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// The dashboard's stat cards, for every event or one.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub events: i64,
    pub listings: i64,
    /// Stored observations (rows of price_history), summed from listing_state.
    pub observations: i64,
    /// Drop alerts raised since the start of the current UTC day.
    pub drops_today: i64,
    /// Mean, lowest and highest current price over the listings.
    pub mean_price: Option<f64>,
    pub min_price: Option<f64>,
    pub max_price: Option<f64>,
}

/// Prices of one event in one time bucket.
#[derive(Debug, Clone, Serialize)]
pub struct PriceBucket {
    pub t: DateTime<Utc>,
    pub min: f64,
    pub mean: f64,
    pub max: f64,
    pub observations: i64,
    /// Observations in the bucket that were lower than the listing's previous price.
    pub drops: i64,
}

/// How many observations fell in each of `counts.len()` equal price bins from `lo` to `hi`
/// (dollars; a bin includes its lower edge).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    pub lo: f64,
    pub hi: f64,
    pub bin_width: f64,
    pub counts: Vec<i64>,
}

/// One detected alert, as the drops table and the chart's markers show it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    pub alert_id: String,
    pub event_id: String,
    pub event_name: String,
    pub alert_type: String,
    pub rule: String,
    pub alert_timestamp: DateTime<Utc>,
    pub listing_key: String,
    pub old_price: f64,
    pub new_price: f64,
    pub drop_amount: f64,
    pub drop_percent: f64,
    pub section: String,
    pub row: String,
    pub seat: String,
    pub source: String,
    pub listing_url: Option<String>,
}

/// One tumbling window of one event and source.
#[derive(Debug, Clone, Serialize)]
pub struct WindowRow {
    pub source: String,
    pub width_seconds: i32,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub observations: i64,
    pub distinct_listings: i32,
    pub min_price: f64,
    pub max_price: f64,
    pub mean_price: f64,
    pub first_price: f64,
    pub last_price: f64,
    pub drops: i32,
    pub rises: i32,
    pub late_records: i32,
}

pub async fn event_exists(c: &Client, event_id: &str) -> Result<bool, StoreError> {
    let row = c
        .query_opt("SELECT 1 FROM events WHERE event_id = $1", &[&event_id])
        .await
        .map_err(StoreError::query("look up event"))?;
    Ok(row.is_some())
}

/// Every event (up to `limit`) by name, with listing counts and current price range.
pub async fn list_events(c: &Client, limit: i64) -> Result<Vec<EventSummary>, StoreError> {
    let rows = c
        .query(
            "SELECT e.event_id, e.event_name, e.venue, e.event_date,
                    COALESCE(s.listings, 0), COALESCE(s.observations, 0),
                    s.min_price, s.max_price, s.last_seen
               FROM events e
               LEFT JOIN (SELECT event_id, count(*) AS listings,
                                 sum(observations)::int8 AS observations,
                                 min(last_price)::float8 AS min_price,
                                 max(last_price)::float8 AS max_price,
                                 max(last_seen) AS last_seen
                            FROM listing_state GROUP BY event_id) s USING (event_id)
              ORDER BY e.event_name, e.event_id
              LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(StoreError::query("list events"))?;
    Ok(rows
        .iter()
        .map(|r| EventSummary {
            event_id: r.get(0),
            event_name: r.get(1),
            venue: r.get(2),
            event_date: r.get(3),
            listings: r.get(4),
            observations: r.get(5),
            min_price: r.get(6),
            max_price: r.get(7),
            last_seen: r.get(8),
        })
        .collect())
}

/// The stat cards; `day_start` is the start of "today" for the drop count.
pub async fn stats(
    c: &Client,
    event_id: Option<&str>,
    day_start: DateTime<Utc>,
) -> Result<Stats, StoreError> {
    let (listings, drops) = match event_id {
        None => (
            c.query_one(
                "SELECT (SELECT count(*) FROM events), count(*), COALESCE(sum(observations), 0)::int8,
                        avg(last_price)::float8, min(last_price)::float8, max(last_price)::float8
                   FROM listing_state",
                &[],
            )
            .await,
            c.query_one(
                "SELECT count(*) FROM price_alerts
                  WHERE alert_timestamp >= $1 AND alert_type = 'price_drop'",
                &[&day_start],
            )
            .await,
        ),
        Some(id) => (
            c.query_one(
                "SELECT (SELECT count(*) FROM events WHERE event_id = $1), count(*),
                        COALESCE(sum(observations), 0)::int8,
                        avg(last_price)::float8, min(last_price)::float8, max(last_price)::float8
                   FROM listing_state WHERE event_id = $1",
                &[&id],
            )
            .await,
            c.query_one(
                "SELECT count(*) FROM price_alerts
                  WHERE event_id = $1 AND alert_timestamp >= $2 AND alert_type = 'price_drop'",
                &[&id, &day_start],
            )
            .await,
        ),
    };
    let l = listings.map_err(StoreError::query("stats: listings"))?;
    let d = drops.map_err(StoreError::query("stats: drops today"))?;
    Ok(Stats {
        events: l.get(0),
        listings: l.get(1),
        observations: l.get(2),
        drops_today: d.get(0),
        mean_price: l.get(3),
        min_price: l.get(4),
        max_price: l.get(5),
    })
}

/// The price history of one event over `[from, to)`: time buckets for the chart and
/// observations per whole dollar for the distribution.
#[derive(Debug, Clone, Default)]
pub struct PriceSeries {
    pub buckets: Vec<PriceBucket>,
    /// `(floor(price) in dollars, observations)`, ascending.
    pub per_dollar: Vec<(i32, i64)>,
}

/// The chart: one small aggregate per time bucket, each an index-only scan of its own slice of
/// `(event_id, timestamp)` (no sort, no hash over the whole range: about half the time of one
/// `GROUP BY date_bin(...)` over 100k rows). The distribution: observations per whole dollar.
/// Both statements are sent at once on the connection.
pub async fn price_series(
    c: &Client,
    event_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_secs: f64,
) -> Result<PriceSeries, StoreError> {
    let params: &[&(dyn ToSql + Sync)] = &[&event_id, &from, &to, &bucket_secs];
    let chart = c.query(
        "SELECT b.t, a.lo, a.mean, a.hi, a.n, a.drops
           FROM generate_series($2::timestamptz, $3::timestamptz - interval '1 microsecond',
                                make_interval(secs => $4)) AS b (t),
                LATERAL (SELECT min(price)::float8 AS lo, avg(price)::float8 AS mean,
                                max(price)::float8 AS hi, count(*) AS n,
                                count(*) FILTER (WHERE change_kind = 'drop') AS drops
                           FROM price_history
                          WHERE event_id = $1 AND \"timestamp\" >= b.t
                            AND \"timestamp\" < LEAST(b.t + make_interval(secs => $4), $3)) AS a
          WHERE a.n > 0
          ORDER BY b.t",
        params,
    );
    let dollars = c.query(
        "SELECT floor(price)::int4 AS dollar, count(*)
           FROM price_history
          WHERE event_id = $1 AND \"timestamp\" >= $2 AND \"timestamp\" < $3
          GROUP BY dollar ORDER BY dollar",
        &params[..3],
    );
    let (chart, dollars) = futures::try_join!(chart, dollars).map_err(StoreError::query("price history"))?;
    Ok(PriceSeries {
        buckets: chart
            .iter()
            .map(|r| PriceBucket {
                t: r.get(0),
                min: r.get(1),
                mean: r.get(2),
                max: r.get(3),
                observations: r.get(4),
                drops: r.get(5),
            })
            .collect(),
        per_dollar: dollars.iter().map(|r| (r.get(0), r.get(1))).collect(),
    })
}

/// Bin widths the distribution may use, in dollars: whole dollars, so a price counted under its
/// floor dollar falls in exactly one bin.
const NICE_WIDTHS: [i64; 16] = [
    1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1_000, 2_000, 5_000, 10_000, 100_000,
];

impl Distribution {
    /// At most `max_bins` equal bins with a round width over the observed dollars.
    pub fn from_dollars(per_dollar: &[(i32, i64)], max_bins: usize) -> Self {
        let (Some(&(lo, _)), Some(&(hi, _))) = (per_dollar.first(), per_dollar.last()) else {
            return Self {
                lo: 0.0,
                hi: 0.0,
                bin_width: 0.0,
                counts: Vec::new(),
            };
        };
        let (lo, hi) = (i64::from(lo), i64::from(hi) + 1);
        let max_bins = max_bins.max(1) as i64;
        let width = NICE_WIDTHS
            .into_iter()
            .find(|w| (hi - lo + w - 1) / w <= max_bins)
            .unwrap_or((hi - lo + max_bins - 1) / max_bins);
        let start = lo.div_euclid(width) * width;
        let bins = (hi - start + width - 1) / width;
        let mut counts = vec![0i64; bins as usize];
        for &(dollar, n) in per_dollar {
            let i = ((i64::from(dollar) - start) / width).clamp(0, bins - 1);
            counts[i as usize] += n;
        }
        Self {
            lo: start as f64,
            hi: (start + bins * width) as f64,
            bin_width: width as f64,
            counts,
        }
    }
}

const ALERT_COLUMNS: &str =
    "a.alert_id, a.event_id, COALESCE(e.event_name, a.event_id), a.alert_type, a.rule,
     a.alert_timestamp, a.listing_key, a.old_price::float8, a.new_price::float8,
     a.drop_amount::float8, a.drop_percent, a.section, a.\"row\", a.seat, a.source, a.listing_url";

fn alert_row(r: &tokio_postgres::Row) -> AlertRow {
    AlertRow {
        alert_id: r.get(0),
        event_id: r.get(1),
        event_name: r.get(2),
        alert_type: r.get(3),
        rule: r.get(4),
        alert_timestamp: r.get(5),
        listing_key: r.get(6),
        old_price: r.get(7),
        new_price: r.get(8),
        drop_amount: r.get(9),
        drop_percent: r.get(10),
        section: r.get(11),
        row: r.get(12),
        seat: r.get(13),
        source: r.get(14),
        listing_url: r.get(15),
    }
}

/// Drop alerts of one event over `[from, to)`, newest first: the chart's markers.
pub async fn event_drops(
    c: &Client,
    event_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<AlertRow>, StoreError> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM price_alerts a LEFT JOIN events e USING (event_id)
          WHERE a.event_id = $1 AND a.alert_timestamp >= $2 AND a.alert_timestamp < $3
            AND a.alert_type = 'price_drop'
          ORDER BY a.alert_timestamp DESC LIMIT $4"
    );
    let rows = c
        .query(&sql, &[&event_id, &from, &to, &limit])
        .await
        .map_err(StoreError::query("event drops"))?;
    Ok(rows.iter().map(alert_row).collect())
}

/// Alerts of every type since `since`, newest first, optionally of one event.
pub async fn recent_alerts(
    c: &Client,
    since: DateTime<Utc>,
    event_id: Option<&str>,
    limit: i64,
) -> Result<Vec<AlertRow>, StoreError> {
    let rows = match event_id {
        None => {
            let sql = format!(
                "SELECT {ALERT_COLUMNS} FROM price_alerts a LEFT JOIN events e USING (event_id)
                  WHERE a.alert_timestamp >= $1 ORDER BY a.alert_timestamp DESC LIMIT $2"
            );
            c.query(&sql, &[&since, &limit]).await
        }
        Some(id) => {
            let sql = format!(
                "SELECT {ALERT_COLUMNS} FROM price_alerts a LEFT JOIN events e USING (event_id)
                  WHERE a.event_id = $1 AND a.alert_timestamp >= $2
                  ORDER BY a.alert_timestamp DESC LIMIT $3"
            );
            c.query(&sql, &[&id, &since, &limit]).await
        }
    }
    .map_err(StoreError::query("recent alerts"))?;
    Ok(rows.iter().map(alert_row).collect())
}

/// Windows of one event starting at or after `from`, optionally of one width, oldest first.
pub async fn windows(
    c: &Client,
    event_id: &str,
    width_seconds: Option<i32>,
    from: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<WindowRow>, StoreError> {
    let rows = c
        .query(
            // Instances sharing the database each write their own partitions' share of a window
            // (listings are partition-disjoint): add the shares up.
            "SELECT source, width_seconds, window_start, max(window_end), sum(observations)::int8,
                    sum(distinct_listings)::int4, min(min_price)::float8, max(max_price)::float8,
                    (sum(sum_price) / sum(observations))::float8,
                    ((array_agg(first_price ORDER BY first_at))[1])::float8,
                    ((array_agg(last_price ORDER BY last_at DESC))[1])::float8,
                    sum(drops)::int4, sum(rises)::int4, sum(late_records)::int4
               FROM price_windows
              WHERE event_id = $1 AND ($2::int4 IS NULL OR width_seconds = $2) AND window_start >= $3
              GROUP BY source, width_seconds, window_start
              ORDER BY window_start, width_seconds, source
              LIMIT $4",
            &[&event_id, &width_seconds, &from, &limit],
        )
        .await
        .map_err(StoreError::query("price windows"))?;
    Ok(rows
        .iter()
        .map(|r| WindowRow {
            source: r.get(0),
            width_seconds: r.get(1),
            window_start: r.get(2),
            window_end: r.get(3),
            observations: r.get(4),
            distinct_listings: r.get(5),
            min_price: r.get(6),
            max_price: r.get(7),
            mean_price: r.get(8),
            first_price: r.get(9),
            last_price: r.get(10),
            drops: r.get(11),
            rises: r.get(12),
            late_records: r.get(13),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_bins_are_round_and_count_every_observation() {
        let d = Distribution::from_dollars(&[(100, 8), (104, 3), (130, 7), (200, 36)], 20);
        assert_eq!((d.lo, d.hi, d.bin_width), (100.0, 210.0, 10.0));
        assert_eq!(d.counts.len(), 11);
        assert_eq!(d.counts[0], 11);
        assert_eq!(d.counts[3], 7);
        assert_eq!(d.counts[10], 36);
        assert_eq!(d.counts.iter().sum::<i64>(), 54);
    }

    #[test]
    fn one_price_makes_one_bin_and_none_makes_none() {
        let d = Distribution::from_dollars(&[(57, 4)], 20);
        assert_eq!((d.lo, d.hi, d.counts.clone()), (57.0, 58.0, vec![4]));
        assert!(Distribution::from_dollars(&[], 20).counts.is_empty());
    }

    #[test]
    fn wide_ranges_stay_within_the_bin_limit() {
        let d = Distribution::from_dollars(&[(3, 1), (9_876, 1)], 20);
        assert!(d.counts.len() <= 20, "{d:?}");
        assert_eq!(d.bin_width, 500.0);
        assert_eq!(d.counts.iter().sum::<i64>(), 2);
    }
}
