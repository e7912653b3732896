//! In-process metrics: counters per stage, consumer lag per partition, channel fill levels and
//! the produce → commit latency histogram.
//!
//! Shared by every stage through an `Arc<Metrics>`. Counters are atomics (no lock on the hot
//! path); the histogram sits behind a std `Mutex` taken once per committed batch, never across
//! an `.await`. A [`Snapshot`] is what gets logged, stored in `system_metrics` and served.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::backoff::Outage;

/// Counters of the engine. Names follow `conscope_<stage>_<what>_<unit>` when exported.
#[derive(Debug, Default)]
pub struct Counters {
    pub ingest_records: AtomicU64,
    pub ingest_bytes: AtomicU64,
    pub ingest_errors: AtomicU64,
    pub dlq_records: AtomicU64,
    pub offset_resets: AtomicU64,
    pub detect_records: AtomicU64,
    pub detect_drops: AtomicU64,
    pub detect_increases: AtomicU64,
    pub detect_new: AtomicU64,
    /// Observations older than their listing's last one: stored, but they changed nothing.
    pub detect_out_of_order: AtomicU64,
    pub alerts_raised: AtomicU64,
    pub persist_batches: AtomicU64,
    pub persist_records: AtomicU64,
    pub persist_errors: AtomicU64,
    pub publish_records: AtomicU64,
    pub publish_errors: AtomicU64,
    pub source_records: AtomicU64,
    pub source_errors: AtomicU64,
    /// Polled events or price series left out because the API gave no usable price.
    pub source_skipped: AtomicU64,
    pub task_restarts: AtomicU64,
    pub windows_closed: AtomicU64,
    pub windows_late_records: AtomicU64,
    /// Alert-topic records the alert task evaluated (price_alerts and processed_prices).
    pub alert_records: AtomicU64,
    /// Alerts raised by user watches.
    pub alert_watch_fired: AtomicU64,
    /// Deliveries a notifier accepted (2xx), failed for good, and retried after 5xx/network errors.
    pub alert_deliveries_sent: AtomicU64,
    pub alert_deliveries_failed: AtomicU64,
    pub alert_delivery_retries: AtomicU64,
    /// Alerts sent again although an earlier request carrying them may have been taken: its
    /// answer was a 5xx or never came, or the process stopped before recording it.
    pub alert_possible_repeats: AtomicU64,
    /// 429 answers from notifiers, and the total time they asked us to wait.
    pub alert_rate_limited: AtomicU64,
    pub alert_retry_after_ms: AtomicU64,
}

/// Per-partition progress of the engine.
#[derive(Debug, Default)]
pub struct PartitionProgress {
    pub high_watermark: AtomicI64,
    pub committed: AtomicI64,
}

