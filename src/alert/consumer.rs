//! One alert-topic partition reader (`price_alerts` or `processed_prices`): the shared
//! [`PartitionReader`] fetches from the alert task's stored offset, this file hands each
//! non-empty fetch to the evaluator.
//!
//! ```text
//!  PartitionReader::read(next) ──► Fetched { records, next_offset } ──► mpsc (blocks while evaluate is behind)
//!     ▲                                                                   │
//!     └──────────────────── next = last offset + 1 ◄──────────────────────┘
//! ```
//!
//! The reader bounds every Kafka call by `kafka.request_timeout` and retries it with the Kafka
//! backoff, as part of the broker's outage (`Metrics::kafka_outage`), until its deadline (then
//! the task fails and is restarted from the stored offsets). These topics keep records briefly
//! (price_alerts: a day), so a stored offset the broker no longer has continues from the
//! earliest one, logged as an error: alerts may have been missed.

use std::sync::Arc;

use rskafka::client::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::AlertError;
use crate::backoff::Backoff;
use crate::config::{KafkaConfig, StartFrom};
use crate::kafka::reader::{OutOfRange, PartitionReader, Read, ReadError, Start};
use crate::metrics::Metrics;

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

fn err(spec: &ReaderSpec, source: ReadError) -> AlertError {
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
    metrics: &Metrics,
    spec: ReaderSpec,
    tx: mpsc::Sender<Fetched>,
    cancel: CancellationToken,
) -> Result<(), AlertError> {
    let start = match (spec.start, spec.start_from) {
        (Some(n), _) => Start::At(n),
        (None, StartFrom::Earliest) => Start::Earliest,
        (None, StartFrom::Latest) => Start::Latest,
    };
    let reader = PartitionReader::new("alert consumer", client, &cfg, &spec.topic, spec.partition)
        .backoff(Backoff::tracked(
            &cfg.backoff,
            &metrics.kafka_outage,
            "alert consumer",
        ))
        .out_of_range(OutOfRange::Earliest {
            loss: "alerts in between may be missed",
        });
    let Some(mut reader) = reader.start(start, &cancel).await.map_err(|e| err(&spec, e))? else {
        return Ok(());
    };
    tracing::info!(
        topic = spec.topic,
        partition = spec.partition,
        next_offset = reader.next_offset(),
        "alert consumer started"
    );
    // Cancellation ends the read at once: what was fetched but not committed is read again
    // next time.
    while let Some(read) = reader.read().await.map_err(|e| err(&spec, e))? {
        let batch = match read {
            Read::Records(batch) => batch,
            Read::Unreadable { offset, limit } => {
                // Skipped: the next batch's next_offset commits past it.
                tracing::error!(
                    topic = spec.topic,
                    partition = spec.partition,
                    offset,
                    limit,
                    "alert-topic record too large to fetch; skipped"
                );
                continue;
            }
        };
        if batch.records.is_empty() {
            continue;
        }
        let fetched = Fetched {
            source: spec.source,
            topic: spec.topic.clone(),
            partition: spec.partition,
            records: batch
                .records
                .into_iter()
                .map(|r| (r.offset, r.record.value.unwrap_or_default()))
                .collect(),
            next_offset: batch.next_offset,
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            sent = tx.send(fetched) => if sent.is_err() { break },
        }
    }
    tracing::info!(
        topic = spec.topic,
        partition = spec.partition,
        next_offset = reader.next_offset(),
        "alert consumer stopped"
    );
    Ok(())
}
