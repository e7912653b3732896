//! The persist stage: gathers detected batches until `batch_max_records` or `flush_interval`,
//! then writes them in one transaction ([`super::writer`]) and hands what committed to publish.
//!
//! A failed write is retried with the Postgres backoff, holding the same batch: while Postgres
//! is down this stage waits, the channels before it fill, and ingest stops fetching — memory
//! stays bounded by the channel capacities. Past the deadline the stage fails and the
//! supervisor restarts the engine from the stored offsets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{StoreError, windows, writer};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::detect::windows::{WindowKey, WindowRow};
use crate::metrics::Metrics;
use crate::runtime::messages::{CommittedBatch, DetectedBatch};

#[derive(Debug, Default)]
struct Pending {
    batch: CommittedBatch,
    offsets: BTreeMap<i32, i64>,
    windows: Vec<WindowRow>,
    late_windows: BTreeMap<WindowKey, i32>,
    watermark: Option<i64>,
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
}

pub async fn run(
    pool: Pool,
    cfg: Arc<Config>,
    mut rx: mpsc::Receiver<DetectedBatch>,
    tx: mpsc::Sender<CommittedBatch>,
    metrics: Arc<Metrics>,
) -> Result<(), StoreError> {
    let max = cfg.pipeline.batch_max_records;
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
            deadline.get_or_insert_with(|| Instant::now() + cfg.pipeline.flush_interval);
            if pending.batch.records.len() < max && pending.windows.is_empty() {
                continue;
            }
        }
        let committed = flush(&pool, &cfg, std::mem::take(&mut pending), &metrics).await?;
        deadline = None;
        if tx.send(committed).await.is_err() {
            // Publish stopped and reports its own error; what is committed is republished at restart.
            return Ok(());
        }
    }
    if !pending.is_empty() {
        let committed = flush(&pool, &cfg, pending, &metrics).await?;
        let _ = tx.send(committed).await;
    }
    tracing::info!("persist drained and stopped");
    Ok(())
}

async fn flush(
    pool: &Pool,
    cfg: &Config,
    mut pending: Pending,
    metrics: &Metrics,
) -> Result<CommittedBatch, StoreError> {
    let topic = &cfg.kafka.topics.raw_prices.name;
    let mut backoff = Backoff::new(&cfg.postgres.backoff);
    loop {
        match write_once(pool, cfg, topic, &pending).await {
            Ok(()) => break,
            Err(e) => {
                metrics.counters.persist_errors.fetch_add(1, Relaxed);
                metrics.set_last_error(e.to_string());
                let Some(delay) = backoff.next_delay() else {
                    return Err(e);
                };
                tracing::warn!(error = %e, retry_in = ?delay, attempt = backoff.attempts(), "batch write failed, retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
    let now = chrono::Utc::now();
    metrics.record_latencies(
        pending
            .batch
            .records
            .iter()
            .map(|p| (now - p.record.kafka_ts).num_microseconds().unwrap_or(0).max(0) as u64),
    );
    let c = &metrics.counters;
    c.persist_batches.fetch_add(1, Relaxed);
    c.persist_records
        .fetch_add(pending.batch.records.len() as u64, Relaxed);
    for (p, n) in &pending.offsets {
        metrics.partition(*p).committed.fetch_max(*n, Relaxed);
    }
    pending.batch.offsets = pending.offsets.into_iter().collect();
    Ok(pending.batch)
}

async fn write_once(pool: &Pool, cfg: &Config, topic: &str, pending: &Pending) -> Result<(), StoreError> {
    let mut client = super::client(pool, &cfg.postgres).await?;
    let tx = client.transaction().await.map_err(StoreError::query("begin"))?;
    writer::write_batch(
        &tx,
        topic,
        &pending.batch.records,
        &pending.batch.alerts,
        &pending.offsets,
    )
    .await?;
    // Windows closed by these records commit with them (and with their offsets).
    let instance = cfg.instance as i32;
    windows::upsert(&tx, instance, &pending.windows).await?;
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
    tx.commit().await.map_err(StoreError::query("commit"))?;
    Ok(())
}
