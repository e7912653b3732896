//! The detect stage: ingest batches in, detected batches out.
//!
//! [`Detector::process_all`] is the pure hot path (per record one cache update, one rule check,
//! no I/O), used by the stage task and the benchmark; `replay` classifies record by record with
//! [`Detector::process`], the same classification without the batch's prefetching.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use tokio::sync::mpsc;

use super::windows::{Observation, WindowKey, WindowRow, Windows};
use super::{PriceCache, Rules};
use crate::metrics::{Metrics, channel};
use crate::model::{Alert, ChangeKind, alert_id};
use crate::pipeline::messages::{DetectedBatch, InRecord, IngestBatch, Processed};

/// How many records ahead [`Detector::process_all`] prefetches cache entries.
pub const PREFETCH_AHEAD: usize = 12;

#[derive(Debug, Clone)]
pub struct Detector {
    pub cache: Arc<PriceCache>,
    pub rules: Rules,
}

impl Detector {
    pub fn new(cache: Arc<PriceCache>, rules: Rules) -> Self {
        Self { cache, rules }
    }

    /// Classify one record against its listing's last price and update the cache; an alert it
    /// raises goes to `alerts`.
    pub fn process(&self, record: InRecord, alerts: &mut Vec<Alert>) -> Processed {
        let listing_key = record.event.listing_key();
        let hash = self.cache.hash(&listing_key);
        self.process_keyed(record, listing_key, hash, alerts)
    }

    /// [`Self::process`] for a run of records, in order, into `out` and `alerts`. A lookup in a
    /// cache of a million listings is a trip to main memory; prefetching the entries
    /// [`PREFETCH_AHEAD`] records ahead lets those trips overlap instead of queueing one behind
    /// the other.
    pub fn process_all(&self, records: Vec<InRecord>, out: &mut Vec<Processed>, alerts: &mut Vec<Alert>) {
        let keys: Vec<CompactString> = records.iter().map(|r| r.event.listing_key()).collect();
        let hashes: Vec<u64> = keys.iter().map(|k| self.cache.hash(k)).collect();
        let layout = self.cache.layout();
        for &h in hashes.iter().take(PREFETCH_AHEAD) {
            self.cache.prefetch(&layout, h);
        }
        for (i, (record, key)) in records.into_iter().zip(keys).enumerate() {
            if let Some(&h) = hashes.get(i + PREFETCH_AHEAD) {
                self.cache.prefetch(&layout, h);
            }
            out.push(self.process_keyed(record, key, hashes[i], alerts));
        }
    }

    /// Classify one record whose key and hash are known; an alert it raises goes to `alerts`.
    fn process_keyed(
        &self,
        record: InRecord,
        listing_key: CompactString,
        hash: u64,
        alerts: &mut Vec<Alert>,
    ) -> Processed {
        let seen_ms = record.event.timestamp.timestamp_millis();
        let (change, state) = self
            .cache
            .observe_hashed(&listing_key, hash, record.event.price, seen_ms);
        if let Some(alert_type) = self.rules.evaluate(&change) {
            let old = change.previous_cents.unwrap_or(record.event.price);
            let new = record.event.price;
            alerts.push(Alert {
                alert_id: alert_id(
                    &listing_key,
                    record.partition,
                    record.offset,
                    &self.rules.rule_name,
                ),
                alert_type: CompactString::const_new(alert_type),
                rule: self.rules.rule_name.clone(),
                listing_key: listing_key.clone(),
                event: Arc::clone(&record.event),
                old_price: old,
                new_price: new,
                drop_amount: old - new,
                drop_percent: -change.change_pct,
                // Event time, not wall time: re-detection yields the identical alert.
                alert_timestamp: record.event.timestamp,
                source_partition: record.partition,
                source_offset: record.offset,
            });
        }
        Processed {
            record,
            listing_key,
            change,
            state,
        }
    }

