//! One run of the engine: partition counts from the broker, warm start, recovery of
//! unpublished output, then the four stages joined by bounded channels. Any stage failing tears
//! the whole run down; the supervisor then starts a fresh run, which reloads the cache and
//! offsets from Postgres — so a restart is always from committed state, never from
//! half-processed memory.
//!
//! Each topic's partition count is the broker's, read at start, not `config.toml`'s: the
//! instance owns raw_prices partitions `p % instances == instance` of what the broker has.
//! Every `kafka.partition_poll_interval` the counts are read again; when they changed (partitions
//! were added), ingest stops, the later stages drain and commit, and the engine starts over
//! with the new counts — readers for the new partitions start at their earliest offset. Stored
//! offsets for partitions the broker no longer has stop the engine with a clear error.
//!
//! Start-up steps wait out a broker or Postgres outage like the stages do (no deadline by
//! default), reporting it to the shared outage.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::backoff::{Backoff, Verdict};
use crate::config::Config;
use crate::kafka::dlq::Dlq;
use crate::kafka::{self, KafkaError, topics};
use crate::metrics::channel;
use crate::pipeline::detect::Rules;
use crate::pipeline::detect::stage::{self as detect, Detector};
use crate::pipeline::detect::windows::Windows;
use crate::pipeline::ingest::IngestError;
use crate::pipeline::ingest::reader::{self, ReaderContext};
use crate::pipeline::persist;
use crate::pipeline::publish::{self, PublishError, Publisher};
use crate::store::offsets::ENGINE_CONSUMER;
use crate::store::{self, StoreError, offsets, warm};
use crate::tasks::{Failure, TaskGroup};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("warm start")]
    WarmStart(#[source] StoreError),
    #[error("connecting output topics")]
    Connect(#[from] KafkaError),
    #[error("ingest of partition {partition}")]
    Ingest { partition: i32, source: IngestError },
    #[error("persist")]
    Persist(#[source] StoreError),
    #[error("publish")]
    Publish(#[from] PublishError),
    #[error("engine stage `{0}` panicked")]
    Panicked(String),
    #[error(
        "topic {topic} is not on the broker any more (deleted?); `conscope topics create` makes it again"
    )]
    TopicMissing { topic: String },
    #[error(
        "kafka_offsets holds offsets of {topic} partitions {stored:?}, but the broker has only {broker} \
         partition(s): the topic was recreated with fewer partitions. Restore its partitions, or delete \
         those kafka_offsets rows to accept that their records are gone"
    )]
    PartitionsGone {
        topic: String,
        stored: Vec<i32>,
        broker: i32,
    },
}

/// Why one pass of [`run_with_counts`] ended without an error.
enum Ended {
    /// Shutdown: drained and committed.
    Stopped,
    /// The broker's partition counts changed: drained; start again with the new ones.
    PartitionsChanged,
}

/// Partition counts of the topics the engine reads and writes, as the broker has them.
type Counts = [i32; 3];

/// Run the engine until `cancel` fires (then drain and commit) or a stage fails.
pub async fn run(ctx: App, cancel: CancellationToken) -> Result<(), EngineError> {
    loop {
        let Some(counts) = broker_counts(&ctx, &cancel).await? else {
            return Ok(());
        };
        match run_with_counts(&ctx, counts, &cancel).await? {
            Ended::Stopped => return Ok(()),
            Ended::PartitionsChanged => continue,
        }
    }
}

/// Retry `attempt` with `backoff` until it succeeds; `Ok(None)` when `cancel` fires first,
/// `Err` once the backoff's deadline (none by default) has passed.
async fn until_ok<T, E, Fut>(
    backoff: &mut Backoff,
    cancel: &CancellationToken,
    what: &'static str,
    attempt: impl FnMut() -> Fut,
) -> Result<Option<T>, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    backoff
        .retry_until_cancelled(cancel, what, Verdict::outage, attempt)
        .await
}

fn kafka_backoff(ctx: &App) -> Backoff {
    Backoff::tracked(&ctx.cfg.kafka.backoff, &ctx.metrics.kafka_outage, "engine")
}

fn postgres_backoff(ctx: &App) -> Backoff {
    Backoff::tracked(&ctx.cfg.postgres.backoff, &ctx.metrics.postgres_outage, "engine")
}

/// The broker's partition counts of raw_prices, processed_prices and price_alerts.
async fn broker_counts(ctx: &App, cancel: &CancellationToken) -> Result<Option<Counts>, EngineError> {
    let listed = until_ok(&mut kafka_backoff(ctx), cancel, "listing topics", || {
        topics::list(&ctx.kafka, &ctx.cfg.kafka)
    })
    .await?;
    let Some(listed) = listed else { return Ok(None) };
    counts_of(&ctx.cfg, &listed)
        .map(Some)
        .map_err(|topic| EngineError::TopicMissing { topic })
}

