//! The broker's ceiling: a bare rskafka fetch loop over every partition of a topic, with the
//! engine's fetch settings (`fetch_max_bytes`, `fetch_max_wait_ms`) and one task per partition
//! as the engine has, counting records without parsing them.

use serde::Serialize;
use std::time::Instant;

use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, PartitionClient};

use crate::BenchError;
use conscope::config::KafkaConfig;
use conscope::kafka::{self, KafkaError};
use conscope::rate::Rate;

/// What one bare fetch of a whole topic took.
#[derive(Debug, Clone, Serialize)]
pub struct FetchFigures {
    pub records: u64,
    /// Fetch requests made (records per fetch = records / fetches).
    pub fetches: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
}

/// Fetch every record of `topic` (partitions `0..partitions`) from offset 0 to the current
/// high watermarks, all partitions concurrently, with the engine's settings.
pub async fn bare_fetch(
    client: &Client,
    cfg: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> Result<FetchFigures, KafkaError> {
    let mut clients = Vec::new();
    for p in 0..partitions {
        clients.push(kafka::partition_client(client, topic, p, cfg.request_timeout).await?);
    }
    fetch_all(clients, cfg).await
}

/// One variant of the fetch pattern, for `conscope-bench fetch`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Variant {
    pub max_bytes: i32,
    pub wait_ms: i32,
    /// One connection (client) per partition instead of one shared by all.
    pub own_connections: bool,
}

/// [`bare_fetch`] with the variant's settings, and its own connections to the broker.
pub async fn bare_fetch_variant(
    cfg: &KafkaConfig,
    topic: &str,
    partitions: i32,
    variant: Variant,
) -> Result<FetchFigures, KafkaError> {
    let mut cfg = cfg.clone();
    cfg.fetch_max_bytes = variant.max_bytes;
    cfg.fetch_max_wait_ms = variant.wait_ms;
    let shared = kafka::connect(&cfg).await?;
    let mut clients = Vec::new();
    for p in 0..partitions {
        let client = if variant.own_connections {
            kafka::connect(&cfg).await?
        } else {
            shared.clone()
        };
        clients.push(kafka::partition_client(&client, topic, p, cfg.request_timeout).await?);
    }
    fetch_all(clients, &cfg).await
}

async fn fetch_all(partitions: Vec<PartitionClient>, cfg: &KafkaConfig) -> Result<FetchFigures, KafkaError> {
    let mut clients = Vec::new();
    for pc in partitions {
        let hw = call(&pc, cfg, "list offsets", pc.get_offset(OffsetAt::Latest)).await?;
        clients.push((pc, hw));
    }
    let started = Instant::now();
    let counts =
        futures::future::try_join_all(clients.iter().map(|(pc, hw)| read_partition(pc, *hw, cfg))).await?;
    let seconds = started.elapsed().as_secs_f64();
    let records = counts.iter().map(|c| c.0).sum();
    Ok(FetchFigures {
        records,
        fetches: counts.iter().map(|c| c.2).sum(),
        bytes: counts.iter().map(|c| c.1).sum(),
        seconds,
        records_per_s: Rate::new(records, seconds).per_second(),
    })
}

/// (records, value bytes, fetches) of one partition below `high_watermark`.
async fn read_partition(
    pc: &PartitionClient,
    high_watermark: i64,
    cfg: &KafkaConfig,
) -> Result<(u64, u64, u64), KafkaError> {
    let (mut next, mut records, mut bytes, mut fetches) = (0i64, 0u64, 0u64, 0u64);
    while next < high_watermark {
        fetches += 1;
        let fetch = pc.fetch_records(next, 1..cfg.fetch_max_bytes, cfg.fetch_max_wait_ms);
        let (batch, _) = call(pc, cfg, "fetch", fetch).await?;
        let from = next;
        for r in batch.iter().filter(|r| r.offset >= from) {
            records += 1;
            bytes += r.record.value.as_ref().map_or(0, Vec::len) as u64;
            next = r.offset + 1;
        }
    }
    Ok((records, bytes, fetches))
}

/// One Kafka call bounded by `request_timeout`. No retries: a failing broker fails the figure.
async fn call<T>(
    pc: &PartitionClient,
    cfg: &KafkaConfig,
    operation: &'static str,
    fut: impl Future<Output = Result<T, rskafka::client::error::Error>>,
) -> Result<T, KafkaError> {
    match tokio::time::timeout(cfg.request_timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(KafkaError::Partition {
            operation,
            topic: pc.topic().into(),
            partition: pc.partition(),
            source: source.into(),
        }),
        Err(_) => Err(KafkaError::Timeout {
            operation,
            topic: pc.topic().into(),
            partition: pc.partition(),
            timeout: cfg.request_timeout,
        }),
    }
}

/// Produce → fetch latency (microseconds) of a bare consumer tailing `topic` while it is being
/// produced: the broker's share of ConScope's produce → commit latency. Runs until `cancel`.
pub async fn tail_latency(
    client: &Client,
    cfg: &KafkaConfig,
    topic: &str,
    partitions: i32,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<hdrhistogram::Histogram<u64>, BenchError> {
    let mut clients = Vec::new();
    for p in 0..partitions {
        clients.push(kafka::partition_client(client, topic, p, cfg.request_timeout).await?);
    }
    let tails = clients.iter().map(|pc| tail_partition(pc, cfg, cancel.clone()));
    let mut total = new_histogram()?;
    for h in futures::future::try_join_all(tails).await? {
        let _ = total.add(h);
    }
    Ok(total)
}

fn new_histogram() -> Result<hdrhistogram::Histogram<u64>, BenchError> {
    // 1 µs .. 1 hour, 3 significant digits, as the engine's own histogram.
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| BenchError::Invalid(format!("latency histogram: {e}")))
}

async fn tail_partition(
    pc: &PartitionClient,
    cfg: &KafkaConfig,
    cancel: tokio_util::sync::CancellationToken,
) -> Result<hdrhistogram::Histogram<u64>, BenchError> {
    let mut h = new_histogram()?;
    let mut next = 0i64;
    loop {
        let fetch = pc.fetch_records(next, 1..cfg.fetch_max_bytes, cfg.fetch_max_wait_ms);
        let batch = tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(h),
            r = call(pc, cfg, "fetch", fetch) => r?.0,
        };
        let now = chrono::Utc::now();
        for r in batch.iter().filter(|r| r.offset >= next) {
            let us = (now - r.record.timestamp).num_microseconds().unwrap_or(0).max(1) as u64;
            h.saturating_record(us);
        }
        if let Some(last) = batch.iter().map(|r| r.offset).max() {
            next = next.max(last + 1);
        }
    }
}
