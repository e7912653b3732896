//! The produce → commit latency: one `hdrhistogram` read two ways — as a Prometheus histogram
//! with the fixed [`LATENCY_BUCKETS_S`] when scraped, and as quantiles in the snapshot.
//!
//! The histogram sits behind a std `Mutex` taken once per committed batch and once per read,
//! never across an `.await`.

use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::lock;

/// Upper bounds (seconds) of the produce → commit latency histogram's buckets.
pub const LATENCY_BUCKETS_S: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Shared by the persist stage (writes) and the registry and snapshot (reads).
#[derive(Debug, Clone)]
pub(super) struct Latency(Arc<Mutex<Recorded>>);

#[derive(Debug)]
struct Recorded {
    /// Microseconds, 1 µs .. 1 hour, 3 significant digits.
    histogram: Histogram<u64>,
    /// Exact sum of every recorded latency (the histogram keeps 3 significant digits only).
    sum_us: u64,
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

impl Default for Latency {
    fn default() -> Self {
        let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds");
        Self(Arc::new(Mutex::new(Recorded { histogram, sum_us: 0 })))
    }
}

impl Latency {
    pub(super) fn record(&self, micros: impl IntoIterator<Item = u64>) {
        let mut r = lock(&self.0);
        for us in micros {
            r.histogram.saturating_record(us.max(1));
            r.sum_us = r.sum_us.saturating_add(us);
        }
    }

    pub(super) fn histogram(&self) -> Histogram<u64> {
        lock(&self.0).histogram.clone()
    }

    pub(super) fn buckets(&self, bounds_s: &[f64]) -> LatencyBuckets {
        let r = lock(&self.0);
        let h = &r.histogram;
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
            sum_s: r.sum_us as f64 / 1e6,
        }
    }
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let b = self.buckets(&LATENCY_BUCKETS_S);
        // The encoder takes each bucket's own count and accumulates them itself.
        let mut below = 0;
        let own: Vec<(f64, u64)> = b
            .bounds_s
            .iter()
            .zip(&b.cumulative)
            .map(|(le, &upto)| (*le, upto - std::mem::replace(&mut below, upto)))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(b.sum_s, b.count, &own, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
