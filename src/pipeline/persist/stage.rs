//! The persist stage: gathers detected batches until `batch_max_records` or `flush_interval`,
//! then writes them in one transaction ([`super::writer`]) and hands what committed to publish.
//!
//! ```text
//!  DetectedBatch ─► gather ─► BEGIN ─► records (split on refusal) ─► windows ─► offsets ─► COMMIT ─► publish
//!                                          │ refused records                       ▲
//!                                          └──► raw_prices_dlq (acknowledged) ─────┘ before
//! ```
//!
//! What a failed write means is decided by its SQLSTATE ([`crate::store::sqlstate`]):
//!
//! - **The database refused a value** (classes 22, 23, 54): the records are split until each
//!   refused one stands alone ([`super::split`]); those go to the DLQ with the database's
//!   message, and the rest commit with their offsets in the same transaction. The alerts a
//!   refused record raised are dropped with it, and a window it counted in is recomputed from
//!   `price_history` (which lacks it) when it closes, so no stored row counts a refused record.
//! - **The database was unavailable** (a lost connection, 40001, 40P01, 57P01, timeouts…) or
//!   anything else: the same batch is retried with the Postgres backoff, holding it: while
//!   Postgres is down this stage waits, the channels before it fill, and ingest stops fetching —
//!   memory stays bounded by the channel capacities. One WARN when the retries start, one INFO
//!   when a write succeeds again. Past the deadline the stage fails and the supervisor restarts
//!   the engine from the stored offsets.
//! - **A lost answer to COMMIT** may hide a commit that happened: the retry first reads
//!   `kafka_offsets`, and a batch whose offsets are stored is done.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use deadpool_postgres::Pool;
use rskafka::client::Client;
use rskafka::client::partition::PartitionClient;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::split::Refused;
use super::{split, windows};
use crate::backoff::{Backoff, Verdict};
use crate::config::{Config, KafkaConfig, WindowsConfig};
use crate::kafka::dlq::{Dlq, DlqRecord};
use crate::kafka::{self, Fetch, KafkaError};
use crate::metrics::{Metrics, channel};
use crate::model::limits::MAX_VALUE_BYTES;
use crate::model::window::{WindowKey, WindowRow};
use crate::pipeline::messages::{CommittedBatch, DetectedBatch, Processed};
use crate::store::{ErrorClass, StoreError};

#[derive(Debug, Default)]
struct Pending {
    batch: CommittedBatch,
    offsets: BTreeMap<i32, i64>,
    windows: Vec<WindowRow>,
    late_windows: BTreeMap<WindowKey, i32>,
    watermark: Option<i64>,
    /// A COMMIT of this batch failed without an answer: it may have committed.
    maybe_committed: bool,
}

impl Pending {
    fn add(&mut self, d: DetectedBatch) {
        self.batch.records.extend(d.records);
        self.batch.alerts.extend(d.alerts);
        if let Some((partition, next)) = d.offset {
            let o = self.offsets.entry(partition).or_insert(next);
            *o = (*o).max(next);
        }
        self.windows.extend(d.windows);
        for (k, n) in d.late_windows {
            *self.late_windows.entry(k).or_default() += n;
        }
        self.watermark = self.watermark.max(d.watermark);
    }

    fn is_empty(&self) -> bool {
        self.offsets.is_empty() && self.windows.is_empty() && self.late_windows.is_empty()
    }

