//! The one partition reader, used by ingest (`raw_prices`) and by the alert task
//! (`price_alerts`, `processed_prices`). It owns the partition client and its reconnects, where
//! reading starts, every fetch (bounded by `kafka.request_timeout`), the retries, what happens
//! when the broker no longer has the offset to read, and cancellation. Its owner keeps what is
//! its own: what a record means, where it goes, and its metrics.
//!
//! ```text
//!  start: stored offset, or the earliest / latest one
//!    │
//!    ▼
//!  fetch(next, ≤ max_bytes, fetch_max_wait_ms) ── Kafka error: new partition client, retried
//!    │   ▲          │                              with the Backoff (Backoff::retry_until_cancelled)
//!    │   │          ├─ offset gone: OutOfRange policy (fail naming the key, or the earliest + ERROR)
//!    │   │          └─ only a record over max_bytes: fetch it alone with up to
//!    │   │             fetch_max_record_bytes, past that Read::Unreadable
//!    ▼   │
//!  Read::Records(Batch { records ≥ next, high_watermark, next_offset }) ──► the owner hands it on
//!        └── next = last offset + 1, once the owner asks for the next read
//! ```
//!
//! The position moves past a batch only when the next read is asked for: a batch its owner did
//! not hand on (shutdown during the send) is not behind [`PartitionReader::next_offset`], and it
//! is read again next time from the stored offsets.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, PartitionClient};
use rskafka::record::RecordAndOffset;
use tokio_util::sync::CancellationToken;

use super::{Fetch, KafkaError};
use crate::backoff::{Backoff, Verdict};
use crate::config::KafkaConfig;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(
        "stored offset {offset} of {topic}/{partition} is no longer on the broker (it has {earliest}..{latest}); \
         set {key} = \"earliest\" to continue from {earliest} and accept the possible loss"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
        earliest: i64,
        latest: i64,
        /// The setting that decides (named in the message).
        key: &'static str,
    },
}

/// Where reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The stored next offset.
    At(i64),
    Earliest,
    Latest,
}

/// What to do when the broker no longer has the offset to read: retention removed it, or the
/// topic was recreated and is now behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRange {
    /// Stop with [`ReadError::OffsetOutOfRange`], naming `key`.
    Fail { key: &'static str },
    /// An offset behind the broker's earliest continues from the earliest, logged at ERROR with
    /// what may be lost (`loss`); one ahead of the broker's latest stops as [`OutOfRange::Fail`].
    EarliestIfBehind { key: &'static str, loss: &'static str },
    /// Continue from the earliest offset, behind or ahead, logged at ERROR with `loss`.
    Earliest { loss: &'static str },
}

/// One fetch's records from the reader's position on.
#[derive(Debug)]
pub struct Batch {
    /// In offset order, none before the position (possibly none at all: nothing new arrived
    /// within `fetch_max_wait_ms`).
    pub records: Vec<RecordAndOffset>,
    pub high_watermark: i64,
    /// The offset after the last record (the position when there is none).
    pub next_offset: i64,
}

/// What one [`PartitionReader::read`] returns.
#[derive(Debug)]
pub enum Read {
    Records(Batch),
    /// The record at `offset` is larger than `limit` (`kafka.fetch_max_record_bytes`) and could
    /// not be fetched: the reader moves past it, its owner says where that is recorded.
    Unreadable {
        offset: i64,
        limit: i32,
    },
}

/// The retry loop of one call: the backoff it borrowed and the call's outcome (with the
/// partition client that worked).
type Retried<T> =
    Pin<Box<dyn Future<Output = (Backoff, Result<Option<(Arc<PartitionClient>, T)>, ReadError>)> + Send>>;

/// A counter the owner bumps (a failed Kafka call, a reset to the earliest offset).
type Hook = Arc<dyn Fn() + Send + Sync>;

/// The reader of one partition; see the module docs.
pub struct PartitionReader {
    what: &'static str,
    part: Partition,
    /// The partition client, `None` until connected and after a failed call.
    pc: Option<Arc<PartitionClient>>,
    /// `None` only while a retry runs (it owns the backoff meanwhile).
    backoff: Option<Backoff>,
    out_of_range: OutOfRange,
    on_failure: Option<Hook>,
    on_reset: Option<Hook>,
    next: i64,
    /// Where the position moves when the next read is asked for.
    advance_to: Option<i64>,
    max_wait_ms: i32,
    fetch_max_bytes: i32,
    max_record_bytes: i32,
    /// The current fetch limit: `fetch_max_bytes`, grown while a record is larger.
    max_bytes: i32,
    cancel: CancellationToken,
}

impl std::fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReader")
            .field("what", &self.what)
            .field("topic", &self.part.topic)
            .field("partition", &self.part.partition)
            .field("next", &self.next)
            .field("out_of_range", &self.out_of_range)
            .finish_non_exhaustive()
    }
}

