//! The runtime: starts ConScope's parts in one tokio runtime and wires the engine's stages.
//!
//! ```text
//!  sources (simulated feed, pollers) ──produce──► Kafka raw_prices (N partitions)
//!                                                        │
//!  ingest ×N (one per owned partition) ◄─────────────────┘ rskafka fetch from kafka_offsets
//!     │ bad records ──► raw_prices_dlq (acknowledged before their offset moves on)
//!     ▼ mpsc<IngestBatch>      cap pipeline.ingest_channel_capacity
//!  detect (PriceCache: DashMap, Rules)
//!     ▼ mpsc<DetectedBatch>    cap pipeline.persist_channel_capacity
//!  persist: ONE transaction per batch: events · COPY price_history · listing_state ·
//!           price_alerts (ON CONFLICT DO NOTHING) · kafka_offsets (GREATEST)
//!     ▼ mpsc<CommittedBatch>   cap pipeline.publish_channel_capacity
//!  publish ──► Kafka processed_prices, price_alerts ──► kafka_offsets.published_offset
//!
//!  metrics reporter ──► log line, system_metrics table and topic
//!  alert (when alert.enabled) ◄── price_alerts, processed_prices ──► Discord/Slack/webhooks
//!  web (web.listen) ──► dashboard, JSON API, /metrics, /health: reads Postgres, Metrics, PriceCache
//! ```
//!
//! Every channel is bounded: a slow stage makes the one before it wait, back to the fetch loop.
//! Shutdown (SIGINT/SIGTERM) cancels ingest; the later stages drain, commit and stop when their
//! input closes; the supervisor waits under `pipeline.shutdown_timeout`.

mod pollers;
pub mod report;
pub mod supervisor;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::kafka::{self, KafkaError, topics};
use crate::pipeline::engine;
use crate::sources;
use crate::store::{self, StoreError, migrate};
use crate::web;
use supervisor::{RestartPolicy, Supervisor, SupervisorError};

/// Why `conscope run` stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
}

/// Connect, migrate and make sure the topics exist: what `run` does before starting tasks.
pub async fn prepare(
    cfg: &Config,
) -> Result<(deadpool_postgres::Pool, Arc<rskafka::client::Client>), RunError> {
    let pool = store::pool(&cfg.postgres)?;
    {
        let mut client = store::client(&pool, &cfg.postgres).await?;
        let applied = migrate::apply(&mut client, migrate::MIGRATIONS).await?;
        tracing::info!(
            applied = applied.applied.len(),
            already = applied.already.len(),
            "schema up to date"
        );
    }
    let client = kafka::connect(&cfg.kafka).await?;
    for (topic, status) in topics::ensure(&client, &cfg.kafka).await? {
        tracing::debug!(topic, ?status, "topic ready");
    }
    Ok((pool, client))
}

/// Run everything until `shutdown` fires or a task spends its restart budget.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let cfg = Arc::new(cfg);
    let (pool, client) = prepare(&cfg).await?;
    let app = App::new(cfg.clone(), pool, client);
    let policy = RestartPolicy {
        budget: cfg.pipeline.restart_budget,
        window: cfg.pipeline.restart_window,
        backoff: RestartPolicy::BACKOFF,
    };
    let mut sup = Supervisor::new(shutdown.clone(), policy, app.metrics.clone());

    // Each task is a factory called at every (re)start with its own clone of the context.
    let a = app.clone();
    sup.spawn("engine", move |cancel| {
        let a = a.clone();
        async move { engine::run(a, cancel).await.map_err(Into::into) }
    });
    let a = app.clone();
    sup.spawn("metrics", move |cancel| report::run(a.clone(), cancel));
    if cfg.alert.enabled {
        let a = app.clone();
        sup.spawn("alert", move |cancel| {
            let a = a.clone();
            async move { crate::alert::run(a, cancel).await.map_err(Into::into) }
        });
    }
    let a = app.clone();
    sup.spawn("web", move |cancel| {
        let a = a.clone();
        async move { web::serve(a, cancel).await.map_err(Into::into) }
    });
    if cfg.sources.simulated.enabled {
        let a = app.clone();
        sup.spawn("source.simulated", move |cancel| {
            let a = a.clone();
            async move {
                sources::simulated::run_source(a, cancel)
                    .await
                    .map_err(Into::into)
            }
        });
    }
    pollers::spawn(&mut sup, &app);
    tracing::info!(
        instance = cfg.instance,
        instances = cfg.instances,
        "conscope running"
    );
    sup.wait(cfg.pipeline.shutdown_timeout).await?;
    tracing::info!("conscope stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::kafka::tests::broken_pipe;
    use crate::logging::chain;
    use crate::pipeline::engine::EngineError;
    use crate::pipeline::ingest::IngestError;
    use crate::pipeline::publish::PublishError;
    use crate::store::tests::driver_error;

    fn says_once(e: &(dyn std::error::Error + 'static), root: &str) -> String {
        let text = chain(e).to_string();
        assert_eq!(text.matches(root).count(), 1, "{root} in {text}");
        text
    }

    #[test]
    fn an_engine_error_says_its_stage_then_each_cause_once() {
        let store = || StoreError::query("insert price_history")(driver_error());
        let cases: [(EngineError, &str); 5] = [
            (
                EngineError::WarmStart(store()),
                "warm start: PostgreSQL insert price_history failed: ",
            ),
            (
                EngineError::Persist(store()),
                "persist: PostgreSQL insert price_history failed: ",
            ),
            (
                EngineError::Connect(broken_pipe("connect")),
                "connecting output topics: Kafka connect on raw_prices/3 failed: ",
            ),
            (
                EngineError::Ingest {
                    partition: 3,
                    source: IngestError::Kafka(broken_pipe("fetch")),
                },
                "ingest of partition 3: Kafka fetch on raw_prices/3 failed: ",
            ),
            (
                EngineError::Publish(PublishError::Kafka(broken_pipe("produce"))),
                "publish: Kafka produce on raw_prices/3 failed: ",
            ),
        ];
        for (e, starts) in cases {
            let root = if starts.contains("PostgreSQL") {
                "`port`"
            } else {
                "broken pipe"
            };
            let text = says_once(&e, root);
            assert!(text.starts_with(starts), "{text}");
        }
    }

    #[test]
    fn a_run_error_says_each_cause_once() {
        says_once(&RunError::Kafka(broken_pipe("fetch")), "broken pipe");
        says_once(
            &RunError::Store(StoreError::query("migrate")(driver_error())),
            "`port`",
        );
        let engine = EngineError::Persist(StoreError::Dlq(Box::new(broken_pipe("produce"))));
        let gave_up = RunError::Supervisor(SupervisorError::BudgetSpent {
            task: "engine".into(),
            failures: 4,
            budget: 3,
            window: Duration::from_secs(600),
            cause: chain(&engine).to_string(),
        });
        let text = says_once(&gave_up, "broken pipe");
        assert!(
            text.contains("giving up: persist: sending records PostgreSQL refused to the DLQ: Kafka produce"),
            "{text}"
        );
    }
}
