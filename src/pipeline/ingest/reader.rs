//! One raw_prices partition reader.
//!
//! ```text
//!  fetch(next, ≤ fetch_max_bytes, fetch_max_wait_ms) ──► parse each record
//!        ▲                                                 │ bad → DLQ (acknowledged first)
//!        └── next = last offset + 1 ◄── send IngestBatch ◄─┘ good
//! ```
//!
//! Every Kafka call is bounded by `request_timeout`; failures are retried with the Kafka
//! backoff, rebuilding the partition client. By default the backoff has no deadline: a broker
//! outage is waited out, reported once to `Metrics::kafka_outage` (one WARN when it begins, one
//! when it ends). With a deadline set, the task fails when it passes and the supervisor
//! restarts the engine from the stored offsets. A stored offset the broker no longer has
//! follows `kafka.offset_out_of_range`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, PartitionClient};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::parse::Parser;
use crate::backoff::Backoff;
use crate::config::{KafkaConfig, OffsetReset};
use crate::kafka::dlq::{Dlq, DlqRecord};
use crate::kafka::{self, Fetch, KafkaError};
use crate::metrics::{Metrics, channel};
use crate::pipeline::messages::{InRecord, IngestBatch};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(
        "stored offset {offset} of {topic}/{partition} is no longer on the broker (it has {earliest}..{latest}); \
         set kafka.offset_out_of_range = \"earliest\" to continue from {earliest} and accept the possible loss"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
        earliest: i64,
        latest: i64,
    },
}

/// Everything a partition reader needs.
#[derive(Debug, Clone)]
pub struct ReaderContext {
    pub client: Arc<Client>,
    pub cfg: KafkaConfig,
    pub metrics: Arc<Metrics>,
    pub dlq: Arc<Dlq>,
    pub tx: mpsc::Sender<IngestBatch>,
    /// `ingest.max_future_skew`: how far ahead of the clock an observation may be.
    pub max_future_skew: Duration,
}