    /// Take the refused records (and the alerts they raised) out of the batch, marking the
    /// windows they counted in.
    fn take_refused(&mut self, refused: Vec<Refused>, cfg: &WindowsConfig, tainted: &mut HashSet<WindowKey>) {
        let indices: HashSet<usize> = refused.into_iter().map(|r| r.index).collect();
        let mut taken = Vec::with_capacity(indices.len());
        let mut kept = Vec::with_capacity(self.batch.records.len());
        for (i, p) in std::mem::take(&mut self.batch.records).into_iter().enumerate() {
            if indices.contains(&i) {
                taken.push(p);
            } else {
                kept.push(p);
            }
        }
        self.batch.records = kept;
        let sources: BTreeSet<(i32, i64)> = taken
            .iter()
            .map(|p| (p.record.partition, p.record.offset))
            .collect();
        self.batch
            .alerts
            .retain(|a| !sources.contains(&(a.source_partition, a.source_offset)));
        if cfg.enabled {
            for p in &taken {
                let e = &p.record.event;
                let ts = e.timestamp.timestamp_millis();
                for width in cfg.widths_ms() {
                    tainted.insert(WindowKey {
                        event_id: e.event_id().to_string(),
                        source: e.source().to_string(),
                        width_ms: width,
                        start_ms: ts.div_euclid(width).saturating_mul(width),
                    });
                }
            }
        }
    }

    /// Closed windows that counted a refused record are recomputed from `price_history`
    /// instead of written as detect saw them.
    fn recompute_tainted(&mut self, tainted: &mut HashSet<WindowKey>) {
        if tainted.is_empty() {
            return;
        }
        let (redo, keep): (Vec<WindowRow>, Vec<WindowRow>) = std::mem::take(&mut self.windows)
            .into_iter()
            .partition(|w| tainted.contains(&w.key));
        self.windows = keep;
        for w in redo {
            tainted.remove(&w.key);
            *self.late_windows.entry(w.key).or_default() += w.late_records;
        }
    }
}

/// Where the persist stage sends the records the database refuses: the ingest DLQ, with the
/// original key and value read back from raw_prices, so a refused record looks like any other
/// bad one (headers `error`, `source_topic`, `source_partition`, `source_offset`).
#[derive(Debug, Clone)]
pub struct DeadLetters {
    dlq: Arc<Dlq>,
    kafka: Arc<Client>,
    cfg: KafkaConfig,
}

impl DeadLetters {
    pub fn new(dlq: Arc<Dlq>, kafka: Arc<Client>, cfg: &KafkaConfig) -> Self {
        Self {
            dlq,
            kafka,
            cfg: cfg.clone(),
        }
    }

    /// Produce the refused records to the DLQ; `Ok` once the broker acknowledged them.
    async fn send(&self, refused: &[(&Processed, &str)]) -> Result<(), KafkaError> {
        let mut clients: HashMap<i32, PartitionClient> = HashMap::new();
        let mut records = Vec::with_capacity(refused.len());
        for &(p, reason) in refused {
            let (partition, offset) = (p.record.partition, p.record.offset);
            let original = self.original(&mut clients, partition, offset).await;
            // Read back failed (the record is gone): the event as ConScope read it.
            let (key, value, timestamp) = match original {
                Some(r) => (r.key, r.value, r.timestamp),
                None => (
                    Some(p.listing_key.as_bytes().to_vec()),
                    serde_json::to_vec(&*p.record.event).ok(),
                    p.record.kafka_ts,
                ),
            };
            records.push(DlqRecord {
                key,
                value,
                error: reason.to_string(),
                source_partition: partition,
                source_offset: offset,
                timestamp,
            });
        }
        self.dlq.send(records).await
    }

    /// The record at `offset` of raw_prices `partition`, as produced.
    async fn original(
        &self,
        clients: &mut HashMap<i32, PartitionClient>,
        partition: i32,
        offset: i64,
    ) -> Option<rskafka::record::Record> {
        let timeout = self.cfg.request_timeout;
        let pc = match clients.entry(partition) {
            Entry::Occupied(pc) => pc.into_mut(),
            Entry::Vacant(slot) => {
                let topic = &self.cfg.topics.raw_prices.name;
                let pc = kafka::partition_client(&self.kafka, topic, partition, timeout)
                    .await
                    .ok()?;
                slot.insert(pc)
            }
        };
        // A record that parsed is at most MAX_VALUE_BYTES: one fetch of that much holds it.
        let max_bytes = self.cfg.fetch_max_bytes.max(2 * MAX_VALUE_BYTES as i32);
        match kafka::fetch(pc, offset, max_bytes, self.cfg.fetch_max_wait_ms, timeout).await {
            Ok(Fetch::Records(records, _)) => {
                records.into_iter().find(|r| r.offset == offset).map(|r| r.record)
            }
            _ => None,
        }
    }
}