/// The counts of the engine's topics in `listed`; `Err` names a topic the broker lacks.
fn counts_of(cfg: &Config, listed: &BTreeMap<String, i32>) -> Result<Counts, String> {
    let t = &cfg.kafka.topics;
    let mut counts = [0; 3];
    for (slot, topic) in counts
        .iter_mut()
        .zip([&t.raw_prices, &t.processed_prices, &t.price_alerts])
    {
        *slot = *listed.get(&topic.name).ok_or_else(|| topic.name.clone())?;
    }
    Ok(counts)
}

/// The configuration with the broker's partition counts in place of the file's.
fn with_counts(cfg: &Config, counts: Counts) -> Config {
    let mut cfg = cfg.clone();
    let t = &mut cfg.kafka.topics;
    [
        t.raw_prices.partitions,
        t.processed_prices.partitions,
        t.price_alerts.partitions,
    ] = counts;
    cfg
}

/// Cache, stored offsets and open windows, from committed state only.
async fn warm_start(ctx: &App, cfg: &Config) -> Result<(BTreeMap<i32, (i64, i64)>, Windows), StoreError> {
    let topic = &cfg.kafka.topics.raw_prices.name;
    ctx.cache.clear();
    let client = store::client(&ctx.pool, &cfg.postgres).await?;
    let listings = warm::listing_states(&client, |key, state| ctx.cache.load(key, state)).await?;
    let stored = offsets::load(&client, ENGINE_CONSUMER, topic).await?;
    tracing::info!(
        listings,
        partitions = stored.len(),
        "warm start: price cache loaded"
    );
    let (windows, rows) = crate::pipeline::detect::windows::resume(
        &client,
        &cfg.windows,
        cfg.instance as i32,
        &cfg.owned_partitions(),
    )
    .await?;
    if windows.enabled() {
        tracing::info!(
            rows,
            open = windows.open_windows(),
            watermark = ?windows.watermark(),
            "warm start: open windows rebuilt"
        );
    }
    Ok((stored, windows))
}

