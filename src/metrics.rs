//! In-process metrics: counters per stage, consumer lag per partition, channel fill levels and
//! the produce → commit latency histogram.
//!
//! Shared by every stage through an `Arc<Metrics>`. Counters are atomics (no lock on the hot
//! path); the histogram sits behind a std `Mutex` taken once per committed batch, never across
//! an `.await`. A [`Snapshot`] is what gets logged, stored in `system_metrics` and served.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;
use serde::Serialize;

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
    channels: Mutex<BTreeMap<&'static str, (usize, usize)>>,
    last_error: Mutex<Option<String>>,
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
            channels: Mutex::default(),
            last_error: Mutex::default(),
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
        for us in micros {
            h.saturating_record(us.max(1));
        }
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
        }
    }
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
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
    pub latency_max_s: f64,
    pub latency_count: u64,
    /// Consumer lag per raw_prices partition: high watermark − committed next offset.
    pub lag: BTreeMap<i32, i64>,
    pub channels: BTreeMap<String, ChannelFill>,
    pub last_error: Option<String>,
}
