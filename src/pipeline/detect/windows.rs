//! Tumbling-window price statistics per (event, source, width), on event time.
//!
//! Each record lands in one window per configured width, chosen by its own timestamp, so
//! out-of-order records still land in the right window. The watermark is the largest event time
//! seen − `allowed_lateness`, taken as the minimum over the partitions that are active: a
//! partition silent for `idle_timeout` (wall clock) stops holding windows open; when every
//! partition is silent, the largest event time of any partition counts. The watermark never
//! moves back. A window is written once the watermark passes its end; a record for a window
//! already written is *late*: counted, and merged into the written window or dropped as
//! configured.
//!
//! First and last price are by (event time, partition, offset), so a window's numbers do not
//! depend on the order records were processed in, which makes a rebuilt window (after a
//! restart) equal to an uninterrupted one. Distinct listings are tracked as 64-bit hashes of
//! the listing key.
//!
//! Ingest refuses observation times more than `ingest.max_future_skew` ahead of the clock, so
//! no record can carry the watermark to the end of time; the arithmetic here saturates anyway,
//! so no time or count can overflow it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::config::{LatePolicy, WindowsConfig};
use crate::model::ChangeKind;
pub use crate::model::window::{Observation, WindowKey, WindowRow};
use crate::store::{StoreError, warm};

/// (event time, partition, offset, price): ordering decides first and last.
type Stamp = (i64, i32, i64, i64);

#[derive(Debug, Clone)]
struct Agg {
    observations: i64,
    listings: HashSet<u64>,
    min: i64,
    max: i64,
    sum: i64,
    first: Stamp,
    last: Stamp,
    drops: i32,
    rises: i32,
    late: i32,
}

#[derive(Debug)]
pub struct Windows {
    widths: Vec<i64>,
    lateness_ms: i64,
    idle: Duration,
    policy: LatePolicy,
    open: HashMap<WindowKey, Agg>,
    /// Per partition: largest event time seen and when it last had a record.
    clocks: HashMap<i32, (i64, Instant)>,
    watermark: i64,
    hasher: ahash::RandomState,
}

impl Windows {
    /// Windows resuming after `watermark` (milliseconds), or from scratch.
    pub fn new(cfg: &WindowsConfig, watermark: Option<i64>) -> Self {
        Self {
            widths: if cfg.enabled { cfg.widths_ms() } else { Vec::new() },
            lateness_ms: cfg.allowed_lateness.as_millis() as i64,
            idle: cfg.idle_timeout,
            policy: cfg.late_records,
            open: HashMap::new(),
            clocks: HashMap::new(),
            watermark: watermark.unwrap_or(i64::MIN),
            // Fixed seeds: hashes must be the same for a live record and its stored row.
            hasher: ahash::RandomState::with_seeds(1, 2, 3, 4),
        }
    }

    /// Make the owned partitions known before they deliver anything: each then holds the
    /// watermark back until it delivers a record or goes idle. Without this, the first
    /// partition to deliver after a restart would move the watermark past the records a slower
    /// partition is still replaying.
    pub fn register_partitions(&mut self, partitions: &[i32], now: Instant) {
        for p in partitions {
            self.clocks.entry(*p).or_insert((i64::MIN, now));
        }
    }

    pub fn enabled(&self) -> bool {
        !self.widths.is_empty()
    }

    pub fn watermark(&self) -> Option<i64> {
        (self.watermark != i64::MIN).then_some(self.watermark)
    }

    pub fn open_windows(&self) -> usize {
        self.open.len()
    }

    /// Add a live record. The watermark moves with every record, so lateness is exact per
    /// record. Returns the windows already written that the record was late for (to be
    /// recomputed under `merge`; empty under `drop`) and how many windows it was late for.
    pub fn observe(&mut self, o: Observation<'_>, now: Instant) -> (Vec<WindowKey>, u64) {
        if !self.enabled() {
            return (Vec::new(), 0);
        }
        let clock = self.clocks.entry(o.partition).or_insert((o.ts_ms, now));
        clock.0 = clock.0.max(o.ts_ms);
        clock.1 = now;
        self.move_watermark(now);
        let mut written = Vec::new();
        let mut late_count = 0;
        for i in 0..self.widths.len() {
            let key = self.key(&o, self.widths[i]);
            if key.end_ms() > self.watermark {
                self.add(key, &o);
                continue;
            }
            late_count += 1;
            if self.policy == LatePolicy::Drop {
                continue;
            }
            if self.open.contains_key(&key) {
                // Due but not handed out yet: merge in place.
                self.add(key.clone(), &o);
                if let Some(agg) = self.open.get_mut(&key) {
                    agg.late = agg.late.saturating_add(1);
                }
            } else {
                written.push(key);
            }
        }
        (written, late_count)
    }