    /// Process a whole ingest batch, counting what was found.
    pub fn process_batch(&self, batch: IngestBatch, metrics: &Metrics) -> DetectedBatch {
        let mut records = Vec::with_capacity(batch.records.len());
        let mut alerts = Vec::new();
        self.process_all(batch.records, &mut records, &mut alerts);
        let (mut drops, mut rises, mut new, mut out_of_order) = (0, 0, 0, 0);
        for p in &records {
            match p.change.kind {
                ChangeKind::Drop => drops += 1,
                ChangeKind::Increase => rises += 1,
                ChangeKind::New => new += 1,
                ChangeKind::OutOfOrder => out_of_order += 1,
                ChangeKind::Unchanged => {}
            }
        }
        let c = &metrics.counters;
        c.detect_records.inc_by(records.len() as u64);
        c.detect_drops.inc_by(drops);
        c.detect_increases.inc_by(rises);
        c.detect_new.inc_by(new);
        c.detect_out_of_order.inc_by(out_of_order);
        c.alerts_raised.inc_by(alerts.len() as u64);
        DetectedBatch {
            offset: Some((batch.partition, batch.next_offset)),
            records,
            alerts,
            windows: Vec::new(),
            late_windows: Vec::new(),
            watermark: None,
            fetched_at: batch.fetched_at,
        }
    }
}

/// How often the idle timer looks for windows to close when no records arrive.
const WINDOW_TICK: Duration = Duration::from_secs(1);

/// What a run of records did to the windows.
#[derive(Debug, Default)]
pub struct WindowUpdate {
    /// Windows the watermark has passed: to be written.
    pub closed: Vec<WindowRow>,
    /// Written windows the records were late for, with how many records each.
    pub late: Vec<(WindowKey, i32)>,
    /// Records that were late for at least one window.
    pub late_records: u64,
    pub watermark: Option<i64>,
}

/// Feed records to the windows and hand out what closed.
pub fn feed_windows(windows: &mut Windows, records: &[Processed]) -> WindowUpdate {
    if !windows.enabled() {
        return WindowUpdate::default();
    }
    let now = Instant::now();
    let mut late: BTreeMap<WindowKey, i32> = BTreeMap::new();
    let mut late_records = 0;
    for p in records {
        let e = &p.record.event;
        let (keys, count) = windows.observe(
            Observation {
                event_id: e.event_id(),
                source: e.source(),
                listing_key: &p.listing_key,
                price: e.price,
                ts_ms: e.timestamp.timestamp_millis(),
                partition: p.record.partition,
                offset: p.record.offset,
                kind: p.change.kind,
            },
            now,
        );
        late_records += count;
        for k in keys {
            *late.entry(k).or_default() += 1;
        }
    }
    WindowUpdate {
        closed: windows.advance(now),
        late: late.into_iter().collect(),
        late_records,
        watermark: windows.watermark(),
    }
}

/// Feed a detected batch's records to the windows and attach what closed.
pub fn window_batch(windows: &mut Windows, batch: &mut DetectedBatch, metrics: &Metrics) {
    let update = feed_windows(windows, &batch.records);
    let c = &metrics.counters;
    c.windows_late_records.inc_by(update.late_records);
    c.windows_closed.inc_by(update.closed.len() as u64);
    batch.windows = update.closed;
    batch.late_windows = update.late;
    batch.watermark = update.watermark;
}