impl PartitionReader {
    /// A reader of `topic`/`partition` for `what` (named in the retry log lines), with an
    /// untracked backoff from `kafka.backoff` and [`OutOfRange::Fail`] on
    /// `kafka.offset_out_of_range` until told otherwise.
    pub fn new(
        what: &'static str,
        client: Arc<Client>,
        cfg: &KafkaConfig,
        topic: &str,
        partition: i32,
    ) -> Self {
        Self {
            what,
            part: Partition {
                client,
                topic: topic.into(),
                partition,
                timeout: cfg.request_timeout,
            },
            pc: None,
            backoff: Some(Backoff::new(&cfg.backoff)),
            out_of_range: OutOfRange::Fail {
                key: "kafka.offset_out_of_range",
            },
            on_failure: None,
            on_reset: None,
            next: 0,
            advance_to: None,
            max_wait_ms: cfg.fetch_max_wait_ms,
            fetch_max_bytes: cfg.fetch_max_bytes,
            max_record_bytes: cfg.fetch_max_record_bytes,
            max_bytes: cfg.fetch_max_bytes,
            cancel: CancellationToken::new(),
        }
    }

    /// Retry with `backoff` (e.g. one tracked by `Metrics::kafka_outage`).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }

    pub fn out_of_range(mut self, policy: OutOfRange) -> Self {
        self.out_of_range = policy;
        self
    }

    /// Called on every failed Kafka call.
    pub fn on_failure(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_failure = Some(Arc::new(hook));
        self
    }

    /// Called when [`OutOfRange`] continued from the earliest offset.
    pub fn on_reset(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_reset = Some(Arc::new(hook));
        self
    }

    /// Connect and find where to start, retrying until it works; `Ok(None)` once `cancel`
    /// fires, which also ends every later [`PartitionReader::read`].
    pub async fn start(mut self, at: Start, cancel: &CancellationToken) -> Result<Option<Self>, ReadError> {
        self.cancel = cancel.clone();
        let start = self
            .retried(move |part, pc| async move {
                match at {
                    Start::At(n) => Ok(n),
                    Start::Earliest => Ok(part.offset_at(&pc, OffsetAt::Earliest).await?),
                    Start::Latest => Ok(part.offset_at(&pc, OffsetAt::Latest).await?),
                }
            })
            .await?;
        Ok(start.map(|next| Self { next, ..self }))
    }

    /// The next offset to read: the one after the last record of a batch handed out, once the
    /// next read was asked for.
    pub fn next_offset(&self) -> i64 {
        self.next
    }

    /// The next batch (waiting out Kafka failures); `Ok(None)` once cancelled. Stop a reader
    /// with its token, not by dropping this future: a read dropped half-way ends the reader.
    pub async fn read(&mut self) -> Result<Option<Read>, ReadError> {
        if let Some(next) = self.advance_to.take() {
            self.next = next;
        }
        loop {
            let Some((records, high_watermark)) = self.fetch().await? else {
                return Ok(None);
            };
            let next = self.next;
            let records: Vec<_> = records.into_iter().filter(|r| r.offset >= next).collect();
            if records.is_empty() && high_watermark > next {
                // Nothing came back although records exist: the next one is larger than the
                // limit (a broker need not return an oversized first record). Fetch it alone
                // with a larger limit; past the cap it is unreadable.
                if self.max_bytes < self.max_record_bytes {
                    self.max_bytes = self.max_bytes.saturating_mul(4).min(self.max_record_bytes);
                    continue;
                }
                self.advance_to = Some(next + 1);
                return Ok(Some(Read::Unreadable {
                    offset: next,
                    limit: self.max_bytes,
                }));
            }
            self.max_bytes = self.fetch_max_bytes;
            let next_offset = records.last().map_or(next, |r| r.offset + 1);
            self.advance_to = Some(next_offset);
            return Ok(Some(Read::Records(Batch {
                records,
                high_watermark,
                next_offset,
            })));
        }
    }