    /// Add a stored row while rebuilding open windows at start (after `register_partitions`):
    /// windows already written (ending at or before the watermark) are skipped.
    pub fn replay(&mut self, o: Observation<'_>) {
        // The stored rows also tell how far each partition had got, so a restart with nothing
        // new to read still closes what the stored rows complete.
        let clock = self
            .clocks
            .entry(o.partition)
            .or_insert((o.ts_ms, Instant::now()));
        clock.0 = clock.0.max(o.ts_ms);
        for i in 0..self.widths.len() {
            let key = self.key(&o, self.widths[i]);
            if key.end_ms() > self.watermark {
                self.add(key, &o);
            }
        }
    }

    fn key(&self, o: &Observation<'_>, width: i64) -> WindowKey {
        WindowKey {
            event_id: o.event_id.to_string(),
            source: o.source.to_string(),
            width_ms: width,
            start_ms: o.ts_ms.div_euclid(width).saturating_mul(width),
        }
    }

    fn add(&mut self, key: WindowKey, o: &Observation<'_>) {
        let stamp = (o.ts_ms, o.partition, o.offset, o.price);
        let hash = self.hasher.hash_one(o.listing_key);
        let agg = self.open.entry(key).or_insert_with(|| Agg {
            observations: 0,
            listings: HashSet::new(),
            min: i64::MAX,
            max: i64::MIN,
            sum: 0,
            first: stamp,
            last: stamp,
            drops: 0,
            rises: 0,
            late: 0,
        });
        agg.observations = agg.observations.saturating_add(1);
        agg.listings.insert(hash);
        agg.min = agg.min.min(o.price);
        agg.max = agg.max.max(o.price);
        agg.sum = agg.sum.saturating_add(o.price);
        agg.first = agg.first.min(stamp);
        agg.last = agg.last.max(stamp);
        match o.kind {
            ChangeKind::Drop => agg.drops = agg.drops.saturating_add(1),
            ChangeKind::Increase => agg.rises = agg.rises.saturating_add(1),
            ChangeKind::New | ChangeKind::Unchanged | ChangeKind::OutOfOrder => {}
        }
    }

    /// The watermark from the partitions' clocks: the minimum over active partitions (or the
    /// maximum when all are idle), minus the lateness; never moving back.
    fn move_watermark(&mut self, now: Instant) {
        let active = self
            .clocks
            .values()
            .filter(|(_, last)| now.duration_since(*last) < self.idle)
            .map(|(t, _)| *t)
            .min();
        let candidate = match active {
            Some(t) => t,
            None => match self.clocks.values().map(|(t, _)| *t).max() {
                Some(t) => t,
                None => return,
            },
        };
        if candidate != i64::MIN {
            self.watermark = self.watermark.max(candidate.saturating_sub(self.lateness_ms));
        }
    }

    /// Close every open window, as at the end of a finite input (a replayed file): the
    /// watermark moves to the end of the last of them, so a record for one of them that comes
    /// later is late for the written window instead of opening it again.
    pub fn close_all(&mut self, now: Instant) -> Vec<WindowRow> {
        if let Some(end) = self.open.keys().map(WindowKey::end_ms).max() {
            self.watermark = self.watermark.max(end);
        }
        self.advance(now)
    }

    /// Move the watermark and hand out every window it has passed, in key order.
    pub fn advance(&mut self, now: Instant) -> Vec<WindowRow> {
        self.move_watermark(now);
        let wm = self.watermark;
        let due: Vec<WindowKey> = self.open.keys().filter(|k| k.end_ms() <= wm).cloned().collect();
        let mut rows: Vec<WindowRow> = due
            .into_iter()
            .filter_map(|k| self.open.remove(&k).map(|agg| (k, agg)))
            .map(|(key, a)| WindowRow {
                key,
                observations: a.observations,
                distinct_listings: i32::try_from(a.listings.len()).unwrap_or(i32::MAX),
                min: a.min,
                max: a.max,
                sum: a.sum,
                first_price: a.first.3,
                last_price: a.last.3,
                first_at_ms: a.first.0,
                last_at_ms: a.last.0,
                drops: a.drops,
                rises: a.rises,
                late_records: a.late,
            })
            .collect();
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        rows
    }
}

