//! In-process metrics, held in one Prometheus registry (`prometheus-client`): the counters of
//! every stage, consumer lag and offsets per partition, channel fill levels, dependency outages
//! and the produce → commit latency histogram.
//!
//! ```text
//!  stages ──► Counters (atomics) ─┐
//!  persist ─► Latency (hdr) ──────┼──► Registry ──► /metrics (Prometheus text 0.0.4)
//!  readers, stages ─► Live ───────┘
//!                     (offsets, channels, outages: read when scraped)
//!  the same handles ──► Snapshot ──► /api/engine, the system_metrics row and record, logs
//! ```
//!
//! **Adding a counter is one line** in the list in [`counters`]: the field, its exported name,
//! label and help sit together there, and the registry, `/metrics` and the [`Snapshot`] follow
//! from it (then document it). Figures computed when read (lag, channel fill, outages) are in
//! [`live`].
//!
//! Shared by every stage through an `Arc<Metrics>`. Counters are atomics (no lock on the hot
//! path); the histogram and the partition and channel maps sit behind std `Mutex`es taken per
//! batch, never across an `.await`.

mod counters;
mod latency;
mod live;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::backoff::Outage;
pub use counters::{CounterValues, Counters};
use latency::Latency;
pub use latency::{LATENCY_BUCKETS_S, LatencyBuckets};
use live::Live;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The channels between stages, as labelled in `conscope_pipeline_channel_*{channel}` and
/// keyed in `/api/engine`'s `channels`.
pub mod channel {
    pub const INGEST_TO_DETECT: &str = "ingest_to_detect";
    pub const DETECT_TO_PERSIST: &str = "detect_to_persist";
    pub const PERSIST_TO_PUBLISH: &str = "persist_to_publish";
}

/// Per-partition progress of the engine.
#[derive(Debug, Default)]
pub struct PartitionProgress {
    pub high_watermark: std::sync::atomic::AtomicI64,
    pub committed: std::sync::atomic::AtomicI64,
}