    /// One fetch from the position, following the out-of-range policy (which may move the
    /// position), retried until it works.
    async fn fetch(&mut self) -> Result<Option<(Vec<RecordAndOffset>, i64)>, ReadError> {
        let (next, max_bytes, max_wait_ms) = (self.next, self.max_bytes, self.max_wait_ms);
        let (policy, on_reset) = (self.out_of_range, self.on_reset.clone());
        let fetched = self
            .retried(move |part, pc| {
                let on_reset = on_reset.clone();
                async move {
                    let mut next = next;
                    loop {
                        match super::fetch(&pc, next, max_bytes, max_wait_ms, part.timeout).await? {
                            Fetch::Records(records, hw) => return Ok((records, hw, next)),
                            Fetch::OutOfRange => {
                                next = part.out_of_range(&pc, policy, next, on_reset.as_deref()).await?
                            }
                        }
                    }
                }
            })
            .await?;
        Ok(fetched.map(|(records, high_watermark, next)| {
            self.next = next;
            (records, high_watermark)
        }))
    }

    /// `call` with the partition client, through the one retry loop: the first attempt uses
    /// the client the reader has, every attempt after a failure a new one (a failed call may
    /// have left it on a dead connection).
    ///
    /// Each attempt's future, and the retry loop's, owns what it uses: an async closure
    /// borrowing the reader, passed to the generic retry loop, makes the spawned reader task's
    /// future not provably `Send` (rust-lang/rust#139475).
    async fn retried<T: Send + 'static, F>(
        &mut self,
        call: impl Fn(Partition, Arc<PartitionClient>) -> F + Clone + Send + 'static,
    ) -> Result<Option<T>, ReadError>
    where
        F: Future<Output = Result<T, ReadError>> + Send + 'static,
    {
        let mut pc = self.pc.take();
        let part = self.part.clone();
        let attempt = move || {
            let (part, pc, call) = (part.clone(), pc.take(), call.clone());
            async move {
                let pc = match pc {
                    Some(pc) => pc,
                    None => Arc::new(part.connect().await?),
                };
                let value = call(part, pc.clone()).await?;
                Ok((pc, value))
            }
        };
        let on_failure = self.on_failure.clone();
        let verdict = move |e: &ReadError| match e {
            ReadError::Kafka(_) => {
                if let Some(hook) = &on_failure {
                    hook();
                }
                Verdict::Outage
            }
            // A stored offset that must not be continued from: retrying cannot help.
            ReadError::OffsetOutOfRange { .. } => Verdict::Fail,
        };
        // The retry runs as a future of its own that owns the backoff for the while: only
        // then does the compiler see that it is `Send`.
        let mut backoff = self
            .backoff
            .take()
            .expect("a read runs to its end or ends the reader");
        let (cancel, what) = (self.cancel.clone(), self.what);
        let run: Retried<T> = Box::pin(async move {
            let done = backoff
                .retry_until_cancelled(&cancel, what, verdict, attempt)
                .await;
            (backoff, done)
        });
        let (backoff, done) = run.await;
        self.backoff = Some(backoff);
        Ok(done?.map(|(pc, value)| {
            self.pc = Some(pc);
            value
        }))
    }
}

/// The partition a reader reads, and how every call to it is bounded.
#[derive(Debug, Clone)]
struct Partition {
    client: Arc<Client>,
    topic: Arc<str>,
    partition: i32,
    timeout: Duration,
}

impl Partition {
    async fn connect(&self) -> Result<PartitionClient, KafkaError> {
        super::partition_client(&self.client, &self.topic, self.partition, self.timeout).await
    }

