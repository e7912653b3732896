//! One alert-topic partition reader (`price_alerts` or `processed_prices`): fetches from the
//! alert task's stored offset and hands each non-empty fetch to the evaluator.
//!
//! ```text
//!  fetch(next) ──► Fetched { records, next_offset } ──► mpsc (blocks while evaluate is behind)
//!     ▲                                                        │
//!     └──────────── next = last offset + 1 ◄───────────────────┘
//! ```
//!
//! Every Kafka call is bounded by `kafka.request_timeout` and retried with the Kafka backoff
//! until its deadline (then the task fails and is restarted from the stored offsets). These
//! topics keep records briefly (price_alerts: a day), so a stored offset the broker no longer
//! has continues from the earliest one, logged as an error: alerts may have been missed.

use std::sync::Arc;
use std::time::Duration;

use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, PartitionClient};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::AlertError;
use crate::backoff::Backoff;
use crate::config::{KafkaConfig, StartFrom};
use crate::kafka::{self, Fetch, KafkaError};

/// Which alert topic a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `price_alerts`: the default rule's alerts.
    Alerts,
    /// `processed_prices`: every price, for the watches.
    Processed,
}

/// One fetch: record values with their offsets, and the offset after the last record.
#[derive(Debug)]
pub struct Fetched {
    pub source: Source,
    pub topic: String,
    pub partition: i32,
    pub records: Vec<(i64, Vec<u8>)>,
    pub next_offset: i64,
}

/// Where a reader starts and what it reads.
#[derive(Debug, Clone)]
pub struct ReaderSpec {
    pub source: Source,
    pub topic: String,
    pub partition: i32,
    /// The stored next offset, if any.
    pub start: Option<i64>,
    pub start_from: StartFrom,
}

fn err(spec: &ReaderSpec, source: KafkaError) -> AlertError {
    AlertError::Consume {
        topic: spec.topic.clone(),
        partition: spec.partition,
        source: Box::new(source),
    }
}

/// Read one partition until `cancel` fires or the evaluator is gone.
pub async fn run_partition(
    client: Arc<Client>,
    cfg: KafkaConfig,
    spec: ReaderSpec,
    tx: mpsc::Sender<Fetched>,
    cancel: CancellationToken,
) -> Result<(), AlertError> {
    let timeout = cfg.request_timeout;
    let mut backoff = Backoff::new(&cfg.backoff);
    let Some(mut pc) = connect(&client, &cfg, &spec, &mut backoff, &cancel).await? else {
        return Ok(());
    };
    let mut next = match spec.start {
        Some(n) => n,
        None => {
            let at = match spec.start_from {
                StartFrom::Earliest => OffsetAt::Earliest,
                StartFrom::Latest => OffsetAt::Latest,
            };
            offset_at(&pc, at, timeout).await.map_err(|e| err(&spec, e))?
        }
    };
    tracing::info!(
        topic = spec.topic,
        partition = spec.partition,
        next_offset = next,
        "alert consumer started"
    );
    loop {
        let fetched = tokio::select! {
            // Cancellation first: what was fetched but not committed is read again next time.
            biased;
            () = cancel.cancelled() => break,
            r = kafka::fetch(&pc, next, cfg.fetch_max_bytes, cfg.fetch_max_wait_ms, timeout) => r,
        };
        let records = match fetched {
            Ok(Fetch::Records(records, _)) => {
                if backoff.attempts() > 0 {
                    tracing::info!(
                        topic = spec.topic,
                        partition = spec.partition,
                        attempts = backoff.attempts(),
                        "alert consumer: Kafka answers again"
                    );
                }
                backoff.reset();
                records
            }
            Ok(Fetch::OutOfRange) => {
                next = out_of_range(&pc, &spec, next, timeout).await?;
                continue;
            }
            Err(e) => {
                if !wait_retry(&e, &mut backoff, &cancel).await {
                    return if cancel.is_cancelled() {
                        Ok(())
                    } else {
                        Err(err(&spec, e))
                    };
                }
                match connect(&client, &cfg, &spec, &mut backoff, &cancel).await? {
                    Some(p) => pc = p,
                    None => return Ok(()),
                }
                continue;
            }
        };
        let from = next;
        let mut out = Vec::with_capacity(records.len());
        for r in records.into_iter().filter(|r| r.offset >= from) {
            next = r.offset.saturating_add(1);
            out.push((r.offset, r.record.value.unwrap_or_default()));
        }
        if out.is_empty() {
            continue;
        }
        let batch = Fetched {
            source: spec.source,
            topic: spec.topic.clone(),
            partition: spec.partition,
            records: out,
            next_offset: next,
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            sent = tx.send(batch) => if sent.is_err() { break },
        }
    }
    tracing::info!(
        topic = spec.topic,
        partition = spec.partition,
        next_offset = next,
        "alert consumer stopped"
    );
    Ok(())
}

/// A partition client; `None` on shutdown.
async fn connect(
    client: &Client,
    cfg: &KafkaConfig,
    spec: &ReaderSpec,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> Result<Option<PartitionClient>, AlertError> {
    loop {
        match kafka::partition_client(client, &spec.topic, spec.partition, cfg.request_timeout).await {
            Ok(pc) => return Ok(Some(pc)),
            Err(e) => {
                if !wait_retry(&e, backoff, cancel).await {
                    return if cancel.is_cancelled() {
                        Ok(None)
                    } else {
                        Err(err(spec, e))
                    };
                }
            }
        }
    }
}

/// Wait before the next try; false when the deadline has passed or on shutdown.
async fn wait_retry(error: &KafkaError, backoff: &mut Backoff, cancel: &CancellationToken) -> bool {
    let Some(delay) = backoff.next_delay() else {
        return false;
    };
    // One WARN when the failures start (and one INFO when a fetch succeeds again), the
    // retries in between at DEBUG: an outage of hours is two lines, not thousands.
    if backoff.attempts() == 1 {
        tracing::warn!(error = %error, retry_in = ?delay, "alert consumer: Kafka call failed; retrying (retries at DEBUG)");
    } else {
        tracing::debug!(error = %error, retry_in = ?delay, attempt = backoff.attempts(), "alert consumer: Kafka call failed again");
    }
    tokio::select! {
        biased;
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

async fn offset_at(pc: &PartitionClient, at: OffsetAt, timeout: Duration) -> Result<i64, KafkaError> {
    match tokio::time::timeout(timeout, pc.get_offset(at)).await {
        Ok(Ok(o)) => Ok(o),
        Ok(Err(source)) => Err(KafkaError::Partition {
            operation: "list offsets",
            topic: pc.topic().into(),
            partition: pc.partition(),
            source: source.into(),
        }),
        Err(_) => Err(KafkaError::Timeout {
            operation: "list offsets",
            topic: pc.topic().into(),
            partition: pc.partition(),
            timeout,
        }),
    }
}

async fn out_of_range(
    pc: &PartitionClient,
    spec: &ReaderSpec,
    next: i64,
    timeout: Duration,
) -> Result<i64, AlertError> {
    let earliest = offset_at(pc, OffsetAt::Earliest, timeout)
        .await
        .map_err(|e| err(spec, e))?;
    let latest = offset_at(pc, OffsetAt::Latest, timeout)
        .await
        .map_err(|e| err(spec, e))?;
    if (earliest..=latest).contains(&next) {
        return Ok(next);
    }
    tracing::error!(
        topic = spec.topic,
        partition = spec.partition,
        stored = next,
        earliest,
        latest,
        "stored alert offset is gone from the broker; continuing from the earliest: alerts in between may be missed"
    );
    Ok(earliest)
}