#[derive(Debug)]
pub struct Metrics {
    pub counters: Counters,
    partitions: Mutex<BTreeMap<i32, std::sync::Arc<PartitionProgress>>>,
    latency_us: Mutex<Histogram<u64>>,
    /// Exact sum of every recorded latency (the histogram keeps 3 significant digits only).
    latency_sum_us: AtomicU64,
    channels: Mutex<BTreeMap<&'static str, (usize, usize)>>,
    last_error: Mutex<Option<String>>,
    /// The broker as every Kafka caller sees it: an outage spans from the first failing call
    /// to the last recovered one (see `backoff`).
    pub kafka_outage: Arc<Outage>,
    /// PostgreSQL, likewise.
    pub postgres_outage: Arc<Outage>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            partitions: Mutex::default(),
            // 1 µs .. 1 hour, 3 significant digits.
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds"),
            ),
            latency_sum_us: AtomicU64::new(0),
            channels: Mutex::default(),
            last_error: Mutex::default(),
            kafka_outage: Arc::new(Outage::new("the Kafka broker")),
            postgres_outage: Arc::new(Outage::new("PostgreSQL")),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock cannot leave it inconsistent in a way that matters.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    pub fn partition(&self, p: i32) -> std::sync::Arc<PartitionProgress> {
        lock(&self.partitions).entry(p).or_default().clone()
    }

    /// Record produce → commit latencies (microseconds) of one committed batch.
    pub fn record_latencies(&self, micros: impl IntoIterator<Item = u64>) {
        let mut h = lock(&self.latency_us);
        let mut sum = 0u64;
        for us in micros {
            h.saturating_record(us.max(1));
            sum = sum.saturating_add(us);
        }
        self.latency_sum_us.fetch_add(sum, Relaxed);
    }

    /// The produce → commit latency histogram as cumulative counts at each bound (seconds),
    /// for Prometheus exposition.
    pub fn latency_buckets(&self, bounds_s: &[f64]) -> LatencyBuckets {
        let h = lock(&self.latency_us);
        // One pass over the histogram's buckets: each bound adds the counts above the previous one.
        let (mut total, mut from_us) = (0u64, 0u64);
        let cumulative = bounds_s
            .iter()
            .map(|&le| {
                let le_us = (le * 1e6) as u64;
                if le_us >= from_us && !h.is_empty() {
                    total = total.saturating_add(h.count_between(from_us, le_us));
                    from_us = h.next_non_equivalent(le_us);
                }
                total
            })
            .collect();
        LatencyBuckets {
            bounds_s: bounds_s.to_vec(),
            cumulative,
            count: h.len(),
            sum_s: self.latency_sum_us.load(Relaxed) as f64 / 1e6,
        }
    }

    /// `(high watermark, committed next offset)` of every raw_prices partition seen so far.
    pub fn partition_offsets(&self) -> BTreeMap<i32, (i64, i64)> {
        lock(&self.partitions)
            .iter()
            .map(|(p, prog)| {
                (
                    *p,
                    (prog.high_watermark.load(Relaxed), prog.committed.load(Relaxed)),
                )
            })
            .collect()
    }

    /// A copy of the produce → commit histogram (microseconds), for quantiles the snapshot
    /// does not carry (the benchmark's p95).
    pub fn latency_histogram(&self) -> Histogram<u64> {
        lock(&self.latency_us).clone()
    }

    pub fn set_channel(&self, name: &'static str, used: usize, capacity: usize) {
        lock(&self.channels).insert(name, (used, capacity));
    }

    pub fn set_last_error(&self, error: String) {
        *lock(&self.last_error) = Some(error);
    }

    pub fn snapshot(&self) -> Snapshot {
        let c = &self.counters;
        let h = lock(&self.latency_us);
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(p) as f64 / 1e6
            }
        };
        Snapshot {
            ingest_records: c.ingest_records.load(Relaxed),
            ingest_errors: c.ingest_errors.load(Relaxed),
            dlq_records: c.dlq_records.load(Relaxed),
            offset_resets: c.offset_resets.load(Relaxed),
            detect_records: c.detect_records.load(Relaxed),
            detect_drops: c.detect_drops.load(Relaxed),
            detect_increases: c.detect_increases.load(Relaxed),
            detect_new: c.detect_new.load(Relaxed),
            detect_out_of_order: c.detect_out_of_order.load(Relaxed),
            alerts_raised: c.alerts_raised.load(Relaxed),
            persist_batches: c.persist_batches.load(Relaxed),
            persist_records: c.persist_records.load(Relaxed),
            persist_errors: c.persist_errors.load(Relaxed),
            publish_records: c.publish_records.load(Relaxed),
            publish_errors: c.publish_errors.load(Relaxed),
            source_records: c.source_records.load(Relaxed),
            source_errors: c.source_errors.load(Relaxed),
            source_skipped: c.source_skipped.load(Relaxed),
            task_restarts: c.task_restarts.load(Relaxed),
            windows_closed: c.windows_closed.load(Relaxed),
            windows_late_records: c.windows_late_records.load(Relaxed),
            alert_records: c.alert_records.load(Relaxed),
            alert_watch_fired: c.alert_watch_fired.load(Relaxed),
            alert_deliveries_sent: c.alert_deliveries_sent.load(Relaxed),
            alert_deliveries_failed: c.alert_deliveries_failed.load(Relaxed),
            alert_delivery_retries: c.alert_delivery_retries.load(Relaxed),
            alert_rate_limited: c.alert_rate_limited.load(Relaxed),
            alert_retry_after_ms: c.alert_retry_after_ms.load(Relaxed),
            latency_p50_s: q(0.5),
            latency_p99_s: q(0.99),
            latency_max_s: if h.is_empty() { 0.0 } else { h.max() as f64 / 1e6 },
            latency_count: h.len(),
            lag: lock(&self.partitions)
                .iter()
                .map(|(p, prog)| {
                    let hw = prog.high_watermark.load(Relaxed);
                    let done = prog.committed.load(Relaxed);
                    (*p, (hw - done).max(0))
                })
                .collect(),
            channels: lock(&self.channels)
                .iter()
                .map(|(k, (used, cap))| {
                    (
                        k.to_string(),
                        ChannelFill {
                            used: *used,
                            capacity: *cap,
                        },
                    )
                })
                .collect(),
            last_error: lock(&self.last_error).clone(),
            outages: [("kafka", &self.kafka_outage), ("postgres", &self.postgres_outage)]
                .into_iter()
                .map(|(name, o)| {
                    let figures = OutageFigures {
                        count: o.count(),
                        seconds: o.total().as_secs_f64(),
                        in_progress_s: o.now().map(|n| n.since.as_secs_f64()),
                    };
                    (name, figures)
                })
                .collect(),
        }
    }
}