/// Run until every ingest sender is gone (shutdown) or persist has stopped. Open windows are
/// not written at shutdown: they are rebuilt from price_history at the next start.
pub async fn run(
    detector: Detector,
    mut windows: Windows,
    mut rx: mpsc::Receiver<IngestBatch>,
    tx: mpsc::Sender<DetectedBatch>,
    metrics: Arc<Metrics>,
) {
    let mut tick = tokio::time::interval(WINDOW_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Records first: the idle timer only matters when none arrive.
        let detected = tokio::select! {
            biased;
            batch = rx.recv() => match batch {
                Some(batch) => {
                    let mut d = detector.process_batch(batch, &metrics);
                    window_batch(&mut windows, &mut d, &metrics);
                    d
                }
                None => break,
            },
            _ = tick.tick(), if windows.enabled() => {
                let closed = windows.advance(Instant::now());
                if closed.is_empty() {
                    continue;
                }
                metrics.counters.windows_closed.inc_by(closed.len() as u64);
                DetectedBatch {
                    offset: None,
                    records: Vec::new(),
                    alerts: Vec::new(),
                    windows: closed,
                    late_windows: Vec::new(),
                    watermark: windows.watermark(),
                    fetched_at: Instant::now(),
                }
            }
        };
        metrics.record_channel(channel::DETECT_TO_PERSIST, &tx);
        if tx.send(detected).await.is_err() {
            // Persist stopped (it reports its own error); nothing more can be committed.
            break;
        }
    }
    tracing::debug!("detect stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DetectConfig;
    use crate::pipeline::ingest::parse::Parser;

    /// Records of listing A at `(price, timestamp)`, on partitions 0 and 1 by turns, as a
    /// producer without keys scatters them.
    fn scattered(lines: &[(f64, &str)]) -> Vec<InRecord> {
        let mut parser = Parser::new();
        lines
            .iter()
            .enumerate()
            .map(|(i, (price, at))| {
                let json = format!(
                    r#"{{"event_id":"e1","event_name":"Show","venue":"Hall","source":"mock","price":{price},"timestamp":"{at}","listing_id":"A"}}"#
                );
                let event = parser.parse(json.as_bytes()).expect("valid");
                InRecord {
                    partition: (i % 2) as i32,
                    offset: (i / 2) as i64,
                    kafka_ts: event.timestamp,
                    event,
                }
            })
            .collect()
    }

    fn detector() -> Detector {
        Detector::new(
            Arc::new(PriceCache::new()),
            Rules::from_config(&DetectConfig::default()),
        )
    }

    #[test]
    fn an_older_drop_arriving_late_is_out_of_order_and_raises_no_alert() {
        let d = detector();
        // 10:00 $100, 10:02 $100, then the 10:01 observation at $50 arrives last.
        let records = scattered(&[
            (100.0, "2026-11-21T10:00:00"),
            (100.0, "2026-11-21T10:02:00"),
            (50.0, "2026-11-21T10:01:00"),
        ]);
        let (mut out, mut alerts) = (Vec::new(), Vec::new());
        d.process_all(records, &mut out, &mut alerts);
        let kinds: Vec<ChangeKind> = out.iter().map(|p| p.change.kind).collect();
        assert_eq!(
            kinds,
            [ChangeKind::New, ChangeKind::Unchanged, ChangeKind::OutOfOrder]
        );
        assert!(alerts.is_empty(), "{alerts:?}");
        let state = d.cache.get("mock:A").expect("cached");
        assert_eq!((state.last_price, state.lowest_price), (10_000, 10_000));
        assert_eq!(
            out[2].state, state,
            "the late row carries the state it left alone"
        );
    }

    #[test]
    fn an_older_rise_is_out_of_order_even_when_increases_alert() {
        let mut d = detector();
        d.rules.alert_on_increase = true;
        let records = scattered(&[(100.0, "2026-11-21T10:05:00"), (300.0, "2026-11-21T10:00:00")]);
        let (mut out, mut alerts) = (Vec::new(), Vec::new());
        d.process_all(records, &mut out, &mut alerts);
        assert_eq!(out[1].change.kind, ChangeKind::OutOfOrder);
        assert!(alerts.is_empty());
    }

    #[test]
    fn a_drop_after_a_late_record_is_measured_from_the_latest_price() {
        let d = detector();
        let records = scattered(&[
            (100.0, "2026-11-21T10:00:00"),
            (20.0, "2026-11-21T09:00:00"),
            (80.0, "2026-11-21T10:01:00"),
        ]);
        let (mut out, mut alerts) = (Vec::new(), Vec::new());
        d.process_all(records, &mut out, &mut alerts);
        assert_eq!(out[2].change.kind, ChangeKind::Drop);
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].old_price, alerts[0].new_price), (10_000, 8_000));
        let metrics = Metrics::default();
        let batch = IngestBatch {
            partition: 0,
            next_offset: 1,
            records: scattered(&[(50.0, "2026-11-21T08:00:00")]),
            fetched_at: Instant::now(),
        };
        let detected = d.process_batch(batch, &metrics);
        assert!(detected.alerts.is_empty());
        assert_eq!(metrics.counters.detect_out_of_order.get(), 1);
    }
}