pub async fn run(
    pool: Pool,
    cfg: Arc<Config>,
    mut rx: mpsc::Receiver<DetectedBatch>,
    tx: mpsc::Sender<CommittedBatch>,
    metrics: Arc<Metrics>,
    dead: DeadLetters,
) -> Result<(), StoreError> {
    let max = cfg.pipeline.batch_max_records;
    let mut stage = Stage {
        pool,
        cfg,
        metrics,
        dead,
        tainted: HashSet::new(),
    };
    let mut pending = Pending::default();
    let mut deadline: Option<Instant> = None;
    loop {
        // The timer first: a batch that is due is written before more is gathered. (Disabled
        // while nothing is pending; the expression is still evaluated, so it needs some instant.)
        let next = tokio::select! {
            biased;
            () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => None,
            d = rx.recv() => match d {
                Some(d) => Some(d),
                None => break,
            },
        };
        if let Some(d) = next {
            pending.add(d);
            // The batch's clock starts with its first record, not with the wait for it.
            deadline.get_or_insert_with(|| Instant::now() + stage.cfg.pipeline.flush_interval);
            if pending.batch.records.len() < max && pending.windows.is_empty() {
                continue;
            }
        }
        let committed = stage.flush(std::mem::take(&mut pending)).await?;
        deadline = None;
        if tx.send(committed).await.is_err() {
            // Publish stopped and reports its own error; what is committed is republished at restart.
            return Ok(());
        }
        stage.metrics.record_channel(channel::PERSIST_TO_PUBLISH, &tx);
    }
    if !pending.is_empty() {
        let committed = stage.flush(pending).await?;
        let _ = tx.send(committed).await;
    }
    tracing::info!("persist drained and stopped");
    Ok(())
}

/// What the persist stage keeps from one batch to the next.
struct Stage {
    pool: Pool,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    dead: DeadLetters,
    /// Windows still open that counted a refused record (see [`Pending::recompute_tainted`]).
    tainted: HashSet<WindowKey>,
}

impl Stage {
    async fn flush(&mut self, mut pending: Pending) -> Result<CommittedBatch, StoreError> {
        // An unavailable database is an outage of PostgreSQL, shared with every other stage
        // that waits for it (one WARN when it starts and ends, readiness, outage metrics); any
        // other failure is this stage's own, logged once when it starts and once at the end.
        let mut backoff = Backoff::tracked(
            &self.cfg.postgres.backoff,
            &self.metrics.postgres_outage,
            "persist",
        );
        loop {
            let Err(e) = self.write_once(&mut pending).await else {
                backoff.succeeded("batch write");
                break;
            };
            self.metrics.counters.persist_errors.inc();
            self.metrics
                .set_last_error(format!("persist: {}", crate::logging::chain(&e)));
            let verdict = match e.class() {
                ErrorClass::Transient => Verdict::Outage,
                _ => Verdict::Retry,
            };
            if !backoff.wait_after("batch write", verdict, &e).await {
                return Err(e);
            }
        }
        let now = chrono::Utc::now();
        let metrics = &self.metrics;
        metrics.record_latencies(
            pending
                .batch
                .records
                .iter()
                .map(|p| (now - p.record.kafka_ts).num_microseconds().unwrap_or(0).max(0) as u64),
        );
        let c = &metrics.counters;
        c.persist_batches.inc();
        c.persist_records.inc_by(pending.batch.records.len() as u64);
        for (p, n) in &pending.offsets {
            metrics.partition(*p).committed.fetch_max(*n, Relaxed);
        }
        pending.batch.offsets = pending.offsets.into_iter().collect();
        Ok(pending.batch)
    }