/// Outages of one dependency so far.
#[derive(Debug, Clone, Serialize)]
pub struct OutageFigures {
    /// Outages begun.
    pub count: u64,
    /// Their total length, the one in progress included.
    pub seconds: f64,
    /// How long the one in progress has lasted; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_progress_s: Option<f64>,
}

/// Cumulative counts of the latency histogram at fixed bounds (`le` in seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBuckets {
    pub bounds_s: Vec<f64>,
    /// Observations at or below each bound, same order as `bounds_s`.
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChannelFill {
    pub used: usize,
    pub capacity: usize,
}

/// A point-in-time copy of every metric.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub ingest_records: u64,
    pub ingest_errors: u64,
    pub dlq_records: u64,
    pub offset_resets: u64,
    pub detect_records: u64,
    pub detect_drops: u64,
    pub detect_increases: u64,
    pub detect_new: u64,
    pub detect_out_of_order: u64,
    pub alerts_raised: u64,
    pub persist_batches: u64,
    pub persist_records: u64,
    pub persist_errors: u64,
    pub publish_records: u64,
    pub publish_errors: u64,
    pub source_records: u64,
    pub source_errors: u64,
    pub source_skipped: u64,
    pub task_restarts: u64,
    pub windows_closed: u64,
    /// Records that arrived for a window already written (merged or dropped per config).
    pub windows_late_records: u64,
    pub alert_records: u64,
    pub alert_watch_fired: u64,
    pub alert_deliveries_sent: u64,
    pub alert_deliveries_failed: u64,
    pub alert_delivery_retries: u64,
    pub alert_rate_limited: u64,
    pub alert_retry_after_ms: u64,
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
    pub latency_max_s: f64,
    pub latency_count: u64,
    /// Consumer lag per raw_prices partition: high watermark − committed next offset.
    pub lag: BTreeMap<i32, i64>,
    pub channels: BTreeMap<String, ChannelFill>,
    pub last_error: Option<String>,
    /// Outages of the broker (`kafka`) and of Postgres (`postgres`).
    pub outages: BTreeMap<&'static str, OutageFigures>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative_and_sum_is_exact() {
        let m = Metrics::default();
        m.record_latencies([1_000, 20_000, 20_000, 3_000_000]);
        let b = m.latency_buckets(&[0.005, 0.05, 1.0, 10.0]);
        assert_eq!(b.cumulative, vec![1, 3, 3, 4]);
        assert_eq!(b.count, 4);
        assert!((b.sum_s - 3.041).abs() < 1e-9, "{}", b.sum_s);
    }

    #[test]
    fn partition_offsets_report_watermark_and_commit() {
        let m = Metrics::default();
        let p = m.partition(2);
        p.high_watermark.store(100, Relaxed);
        p.committed.store(40, Relaxed);
        assert_eq!(m.partition_offsets().get(&2), Some(&(100, 40)));
        assert_eq!(m.snapshot().lag.get(&2), Some(&60));
    }
}