#[derive(Debug)]
pub struct Metrics {
    pub counters: Counters,
    latency: Latency,
    live: Arc<Live>,
    last_error: Mutex<Option<String>>,
    /// The broker as every Kafka caller sees it: an outage spans from the first failing call
    /// to the last recovered one (see `backoff`).
    pub kafka_outage: Arc<Outage>,
    /// PostgreSQL, likewise.
    pub postgres_outage: Arc<Outage>,
    /// What only the web layer knows, set by it just before each scrape.
    uptime_seconds: Gauge<f64, AtomicU64>,
    cached_listings: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let kafka_outage = Arc::new(Outage::new("the Kafka broker"));
        let postgres_outage = Arc::new(Outage::new("PostgreSQL"));
        let mut m = Self {
            counters: Counters::default(),
            latency: Latency::default(),
            live: Arc::new(Live::new(kafka_outage.clone(), postgres_outage.clone())),
            last_error: Mutex::default(),
            kafka_outage,
            postgres_outage,
            uptime_seconds: Gauge::default(),
            cached_listings: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut m.registry;
        r.register(
            "conscope_build",
            "ConScope version running",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "conscope_process_uptime_seconds",
            "Seconds since the web server started",
            m.uptime_seconds.clone(),
        );
        m.counters.register(r);
        r.register(
            "conscope_detect_cache_listings",
            "Listings held in this instance's price cache",
            m.cached_listings.clone(),
        );
        r.register(
            "conscope_persist_commit_latency_seconds",
            "Latency from the Kafka produce timestamp to the Postgres commit",
            m.latency.clone(),
        );
        r.register_collector(Box::new(m.live.clone()));
        m
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a metrics lock cannot leave it inconsistent in a way that matters.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Metrics {
    pub fn partition(&self, p: i32) -> Arc<PartitionProgress> {
        lock(&self.live.partitions).entry(p).or_default().clone()
    }

    /// Record produce → commit latencies (microseconds) of one committed batch.
    pub fn record_latencies(&self, micros: impl IntoIterator<Item = u64>) {
        self.latency.record(micros);
    }

    /// The produce → commit histogram as cumulative counts at each bound (seconds).
    pub fn latency_buckets(&self, bounds_s: &[f64]) -> LatencyBuckets {
        self.latency.buckets(bounds_s)
    }

    /// `(high watermark, committed next offset)` of every raw_prices partition seen so far.
    pub fn partition_offsets(&self) -> BTreeMap<i32, (i64, i64)> {
        self.live.partition_offsets()
    }

    /// A copy of the produce → commit histogram (microseconds), for quantiles the snapshot
    /// does not carry (the benchmark's p95).
    pub fn latency_histogram(&self) -> Histogram<u64> {
        self.latency.histogram()
    }

    pub fn set_channel(&self, name: &'static str, used: usize, capacity: usize) {
        lock(&self.live.channels).insert(name, ChannelFill { used, capacity });
    }

    /// Record how full the channel `name` is, as its sender sees it.
    pub fn record_channel<T>(&self, name: &'static str, tx: &mpsc::Sender<T>) {
        self.set_channel(name, tx.max_capacity() - tx.capacity(), tx.max_capacity());
    }

    pub fn set_last_error(&self, error: String) {
        *lock(&self.last_error) = Some(error);
    }

    /// Every metric in the Prometheus text format (0.0.4), for `/metrics`. The web layer
    /// passes what only it knows: how long it has been up and how many listings are cached.
    pub fn encode(&self, uptime: Duration, cached_listings: usize) -> String {
        self.uptime_seconds.set(uptime.as_secs_f64());
        self.cached_listings
            .set(i64::try_from(cached_listings).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry).expect("encoding into a String cannot fail");
        text
    }

    pub fn snapshot(&self) -> Snapshot {
        let h = self.latency.histogram();
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(p) as f64 / 1e6
            }
        };
        Snapshot {
            counters: self.counters.values(),
            latency_p50_s: q(0.5),
            latency_p99_s: q(0.99),
            latency_max_s: if h.is_empty() { 0.0 } else { h.max() as f64 / 1e6 },
            latency_count: h.len(),
            lag: self
                .partition_offsets()
                .into_iter()
                .map(|(p, (hw, done))| (p, (hw - done).max(0)))
                .collect(),
            channels: lock(&self.live.channels)
                .iter()
                .map(|(k, fill)| (k.to_string(), fill.clone()))
                .collect(),
            last_error: lock(&self.last_error).clone(),
            outages: self
                .live
                .outages
                .iter()
                .map(|(name, o)| {
                    let figures = OutageFigures {
                        count: o.count(),
                        seconds: o.total().as_secs_f64(),
                        in_progress_s: o.now().map(|n| n.since.as_secs_f64()),
                    };
                    (*name, figures)
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

#[derive(Debug, Clone, Serialize)]
pub struct ChannelFill {
    pub used: usize,
    pub capacity: usize,
}

/// A point-in-time copy of every metric.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Every counter, as top-level fields (`ingest_records`, `windows_late_records`, …).
    #[serde(flatten)]
    pub counters: CounterValues,
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
    use std::collections::BTreeSet;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn latency_buckets_are_cumulative_and_sum_is_exact() {
        let m = Metrics::default();
        m.record_latencies([1_000, 20_000, 20_000, 3_000_000]);
        let b = m.latency_buckets(&[0.005, 0.05, 1.0, 10.0]);
        assert_eq!(b.cumulative, vec![1, 3, 3, 4]);
        assert_eq!(b.count, 4);
        assert!((b.sum_s - 3.041).abs() < 1e-9, "{}", b.sum_s);
    }

    /// The families listed in docs/architecture.md's Metrics table.
    fn documented() -> BTreeSet<&'static str> {
        let doc = include_str!("../../docs/architecture.md");
        let table = doc
            .split_once("\n### Metrics\n")
            .and_then(|(_, rest)| rest.split("\n#").next())
            .expect("docs/architecture.md has a Metrics section");
        table
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(name, _)| name))
            .collect()
    }

    fn scrape(m: &Metrics) -> (String, prometheus_parse::Scrape) {
        let text = m.encode(Duration::from_secs(3), 7);
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("a Prometheus parser reads it");
        (text, scrape)
    }

    #[test]
    fn the_registry_exports_every_documented_family_and_no_other() {
        let m = Metrics::default();
        m.partition(0).high_watermark.store(5, Relaxed);
        m.record_latencies([1_000]);
        let (text, scrape) = scrape(&m);
        let exported: BTreeSet<&str> = scrape.docs.keys().map(String::as_str).collect();
        assert_eq!(exported, documented(), "{text}");
        assert!(text.contains("conscope_detect_cache_listings 7\n"), "{text}");
        assert!(
            text.contains("conscope_ingest_lag_records{partition=\"0\"} 5\n"),
            "{text}"
        );
    }

    #[test]
    fn persist_to_publish_fill_is_exported_and_in_the_snapshot() {
        let m = Metrics::default();
        let (tx, _rx) = mpsc::channel::<()>(8);
        tx.try_send(()).expect("room");
        tx.try_send(()).expect("room");
        m.record_channel(channel::PERSIST_TO_PUBLISH, &tx);
        let (text, scrape) = scrape(&m);
        let value = |name: &str| {
            scrape
                .samples
                .iter()
                .find(|s| s.metric == name && s.labels.get("channel") == Some("persist_to_publish"))
                .map(|s| s.value.clone())
                .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
        };
        use prometheus_parse::Value::Gauge;
        assert_eq!(value("conscope_pipeline_channel_used_batches"), Gauge(2.0));
        assert_eq!(value("conscope_pipeline_channel_capacity_batches"), Gauge(8.0));
        let fill = &m.snapshot().channels[channel::PERSIST_TO_PUBLISH];
        assert_eq!((fill.used, fill.capacity), (2, 8));
    }

    #[test]
    fn a_counter_reads_the_same_in_the_scrape_and_the_snapshot() {
        let m = Metrics::default();
        m.counters.detect_out_of_order.inc_by(3);
        m.counters.windows_late_records.inc();
        let (text, _) = scrape(&m);
        assert!(
            text.contains("conscope_detect_changes_total{kind=\"out_of_order\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("conscope_detect_windows_late_records_total 1\n"),
            "{text}"
        );
        let snap = m.snapshot();
        assert_eq!(
            (
                snap.counters.detect_out_of_order,
                snap.counters.windows_late_records
            ),
            (3, 1)
        );
        let json = serde_json::to_value(&snap).expect("serializes");
        assert_eq!(
            json["windows_late_records"], 1,
            "counters stay top-level keys: {json}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.set_channel("q\"b\\n\nx", 2, 4);
        let (text, _) = scrape(&m);
        assert!(
            text.contains("conscope_pipeline_channel_used_batches{channel=\"q\\\"b\\\\n\\nx\"} 2\n"),
            "{text}"
        );
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
