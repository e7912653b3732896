//! One raw_prices partition reader: the shared [`PartitionReader`] fetches, this file parses.
//!
//! ```text
//!  PartitionReader::read(next, ≤ fetch_max_bytes) ──► parse each record
//!        ▲                                              │ bad → DLQ (acknowledged first)
//!        └── next = last offset + 1                     ▼ good
//!            (in flight while the batch is handed on)  send IngestBatch (waits for room)
//! ```
//!
//! One fetch is in flight while the previous batch is parsed and handed on; the next starts
//! only when both are done, so a partition holds at most two fetched batches and a full
//! channel stops its fetches.
//!
//! The reader bounds every Kafka call by `request_timeout` and retries failures with the Kafka
//! backoff, rebuilding the partition client. By default the backoff has no deadline: a broker
//! outage is waited out, reported once to `Metrics::kafka_outage` (one WARN when it begins, one
//! when it ends). With a deadline set, the task fails when it passes and the supervisor
//! restarts the engine from the stored offsets. A stored offset the broker no longer has
//! follows `kafka.offset_out_of_range`; a record too large to fetch goes to the DLQ.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use rskafka::client::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::parse::Parser;
use crate::backoff::Backoff;
use crate::config::{KafkaConfig, OffsetReset};
use crate::kafka::KafkaError;
use crate::kafka::dlq::{Dlq, DlqRecord};
use crate::kafka::reader::{OutOfRange, PartitionReader, Read, ReadError, Start};
use crate::metrics::{Metrics, PartitionProgress, channel};
use crate::pipeline::messages::{InRecord, IngestBatch};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// Reading the partition (an offset gone from the broker included).
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Handing bad records to the DLQ.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
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
    let start = start.map_or(Start::Earliest, Start::At);
    let Some(mut reader) = reader(&ctx, &topic, partition).start(start, &cancel).await? else {
        return Ok(());
    };
    let progress = ctx.metrics.partition(partition);
    progress.committed.fetch_max(reader.next_offset(), Relaxed);
    tracing::info!(
        topic,
        partition,
        next_offset = reader.next_offset(),
        "ingest started"
    );
    let mut parser = Parser::with_max_future_skew(ctx.max_future_skew);
    let mut handed = reader.next_offset();
    // Cancellation ends the read at once; nothing fetched is lost, it simply was not committed
    // and is read again after restart.
    let Some(mut read) = reader.read().await? else {
        stopped(&topic, partition, handed);
        return Ok(());
    };
    loop {
        // The next fetch is in flight while this batch is parsed and handed on, so the
        // broker's time per request overlaps detect's; while the hand-on waits for room in
        // the channel the fetched batch waits too, and no further fetch starts.
        let next = reader.read();
        let hand = hand_on(&ctx, &mut parser, &progress, partition, read, &cancel);
        tokio::pin!(next, hand);
        let mut fetched = None;
        let flow = loop {
            tokio::select! {
                read = &mut next, if fetched.is_none() => fetched = Some(read?),
                flow = &mut hand => break flow?,
            }
        };
        let Flow::Handed(to) = flow else { break };
        handed = handed.max(to);
        let fetched = match fetched {
            Some(read) => read,
            None => next.await?,
        };
        match fetched {
            Some(r) => read = r,
            None => break,
        }
    }
    stopped(&topic, partition, handed);
    Ok(())
}

fn stopped(topic: &str, partition: i32, next_offset: i64) {
    tracing::info!(topic, partition, next_offset, "ingest stopped");
}

/// What handing one read on came to.
enum Flow {
    /// Handed on (or nothing to hand on); the next offset after it.
    Handed(i64),
    /// Cancelled, or detect is gone: stop reading.
    Stop,
}

/// Parse one read's records, send the bad ones to the DLQ and the good ones to detect.
async fn hand_on(
    ctx: &ReaderContext,
    parser: &mut Parser,
    progress: &PartitionProgress,
    partition: i32,
    read: Read,
    cancel: &CancellationToken,
) -> Result<Flow, IngestError> {
    let batch = match read {
        Read::Records(batch) => batch,
        Read::Unreadable { offset, limit } => {
            unreadable(ctx, partition, offset, limit).await?;
            return Ok(Flow::Handed(offset + 1));
        }
    };
    progress.high_watermark.store(batch.high_watermark, Relaxed);
    if batch.records.is_empty() {
        return Ok(Flow::Handed(batch.next_offset));
    }
    let fetched_at = Instant::now();
    let mut good = Vec::with_capacity(batch.records.len());
    let mut bad = Vec::new();
    for r in batch.records {
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
    ctx.metrics
        .counters
        .ingest_records
        .inc_by((good.len() + bad.len()) as u64);
    if !bad.is_empty() {
        tracing::debug!(partition, count = bad.len(), "records sent to the DLQ");
        ctx.dlq.send(bad).await?;
    }
    let next_offset = batch.next_offset;
    let batch = IngestBatch {
        partition,
        records: good,
        next_offset,
        fetched_at,
    };
    // Blocks while detect is behind: this is where backpressure stops the fetch loop.
    tokio::select! {
        biased;
        () = cancel.cancelled() => return Ok(Flow::Stop),
        sent = ctx.tx.send(batch) => if sent.is_err() { return Ok(Flow::Stop) },
    }
    ctx.metrics.record_channel(channel::INGEST_TO_DETECT, &ctx.tx);
    Ok(Flow::Handed(next_offset))
}

/// The shared reader as ingest runs it: tracked by the Kafka outage, every failure counted in
/// `ingest_errors`, an offset gone from the broker following `kafka.offset_out_of_range`.
fn reader(ctx: &ReaderContext, topic: &str, partition: i32) -> PartitionReader {
    let key = "kafka.offset_out_of_range";
    let out_of_range = match ctx.cfg.offset_out_of_range {
        OffsetReset::Fail => OutOfRange::Fail { key },
        // Ahead of the broker means the topic was recreated: starting over would collide with
        // rows already stored for those offsets, so that always needs an operator.
        OffsetReset::Earliest => OutOfRange::EarliestIfBehind {
            key,
            loss: "POSSIBLE DATA LOSS",
        },
    };
    let (failures, resets) = (ctx.metrics.clone(), ctx.metrics.clone());
    PartitionReader::new("ingest", ctx.client.clone(), &ctx.cfg, topic, partition)
        .backoff(Backoff::tracked(
            &ctx.cfg.backoff,
            &ctx.metrics.kafka_outage,
            "ingest",
        ))
        .out_of_range(out_of_range)
        .on_failure(move || {
            failures.counters.ingest_errors.inc();
        })
        .on_reset(move || {
            resets.counters.offset_resets.inc();
        })
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