/// Read `partition` from `start` (or the earliest offset) until `cancel` fires.
pub async fn run_partition(
    ctx: ReaderContext,
    partition: i32,
    start: Option<i64>,
    cancel: CancellationToken,
) -> Result<(), IngestError> {
    let topic = ctx.cfg.topics.raw_prices.name.clone();
    let timeout = ctx.cfg.request_timeout;
    let mut backoff = Backoff::tracked(&ctx.cfg.backoff, &ctx.metrics.kafka_outage, "ingest");
    let mut pc = connect(&ctx, &topic, partition, &mut backoff, &cancel).await?;
    let mut next = match start {
        Some(n) => n,
        None => loop {
            match offset_at(&pc, OffsetAt::Earliest, &topic, timeout).await {
                Ok(earliest) => break earliest,
                Err(e) => {
                    retry(&ctx, &e, &mut backoff, &cancel).await.map_err(|()| e)?;
                    pc = connect(&ctx, &topic, partition, &mut backoff, &cancel).await?;
                }
            }
        },
    };
    let progress = ctx.metrics.partition(partition);
    progress.committed.fetch_max(next, Relaxed);
    tracing::info!(topic, partition, next_offset = next, "ingest started");
    let mut parser = Parser::with_max_future_skew(ctx.max_future_skew);
    let max_wait = ctx.cfg.fetch_max_wait_ms;
    let mut max_bytes = ctx.cfg.fetch_max_bytes;
    loop {
        // Cancellation first: on shutdown stop fetching at once; nothing fetched is lost, it
        // simply was not committed and is read again after restart.
        let fetched = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            r = kafka::fetch(&pc, next, max_bytes, max_wait, timeout) => r,
        };
        let (records, high_watermark) = match fetched {
            Ok(Fetch::Records(records, high_watermark)) => {
                backoff.reset();
                (records, high_watermark)
            }
            Ok(Fetch::OutOfRange) => {
                match out_of_range(&ctx, &pc, &topic, partition, next).await {
                    Ok(n) => next = n,
                    Err(IngestError::Kafka(e)) => {
                        retry(&ctx, &e, &mut backoff, &cancel).await.map_err(|()| e)?;
                        pc = connect(&ctx, &topic, partition, &mut backoff, &cancel).await?;
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            Err(e) => {
                retry(&ctx, &e, &mut backoff, &cancel).await.map_err(|()| e)?;
                pc = connect(&ctx, &topic, partition, &mut backoff, &cancel).await?;
                continue;
            }
        };
        progress.high_watermark.store(high_watermark, Relaxed);
        if records.iter().all(|r| r.offset < next) && high_watermark > next {
            // Nothing came back although records exist: the next one is larger than the limit
            // (a broker need not return an oversized first record). Fetch it alone with a
            // larger limit; past the cap, record it in the DLQ as unreadable and move on.
            if max_bytes < ctx.cfg.fetch_max_record_bytes {
                max_bytes = max_bytes.saturating_mul(4).min(ctx.cfg.fetch_max_record_bytes);
                continue;
            }
            unreadable(&ctx, partition, next, max_bytes).await?;
            next += 1;
            continue;
        }
        max_bytes = ctx.cfg.fetch_max_bytes;
        let fetched_at = Instant::now();
        let mut good = Vec::with_capacity(records.len());
        let mut bad = Vec::new();
        let mut last = None;
        for r in records.into_iter().filter(|r| r.offset >= next) {
            last = Some(r.offset);
            let value = r.record.value.as_deref().unwrap_or_default();
            ctx.metrics.counters.ingest_bytes.inc_by(value.len() as u64);
            match parser.parse(value) {
                Ok(event) => good.push(InRecord {
                    partition,
                    offset: r.offset,
                    kafka_ts: r.record.timestamp,
                    event,
                }),
                Err(e) => bad.push(DlqRecord {
                    key: r.record.key,
                    value: r.record.value,
                    error: e.to_string(),
                    source_partition: partition,
                    source_offset: r.offset,
                    timestamp: r.record.timestamp,
                }),
            }
        }
        let Some(last) = last else { continue };
        ctx.metrics
            .counters
            .ingest_records
            .inc_by((good.len() + bad.len()) as u64);
        if !bad.is_empty() {
            tracing::debug!(topic, partition, count = bad.len(), "records sent to the DLQ");
            ctx.dlq.send(bad).await?;
        }
        let batch = IngestBatch {
            partition,
            records: good,
            next_offset: last + 1,
            fetched_at,
        };
        // Blocks while detect is behind: this is where backpressure stops the fetch loop.
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            sent = ctx.tx.send(batch) => if sent.is_err() { break },
        }
        ctx.metrics.record_channel(channel::INGEST_TO_DETECT, &ctx.tx);
        next = last + 1;
    }
    tracing::info!(topic, partition, next_offset = next, "ingest stopped");
    Ok(())
}

/// Hand the DLQ a record saying `offset` could not be fetched, and skip it.
async fn unreadable(ctx: &ReaderContext, partition: i32, offset: i64, limit: i32) -> Result<(), IngestError> {
    tracing::warn!(
        partition,
        offset,
        limit,
        "record too large to fetch; recorded in the DLQ and skipped"
    );
    ctx.metrics.counters.ingest_records.inc();
    let record = DlqRecord {
        key: None,
        value: None,
        error: format!("record at offset {offset} is larger than {limit} bytes and could not be fetched"),
        source_partition: partition,
        source_offset: offset,
        timestamp: chrono::Utc::now(),
    };
    ctx.dlq.send(vec![record]).await?;
    // The skip must reach the offsets too: an empty batch carries the new position.
    let batch = IngestBatch {
        partition,
        records: Vec::new(),
        next_offset: offset + 1,
        fetched_at: Instant::now(),
    };
    let _ = ctx.tx.send(batch).await;
    Ok(())
}

async fn connect(
    ctx: &ReaderContext,
    topic: &str,
    partition: i32,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> Result<PartitionClient, IngestError> {
    loop {
        match kafka::partition_client(&ctx.client, topic, partition, ctx.cfg.request_timeout).await {
            Ok(pc) => return Ok(pc),
            Err(e) => retry(ctx, &e, backoff, cancel).await.map_err(|()| e)?,
        }
    }
}

/// Wait before the next try; `Err` when the deadline has passed (or on shutdown). The outage
/// logs its beginning and end; each retry is logged at DEBUG.
async fn retry(
    ctx: &ReaderContext,
    error: &KafkaError,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> Result<(), ()> {
    ctx.metrics.counters.ingest_errors.inc();
    let Some(delay) = backoff.failed(error) else {
        return Err(());
    };
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(()),
        () = tokio::time::sleep(delay) => Ok(()),
    }
}

async fn offset_at(
    pc: &PartitionClient,
    at: OffsetAt,
    topic: &str,
    timeout: Duration,
) -> Result<i64, KafkaError> {
    match tokio::time::timeout(timeout, pc.get_offset(at)).await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(source)) => Err(KafkaError::Partition {
            operation: "list offsets",
            topic: topic.into(),
            partition: pc.partition(),
            source: source.into(),
        }),
        Err(_) => Err(KafkaError::Timeout {
            operation: "list offsets",
            topic: topic.into(),
            partition: pc.partition(),
            timeout,
        }),
    }
}

/// The broker refused `next`: apply the configured policy.
async fn out_of_range(
    ctx: &ReaderContext,
    pc: &PartitionClient,
    topic: &str,
    partition: i32,
    next: i64,
) -> Result<i64, IngestError> {
    let timeout = ctx.cfg.request_timeout;
    let earliest = offset_at(pc, OffsetAt::Earliest, topic, timeout).await?;
    let latest = offset_at(pc, OffsetAt::Latest, topic, timeout).await?;
    if (earliest..=latest).contains(&next) {
        // A transient answer (e.g. the leader caught up meanwhile): simply fetch again.
        return Ok(next);
    }
    let error = IngestError::OffsetOutOfRange {
        topic: topic.into(),
        partition,
        offset: next,
        earliest,
        latest,
    };
    // Ahead of the broker means the topic was recreated: starting over would collide with rows
    // already stored for those offsets, so that always needs an operator.
    match ctx.cfg.offset_out_of_range {
        OffsetReset::Fail => Err(error),
        OffsetReset::Earliest if next > latest => Err(error),
        OffsetReset::Earliest => {
            ctx.metrics.counters.offset_resets.inc();
            tracing::error!(
                topic,
                partition,
                stored = next,
                earliest,
                latest,
                "stored offset is gone from the broker; continuing from the earliest offset: POSSIBLE DATA LOSS"
            );
            Ok(earliest)
        }
    }
}