/// An instance's windows as it left them (the engine's, or a replayed file's): its stored
/// watermark, its partitions registered, and the windows still open rebuilt from the committed
/// rows. Returns the windows and how many rows were read back.
pub async fn resume(
    client: &tokio_postgres::Client,
    cfg: &WindowsConfig,
    instance: i32,
    partitions: &[i32],
) -> Result<(Windows, u64), StoreError> {
    let watermark = warm::load_watermark(client, instance).await?;
    let mut windows = Windows::new(cfg, watermark);
    windows.register_partitions(partitions, std::time::Instant::now());
    let mut rows = 0;
    if windows.enabled() {
        let widest = cfg.widths_ms().into_iter().max().unwrap_or(60_000);
        rows = warm::open_window_rows(client, watermark, widest, partitions, |o| windows.replay(o)).await?;
    }
    Ok((windows, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn cfg(policy: LatePolicy) -> WindowsConfig {
        WindowsConfig {
            enabled: true,
            widths: vec!["1m".into()],
            allowed_lateness: Duration::from_secs(120),
            idle_timeout: Duration::from_secs(30),
            late_records: policy,
        }
    }

    fn obs(listing: &str, price: i64, ts_ms: i64, partition: i32, offset: i64) -> Observation<'_> {
        Observation {
            event_id: "e",
            source: "mock",
            listing_key: listing,
            price,
            ts_ms,
            partition,
            offset,
            kind: ChangeKind::New,
        }
    }

    #[test]
    fn out_of_order_records_land_in_their_own_window_and_close_after_the_watermark() {
        let now = Instant::now();
        let mut w = Windows::new(&cfg(LatePolicy::Merge), None);
        w.observe(obs("a", 100, 10_000, 0, 0), now);
        w.observe(obs("b", 50, MIN + 5_000, 0, 1), now);
        w.observe(obs("c", 70, 30_000, 0, 2), now); // out of order, within lateness
        assert!(
            w.advance(now).is_empty(),
            "watermark is still before the first window's end"
        );
        w.observe(obs("a", 80, 3 * MIN + 1, 0, 3), now); // watermark → 1 min: window 0 closes
        let rows = w.advance(now);
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.key.start_ms, r.observations, r.distinct_listings), (0, 2, 2));
        assert_eq!(
            (r.min, r.max, r.sum, r.first_price, r.last_price),
            (70, 100, 170, 100, 70)
        );
        assert_eq!(w.open_windows(), 2);
    }

    #[test]
    fn closing_all_windows_writes_the_open_ones_and_makes_later_records_late() {
        let now = Instant::now();
        let mut w = Windows::new(&cfg(LatePolicy::Merge), None);
        w.observe(obs("a", 100, 10_000, 0, 0), now);
        w.observe(obs("b", 50, MIN + 5_000, 0, 1), now);
        assert!(w.advance(now).is_empty(), "within the lateness, both stay open");
        let rows = w.close_all(now);
        let starts: Vec<i64> = rows.iter().map(|r| r.key.start_ms).collect();
        assert_eq!(starts, [0, MIN]);
        assert_eq!(w.open_windows(), 0);
        assert_eq!(w.watermark(), Some(2 * MIN));
        let (late, count) = w.observe(obs("c", 70, MIN + 6_000, 0, 2), now);
        assert_eq!(
            (late.len(), count),
            (1, 1),
            "the written window is merged, not reopened"
        );
        assert!(w.close_all(now).is_empty());
    }

    #[test]
    fn a_record_for_a_written_window_is_late_and_reported_per_policy() {
        let now = Instant::now();
        for (policy, merged) in [(LatePolicy::Merge, 1), (LatePolicy::Drop, 0)] {
            let mut w = Windows::new(&cfg(policy), None);
            w.observe(obs("a", 100, 10_000, 0, 0), now);
            w.observe(obs("a", 90, 10 * MIN, 0, 1), now);
            assert_eq!(w.advance(now).len(), 1);
            let (late, count) = w.observe(obs("z", 60, 20_000, 0, 2), now);
            assert_eq!(count, 1);
            assert_eq!(late.len(), merged);
            assert!(w.advance(now).is_empty(), "a late record never reopens a window");
        }
    }

    #[test]
    fn a_silent_partition_holds_windows_open_until_its_idle_timeout() {
        let start = Instant::now();
        let mut w = Windows::new(&cfg(LatePolicy::Merge), None);
        w.observe(obs("a", 100, 10_000, 1, 0), start); // partition 1, then silent
        w.observe(obs("b", 100, 20_000, 0, 0), start);
        w.observe(obs("b", 100, 10 * MIN, 0, 1), start);
        assert!(
            w.advance(start).is_empty(),
            "partition 1 holds the watermark back"
        );
        let later = start + Duration::from_secs(31);
        w.observe(obs("b", 100, 10 * MIN + 1, 0, 2), later);
        let rows = w.advance(later);
        assert_eq!(rows.len(), 1, "partition 1 went idle: window 0 closes");
        assert_eq!(rows[0].observations, 2);
    }

    #[test]
    fn a_registered_partition_holds_the_watermark_until_it_delivers_or_idles() {
        let start = Instant::now();
        let mut w = Windows::new(&cfg(LatePolicy::Merge), None);
        w.register_partitions(&[0, 1], start);
        w.observe(obs("a", 100, 10_000, 0, 0), start);
        w.observe(obs("a", 100, 10 * MIN, 0, 1), start);
        assert!(w.advance(start).is_empty(), "partition 1 has not delivered yet");
        w.observe(obs("b", 100, 20_000, 1, 0), start);
        assert!(w.advance(start).is_empty(), "partition 1 is still at 20 s");
        assert_eq!(
            w.advance(start + Duration::from_secs(31)).len(),
            1,
            "both idle: the largest time counts"
        );
    }

    #[test]
    fn a_restart_with_nothing_new_to_read_still_closes_what_the_stored_rows_complete() {
        let now = Instant::now();
        let mut w = Windows::new(&cfg(LatePolicy::Merge), None);
        w.register_partitions(&[0], now);
        w.replay(obs("a", 100, 10_000, 0, 0));
        w.replay(obs("a", 90, 10 * MIN, 0, 1));
        let rows = w.advance(now);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key.start_ms, 0);
    }

    #[test]
    fn times_at_the_ends_of_the_range_neither_panic_nor_overflow() {
        let now = Instant::now();
        let mut w = Windows::new(&cfg(LatePolicy::Merge), None);
        for (offset, ts) in [i64::MIN, -1, 0, i64::MAX - 1, i64::MAX].into_iter().enumerate() {
            w.observe(obs("a", i64::MAX, ts, 0, offset as i64), now);
        }
        let rows: usize = w.advance(now).len() + w.close_all(now).len();
        assert!(rows >= 3, "each distinct window is written once: {rows}");
        assert_eq!(w.watermark(), Some(i64::MAX));
    }

    #[test]
    fn replayed_rows_rebuild_only_open_windows() {
        let now = Instant::now();
        let mut live = Windows::new(&cfg(LatePolicy::Merge), None);
        let records = [
            obs("a", 100, 10_000, 0, 0),
            obs("b", 90, 4 * MIN + 1, 0, 1),
            obs("a", 80, 4 * MIN + 2, 0, 2),
            obs("c", 70, 5 * MIN, 0, 3),
            obs("d", 60, 9 * MIN, 0, 4),
        ];
        for r in &records[..3] {
            live.observe(*r, now);
        }
        let written = live.advance(now);
        let wm = live.watermark();
        // A restart after the first three: rebuild from stored rows, continue.
        let mut rebuilt = Windows::new(&cfg(LatePolicy::Merge), wm);
        for r in &records[..3] {
            rebuilt.replay(*r);
        }
        for r in &records[3..] {
            live.observe(*r, now);
            rebuilt.observe(*r, now);
        }
        assert_eq!(written.len(), 1);
        assert_eq!(live.advance(now), rebuilt.advance(now));
    }
}