    async fn offset_at(&self, pc: &PartitionClient, at: OffsetAt) -> Result<i64, KafkaError> {
        match tokio::time::timeout(self.timeout, pc.get_offset(at)).await {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(source)) => Err(KafkaError::Partition {
                operation: "list offsets",
                topic: self.topic.to_string(),
                partition: self.partition,
                source: source.into(),
            }),
            Err(_) => Err(KafkaError::Timeout {
                operation: "list offsets",
                topic: self.topic.to_string(),
                partition: self.partition,
                timeout: self.timeout,
            }),
        }
    }

    /// The broker refused `next`: where to read from instead, by `policy`.
    async fn out_of_range(
        &self,
        pc: &PartitionClient,
        policy: OutOfRange,
        next: i64,
        on_reset: Option<&(dyn Fn() + Send + Sync)>,
    ) -> Result<i64, ReadError> {
        let earliest = self.offset_at(pc, OffsetAt::Earliest).await?;
        let latest = self.offset_at(pc, OffsetAt::Latest).await?;
        let loss = match decide(policy, next, earliest, latest) {
            Decision::Again => return Ok(next),
            Decision::Fail { key } => {
                return Err(ReadError::OffsetOutOfRange {
                    topic: self.topic.to_string(),
                    partition: self.partition,
                    offset: next,
                    earliest,
                    latest,
                    key,
                });
            }
            Decision::Earliest { loss } => loss,
        };
        if let Some(hook) = on_reset {
            hook();
        }
        tracing::error!(
            topic = &*self.topic,
            partition = self.partition,
            stored = next,
            earliest,
            latest,
            "stored offset is gone from the broker; continuing from the earliest offset: {loss}"
        );
        Ok(earliest)
    }
}

/// What an out-of-range answer for `next` leads to, given the broker's `earliest..=latest`.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// `next` is on the broker after all (e.g. the leader caught up meanwhile): fetch again.
    Again,
    /// Continue from the earliest offset, reporting `loss`.
    Earliest { loss: &'static str },
    /// Stop, naming the setting that decides.
    Fail { key: &'static str },
}

fn decide(policy: OutOfRange, next: i64, earliest: i64, latest: i64) -> Decision {
    if (earliest..=latest).contains(&next) {
        return Decision::Again;
    }
    match policy {
        OutOfRange::Fail { key } => Decision::Fail { key },
        OutOfRange::EarliestIfBehind { key, .. } if next > latest => Decision::Fail { key },
        OutOfRange::EarliestIfBehind { loss, .. } | OutOfRange::Earliest { loss } => {
            Decision::Earliest { loss }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "kafka.offset_out_of_range";
    const LOSS: &str = "POSSIBLE DATA LOSS";

    #[test]
    fn an_offset_still_on_the_broker_is_fetched_again_whatever_the_policy() {
        for policy in [
            OutOfRange::Fail { key: KEY },
            OutOfRange::EarliestIfBehind { key: KEY, loss: LOSS },
            OutOfRange::Earliest { loss: LOSS },
        ] {
            for next in [100, 150, 200] {
                assert_eq!(
                    decide(policy, next, 100, 200),
                    Decision::Again,
                    "{policy:?} {next}"
                );
            }
        }
    }

    #[test]
    fn fail_stops_on_an_offset_behind_or_ahead_naming_the_key() {
        let policy = OutOfRange::Fail { key: KEY };
        assert_eq!(decide(policy, 99, 100, 200), Decision::Fail { key: KEY });
        assert_eq!(decide(policy, 201, 100, 200), Decision::Fail { key: KEY });
    }

    #[test]
    fn earliest_if_behind_continues_from_a_trimmed_log_but_stops_on_a_recreated_topic() {
        let policy = OutOfRange::EarliestIfBehind { key: KEY, loss: LOSS };
        // Retention removed offsets 0..100: continue from 100, reporting the loss.
        assert_eq!(decide(policy, 5, 100, 200), Decision::Earliest { loss: LOSS });
        // The topic was recreated and is behind the stored offset: rows for those offsets
        // are already stored, so an operator decides.
        assert_eq!(decide(policy, 500, 0, 200), Decision::Fail { key: KEY });
    }

    #[test]
    fn earliest_continues_from_the_earliest_behind_or_ahead() {
        let policy = OutOfRange::Earliest { loss: LOSS };
        assert_eq!(decide(policy, 5, 100, 200), Decision::Earliest { loss: LOSS });
        assert_eq!(decide(policy, 500, 0, 200), Decision::Earliest { loss: LOSS });
    }

    #[test]
    fn the_out_of_range_error_names_the_offset_the_range_and_the_key() {
        let e = ReadError::OffsetOutOfRange {
            topic: "raw_prices".into(),
            partition: 3,
            offset: 5,
            earliest: 100,
            latest: 200,
            key: KEY,
        };
        assert_eq!(
            e.to_string(),
            "stored offset 5 of raw_prices/3 is no longer on the broker (it has 100..200); \
             set kafka.offset_out_of_range = \"earliest\" to continue from 100 and accept the possible loss"
        );
    }
}
