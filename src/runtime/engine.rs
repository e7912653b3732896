//! One run of the engine: warm start, recovery of unpublished output, then the four stages
//! joined by bounded channels. Any stage failing tears the whole run down; the supervisor then
//! starts a fresh run, which reloads the cache and offsets from Postgres — so a restart is
//! always from committed state, never from half-processed memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use rskafka::client::Client;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::detect::stage::{self as detect, Detector};
use crate::detect::{PriceCache, Rules};
use crate::ingest::IngestError;
use crate::ingest::dlq::Dlq;
use crate::ingest::reader::{self, ReaderContext};
use crate::kafka::{self, KafkaError};
use crate::metrics::Metrics;
use crate::publish::{self, PublishError, Publisher};
use crate::store::writer::ENGINE_CONSUMER;
use crate::store::{self, StoreError, offsets, persist};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("warm start: {0}")]
    WarmStart(StoreError),
    #[error("connecting output topics: {0}")]
    Connect(#[from] KafkaError),
    #[error("ingest of partition {partition}: {source}")]
    Ingest { partition: i32, source: IngestError },
    #[error("persist: {0}")]
    Persist(StoreError),
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
    #[error("engine stage `{0}` panicked")]
    Panicked(String),
}

/// What every run of the engine shares.
#[derive(Debug, Clone)]
pub struct EngineContext {
    pub cfg: Arc<Config>,
    pub pool: Pool,
    pub kafka: Arc<Client>,
    pub metrics: Arc<Metrics>,
    pub cache: Arc<PriceCache>,
}

enum Stage {
    Ingest(i32, Result<(), IngestError>),
    Detect,
    Persist(Result<(), StoreError>),
    Publish(Result<(), PublishError>),
}

/// Run the engine until `cancel` fires (then drain and commit) or a stage fails.
pub async fn run(ctx: EngineContext, cancel: CancellationToken) -> Result<(), EngineError> {
    let cfg = ctx.cfg.clone();
    let topic = cfg.kafka.topics.raw_prices.name.clone();

    // Warm start from committed state only.
    ctx.cache.clear();
    let stored = {
        let client = store::client(&ctx.pool, &cfg.postgres)
            .await
            .map_err(EngineError::WarmStart)?;
        let listings = offsets::load_cache(&client, &ctx.cache)
            .await
            .map_err(EngineError::WarmStart)?;
        let stored = offsets::load(&client, ENGINE_CONSUMER, &topic)
            .await
            .map_err(EngineError::WarmStart)?;
        tracing::info!(
            listings,
            partitions = stored.len(),
            "warm start: price cache loaded"
        );
        stored
    };
    let windows = {
        let client = store::client(&ctx.pool, &cfg.postgres)
            .await
            .map_err(EngineError::WarmStart)?;
        let (windows, rows) = store::windows::resume(
            &client,
            &cfg.windows,
            cfg.instance as i32,
            &cfg.owned_partitions(),
        )
        .await
        .map_err(EngineError::WarmStart)?;
        if windows.enabled() {
            tracing::info!(
                rows,
                open = windows.open_windows(),
                watermark = ?windows.watermark(),
                "warm start: open windows rebuilt"
            );
        }
        windows
    };

    let publisher = Publisher::connect(&ctx.kafka, cfg.clone(), ctx.metrics.clone()).await?;
    publish::recover(&publisher, &ctx.pool, &stored).await?;
    let dlq_client = kafka::partition_client(
        &ctx.kafka,
        &cfg.kafka.topics.dlq.name,
        0,
        cfg.kafka.request_timeout,
    )
    .await?;
    let dlq = Arc::new(Dlq::new(dlq_client, &cfg.kafka, ctx.metrics.clone()));

    let p = &cfg.pipeline;
    let (ingest_tx, ingest_rx) = mpsc::channel(p.ingest_channel_capacity);
    let (detect_tx, detect_rx) = mpsc::channel(p.persist_channel_capacity);
    let (persist_tx, persist_rx) = mpsc::channel(p.publish_channel_capacity);

    let mut stages: JoinSet<Stage> = JoinSet::new();
    // Ingest has its own token: cancelling it starts the drain; later stages end when their
    // input channel closes, after flushing.
    let stop_ingest = cancel.child_token();
    for partition in cfg.owned_partitions() {
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
        stages.spawn(async move {
            Stage::Ingest(
                partition,
                reader::run_partition(rctx, partition, start, token).await,
            )
        });
    }
    drop(ingest_tx);
    let detector = Detector::new(ctx.cache.clone(), Rules::from_config(&cfg.detect));
    let metrics = ctx.metrics.clone();
    stages.spawn(async move {
        detect::run(detector, windows, ingest_rx, detect_tx, metrics).await;
        Stage::Detect
    });
    let (pool, pcfg, metrics) = (ctx.pool.clone(), cfg.clone(), ctx.metrics.clone());
    let dead = persist::DeadLetters::new(dlq.clone(), ctx.kafka.clone(), &cfg.kafka);
    stages.spawn(async move {
        Stage::Persist(persist::run(pool, pcfg, detect_rx, persist_tx, metrics, dead).await)
    });
    let pool = ctx.pool.clone();
    stages.spawn(async move { Stage::Publish(publish::run(publisher, pool, persist_rx).await) });

    while let Some(joined) = stages.join_next().await {
        let failure = match joined {
            Ok(Stage::Ingest(_, Ok(()))) | Ok(Stage::Detect) => None,
            Ok(Stage::Persist(Ok(()))) | Ok(Stage::Publish(Ok(()))) => None,
            Ok(Stage::Ingest(partition, Err(source))) => Some(EngineError::Ingest { partition, source }),
            Ok(Stage::Persist(Err(e))) => Some(EngineError::Persist(e)),
            Ok(Stage::Publish(Err(e))) => Some(EngineError::Publish(e)),
            Err(e) => Some(EngineError::Panicked(e.to_string())),
        };
        if let Some(error) = failure {
            // Nothing uncommitted is worth keeping: the next run restarts from committed state.
            stages.abort_all();
            return Err(error);
        }
    }
    Ok(())
}

/// Offsets stored for the engine, for tests and tools.
pub async fn stored_offsets(pool: &Pool, cfg: &Config) -> Result<BTreeMap<i32, (i64, i64)>, StoreError> {
    let client = store::client(pool, &cfg.postgres).await?;
    offsets::load(&client, ENGINE_CONSUMER, &cfg.kafka.topics.raw_prices.name).await
}