async fn run_with_counts(
    ctx: &App,
    counts: Counts,
    cancel: &CancellationToken,
) -> Result<Ended, EngineError> {
    let cfg = Arc::new(with_counts(&ctx.cfg, counts));
    let topic = cfg.kafka.topics.raw_prices.name.clone();
    let configured = ctx.cfg.kafka.topics.raw_prices.partitions;
    if counts[0] != configured {
        tracing::info!(
            topic,
            broker = counts[0],
            configured,
            "raw_prices partition count taken from the broker, not config.toml"
        );
    }

    let warm = until_ok(&mut postgres_backoff(ctx), cancel, "warm start", || {
        warm_start(ctx, &cfg)
    })
    .await
    .map_err(EngineError::WarmStart)?;
    let Some((stored, windows)) = warm else {
        return Ok(Ended::Stopped);
    };
    let gone: Vec<i32> = stored.keys().copied().filter(|p| *p >= counts[0]).collect();
    if !gone.is_empty() {
        return Err(EngineError::PartitionsGone {
            topic,
            stored: gone,
            broker: counts[0],
        });
    }

    // The publisher has a client of its own: its produce requests and metadata never queue
    // behind the partition readers' fetches (docs/benchmarks.md, "Ingest speed").
    let connect = || async {
        let client = kafka::connect(&cfg.kafka).await?;
        Publisher::connect(&client, cfg.clone(), ctx.metrics.clone()).await
    };
    let Some(publisher) = until_ok(
        &mut kafka_backoff(ctx),
        cancel,
        "connecting output topics",
        connect,
    )
    .await?
    else {
        return Ok(Ended::Stopped);
    };
    // Re-read the marks on each try: a failed try may have moved some.
    let recover = || async {
        let marks = stored_offsets(&ctx.pool, &cfg).await?;
        publish::recover(&publisher, &ctx.pool, &marks).await
    };
    if until_ok(
        &mut postgres_backoff(ctx),
        cancel,
        "recovering unpublished output",
        recover,
    )
    .await?
    .is_none()
    {
        return Ok(Ended::Stopped);
    }
    let dlq_topic = &cfg.kafka.topics.dlq.name;
    let timeout = cfg.kafka.request_timeout;
    let dlq_client = || kafka::partition_client(&ctx.kafka, dlq_topic, 0, timeout);
    let Some(dlq_client) =
        until_ok(&mut kafka_backoff(ctx), cancel, "connecting the DLQ", dlq_client).await?
    else {
        return Ok(Ended::Stopped);
    };
    let dlq = Arc::new(Dlq::new(dlq_client, &cfg.kafka, ctx.metrics.clone()));

    let p = &cfg.pipeline;
    let (ingest_tx, ingest_rx) = mpsc::channel(p.ingest_channel_capacity);
    let (detect_tx, detect_rx) = mpsc::channel(p.persist_channel_capacity);
    let (persist_tx, persist_rx) = mpsc::channel(p.publish_channel_capacity);
    // Each channel's fill is reported from the start, not only once its sender first sends.
    ctx.metrics.record_channel(channel::INGEST_TO_DETECT, &ingest_tx);
    ctx.metrics.record_channel(channel::DETECT_TO_PERSIST, &detect_tx);
    ctx.metrics
        .record_channel(channel::PERSIST_TO_PUBLISH, &persist_tx);

    // Ingest stops on the group's token: cancelling it starts the drain; later stages end when
    // their input channel closes, after flushing. A failing stage aborts the others instead
    // (below): nothing uncommitted is worth keeping.
    let stop_ingest = cancel.child_token();
    let mut stages: TaskGroup<EngineError> = TaskGroup::new("engine", stop_ingest.clone());
    let owned = cfg.owned_partitions();
    tracing::info!(
        topic,
        partitions = counts[0],
        owned = ?owned,
        instance = cfg.instance,
        instances = cfg.instances,
        "engine starting"
    );
    for partition in owned {
        let rctx = ReaderContext {
            client: ctx.kafka.clone(),
            cfg: cfg.kafka.clone(),
            metrics: ctx.metrics.clone(),
            dlq: dlq.clone(),
            tx: ingest_tx.clone(),
            max_future_skew: cfg.ingest.max_future_skew,
        };
        let start = stored.get(&partition).map(|(next, _)| *next);
        let token = stop_ingest.clone();
        stages.spawn(format!("ingest {partition}"), async move {
            reader::run_partition(rctx, partition, start, token)
                .await
                .map_err(|source| EngineError::Ingest { partition, source })
        });
    }
    // Held until ingest stops, so detect runs on even while this instance owns no partition.
    let mut ingest_tx = Some(ingest_tx);
    let detector = Detector::new(ctx.cache.clone(), Rules::from_config(&cfg.detect));
    let metrics = ctx.metrics.clone();
    stages.spawn("detect", async move {
        detect::run(detector, windows, ingest_rx, detect_tx, metrics).await;
        Ok(())
    });
    let (pool, pcfg, metrics) = (ctx.pool.clone(), cfg.clone(), ctx.metrics.clone());
    let dead = persist::DeadLetters::new(dlq.clone(), ctx.kafka.clone(), &cfg.kafka);
    stages.spawn("persist", async move {
        persist::run(pool, pcfg, detect_rx, persist_tx, metrics, dead)
            .await
            .map_err(EngineError::Persist)
    });
    let pool = ctx.pool.clone();
    stages.spawn("publish", async move {
        Ok(publish::run(publisher, pool, persist_rx).await?)
    });

    let every = cfg.kafka.partition_poll_interval;
    let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ended = Ended::Stopped;
    loop {
        // Stopping first (it starts the drain), then the stages' ends, then the poll.
        let joined = tokio::select! {
            biased;
            () = stop_ingest.cancelled(), if ingest_tx.is_some() => {
                ingest_tx = None;
                continue;
            }
            joined = stages.join_next() => joined,
            _ = poll.tick(), if ingest_tx.is_some() => {
                // A metadata request can take up to request_timeout: shutdown does not wait for it.
                let changed = tokio::select! {
                    biased;
                    () = stop_ingest.cancelled() => false,
                    changed = partitions_changed(ctx, &cfg, counts) => changed,
                };
                if changed {
                    ended = Ended::PartitionsChanged;
                    stop_ingest.cancel();
                }
                continue;
            }
        };
        let Some(joined) = joined else { break };
        if let Err(failure) = joined {
            // Nothing uncommitted is worth keeping: the next run restarts from committed state.
            stages.abort_all();
            return Err(match failure {
                Failure::Failed { error, .. } => error,
                Failure::Panicked { task, .. } => EngineError::Panicked(task),
            });
        }
    }
    if cancel.is_cancelled() {
        ended = Ended::Stopped;
    }
    Ok(ended)
}

/// Whether the broker's partition counts differ from `counts` now. A broker that does not
/// answer changes nothing (the stages report the outage).
async fn partitions_changed(ctx: &App, cfg: &Config, counts: Counts) -> bool {
    let listed = match topics::list(&ctx.kafka, &cfg.kafka).await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read partition counts; trying again later");
            return false;
        }
    };
    match counts_of(cfg, &listed) {
        Ok(now) if now == counts => false,
        Ok(now) => {
            tracing::info!(
                before = ?counts,
                now = ?now,
                "partition counts (raw_prices, processed_prices, price_alerts) changed on the broker; \
                 draining and starting over with them"
            );
            true
        }
        // A topic gone: the fresh start reports it.
        Err(_) => true,
    }
}

/// Offsets stored for the engine, for tests and tools.
pub async fn stored_offsets(pool: &Pool, cfg: &Config) -> Result<BTreeMap<i32, (i64, i64)>, StoreError> {
    let client = store::client(pool, &cfg.postgres).await?;
    offsets::load(&client, ENGINE_CONSUMER, &cfg.kafka.topics.raw_prices.name).await
}