    /// One try at writing `pending`. Records the database refuses are taken out of it (and are
    /// in the DLQ) even when the try fails later, so a retry writes only the rest.
    async fn write_once(&mut self, pending: &mut Pending) -> Result<(), StoreError> {
        let cfg = &*self.cfg;
        let topic = &cfg.kafka.topics.raw_prices.name;
        let mut client = crate::store::client(&self.pool, &cfg.postgres).await?;
        if pending.maybe_committed {
            if offsets_stored(&client, topic, &pending.offsets).await? {
                tracing::info!(offsets = ?pending.offsets, "the batch's offsets are stored: its unanswered COMMIT had succeeded");
                return Ok(());
            }
            pending.maybe_committed = false;
        }
        let mut tx = client.transaction().await.map_err(StoreError::query("begin"))?;
        let refused = split::write_records(&mut tx, &pending.batch.records, &pending.batch.alerts).await?;
        if !refused.is_empty() {
            let records = &pending.batch.records;
            let rejected: Vec<(&Processed, &str)> = refused
                .iter()
                .map(|r| (&records[r.index], r.reason.as_str()))
                .collect();
            tracing::warn!(
                records = rejected.len(),
                first_partition = rejected[0].0.record.partition,
                first_offset = rejected[0].0.record.offset,
                reason = rejected[0].1,
                "PostgreSQL refused records of a batch; sending them to the DLQ, committing the rest"
            );
            // Acknowledged before the offsets that skip them commit: a crash can repeat a DLQ
            // record, never lose one. Only then do they leave the batch, so a failed send
            // leaves them in it for the retry.
            self.dead
                .send(&rejected)
                .await
                .map_err(|e| StoreError::Dlq(Box::new(e)))?;
            pending.take_refused(refused, &cfg.windows, &mut self.tainted);
        }
        pending.recompute_tainted(&mut self.tainted);
        // Windows closed by these records commit with them (and with their offsets).
        let instance = cfg.instance as i32;
        for (key, reason) in split::write_windows(&mut tx, instance, &pending.windows).await? {
            tracing::warn!(
                event_id = key.event_id,
                source = key.source,
                width_ms = key.width_ms,
                start_ms = key.start_ms,
                reason,
                "PostgreSQL refused a window row; it is not stored"
            );
        }
        if !pending.late_windows.is_empty() {
            let late: Vec<(WindowKey, i32)> = pending
                .late_windows
                .iter()
                .map(|(k, n)| (k.clone(), *n))
                .collect();
            windows::recompute(&tx, instance, &cfg.owned_partitions(), &late).await?;
        }
        if let Some(wm) = pending.watermark {
            windows::store_watermark(&tx, instance, wm).await?;
        }
        crate::store::offsets::store_offsets(
            &tx,
            crate::store::offsets::ENGINE_CONSUMER,
            topic,
            &pending.offsets,
        )
        .await?;
        if let Err(e) = tx.commit().await {
            // The server's error answer says it did not commit; no answer does not say it.
            pending.maybe_committed = e.as_db_error().is_none();
            return Err(StoreError::query("commit")(e));
        }
        Ok(())
    }
}

/// Whether `kafka_offsets` already holds `offsets` (or beyond) for every partition: a batch
/// whose COMMIT went unanswered was committed then.
pub async fn offsets_stored(
    client: &tokio_postgres::Client,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<bool, StoreError> {
    if offsets.is_empty() {
        return Ok(false);
    }
    let stored = crate::store::offsets::load(client, crate::store::offsets::ENGINE_CONSUMER, topic).await?;
    Ok(offsets
        .iter()
        .all(|(p, next)| stored.get(p).is_some_and(|(n, _)| n >= next)))
}
