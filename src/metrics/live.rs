//! What is read when scraped rather than counted: consumer lag and offsets per raw_prices
//! partition, the fill of each channel between stages, and the outages of the broker and of
//! Postgres. Registered as one collector; the snapshot reads the same state.
//!
//! The maps sit behind std `Mutex`es taken per fetched or sent batch and per read, never across
//! an `.await`; the offsets themselves are atomics the readers and persist update freely.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{ChannelFill, PartitionProgress, lock};
use crate::backoff::Outage;

#[derive(Debug)]
pub(super) struct Live {
    pub partitions: Mutex<BTreeMap<i32, Arc<PartitionProgress>>>,
    pub channels: Mutex<BTreeMap<&'static str, ChannelFill>>,
    /// `kafka` and `postgres`, as labelled in `dependency`.
    pub outages: [(&'static str, Arc<Outage>); 2],
}

impl Live {
    pub fn new(kafka: Arc<Outage>, postgres: Arc<Outage>) -> Self {
        Self {
            partitions: Mutex::default(),
            channels: Mutex::default(),
            outages: [("kafka", kafka), ("postgres", postgres)],
        }
    }

    /// `(high watermark, committed next offset)` of every partition seen so far.
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
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let offsets = self.partition_offsets();
        let by_partition = |value: fn(i64, i64) -> i64| {
            offsets.iter().map(move |(p, (hw, done))| {
                ([("partition", p.to_string())], ConstGauge::new(value(*hw, *done)))
            })
        };
        family(
            &mut encoder,
            "conscope_ingest_lag_records",
            "Consumer lag per raw_prices partition: high watermark minus committed next offset.",
            by_partition(|hw, done| (hw - done).max(0)),
        )?;
        family(
            &mut encoder,
            "conscope_ingest_high_watermark_offset",
            "Latest offset seen on each raw_prices partition.",
            by_partition(|hw, _| hw),
        )?;
        family(
            &mut encoder,
            "conscope_ingest_committed_offset",
            "Next offset to read, as committed to Postgres, per raw_prices partition.",
            by_partition(|_, done| done),
        )?;

        let channels = lock(&self.channels).clone();
        let by_channel = |value: fn(&ChannelFill) -> usize| {
            channels
                .iter()
                .map(move |(name, fill)| ([("channel", *name)], ConstGauge::new(value(fill) as i64)))
        };
        family(
            &mut encoder,
            "conscope_pipeline_channel_used_batches",
            "Batches waiting in each channel between stages.",
            by_channel(|fill| fill.used),
        )?;
        family(
            &mut encoder,
            "conscope_pipeline_channel_capacity_batches",
            "Capacity of each channel between stages.",
            by_channel(|fill| fill.capacity),
        )?;

        let outages = self.outages.iter().map(|(d, o)| ([("dependency", *d)], o));
        family(
            &mut encoder,
            // `_total` is appended to counters when encoded.
            "conscope_pipeline_outages",
            "Outages of a dependency seen by the engine (first failing call to last recovered one).",
            outages.clone().map(|(l, o)| (l, ConstCounter::new(o.count()))),
        )?;
        family(
            &mut encoder,
            "conscope_pipeline_outage_in_progress",
            "1 while a dependency is unavailable and the engine waits for it.",
            outages
                .clone()
                .map(|(l, o)| (l, ConstGauge::new(i64::from(o.now().is_some())))),
        )?;
        family(
            &mut encoder,
            "conscope_pipeline_outage_seconds",
            "Total time a dependency was unavailable, the outage in progress included.",
            outages.map(|(l, o)| (l, ConstCounter::new(o.total().as_secs_f64()))),
        )
    }
}

/// One family: its `# HELP`/`# TYPE` lines, then a sample per label set. (Help ends in a full
/// stop, as the registry's own entries do.)
fn family<L: EncodeLabelSet, M: EncodeMetric + TypedMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, M::TYPE)?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}
