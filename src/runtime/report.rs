//! The metrics reporter: every `pipeline.metrics_interval`, one log line, one `system_metrics`
//! row and one record on the `system_metrics` topic (key `snapshot`). A snapshot that cannot be
//! stored or produced is skipped; the failure counts towards the Postgres or broker outage,
//! which logs it once, not at every interval.

use std::time::Duration;

use rskafka::record::Record;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::kafka;
use crate::rate::Rate;
use crate::store;

pub async fn run(app: App, cancel: CancellationToken) -> Result<(), super::supervisor::TaskError> {
    let App {
        cfg,
        pool,
        kafka: client,
        metrics,
        ..
    } = app;
    let topic = &cfg.kafka.topics.system_metrics.name;
    let mut interval = tokio::time::interval(cfg.pipeline.metrics_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    let mut previous = metrics.snapshot();
    let mut postgres = metrics.postgres_outage.caller("metrics");
    let mut kafka = metrics.kafka_outage.caller("metrics");
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            _ = interval.tick() => {}
        }
        let snap = metrics.snapshot();
        let secs = cfg.pipeline.metrics_interval.as_secs_f64();
        let rate = Rate::new(
            snap.counters.persist_records - previous.counters.persist_records,
            secs,
        )
        .per_second();
        let lag: i64 = snap.lag.values().sum();
        tracing::info!(
            events_per_s = format!("{rate:.0}"),
            ingested = snap.counters.ingest_records,
            committed = snap.counters.persist_records,
            dlq = snap.counters.dlq_records,
            alerts = snap.counters.alerts_raised,
            lag,
            p50_ms = format!("{:.1}", snap.latency_p50_s * 1e3),
            p99_ms = format!("{:.1}", snap.latency_p99_s * 1e3),
            restarts = snap.counters.task_restarts,
            "metrics"
        );
        let json = serde_json::to_value(&snap).unwrap_or_default();
        let instance = cfg.instance as i32;
        let stored = async {
            let c = store::client(&pool, &cfg.postgres).await?;
            c.execute(
                "INSERT INTO system_metrics (instance, snapshot) VALUES ($1, $2)",
                &[&instance, &json],
            )
            .await
            .map_err(store::StoreError::query("insert system_metrics"))
        };
        match tokio::time::timeout(Duration::from_secs(5), stored).await {
            Ok(Ok(_)) => postgres.succeeded(),
            Ok(Err(e)) => {
                let e = crate::logging::chain(&e);
                tracing::debug!(error = %e, "could not store metrics snapshot");
                postgres.failed(&e);
            }
            Err(_) => postgres.failed(&"storing the metrics snapshot took longer than 5s"),
        }
        let produce = async {
            let pc = kafka::partition_client(&client, topic, 0, cfg.kafka.request_timeout).await?;
            let record = Record {
                key: Some(format!("instance-{instance}").into_bytes()),
                value: Some(json.to_string().into_bytes()),
                headers: Default::default(),
                timestamp: chrono::Utc::now(),
            };
            pc.produce(vec![record], cfg.kafka.compression.rskafka())
                .await
                .map_err(|source| kafka::KafkaError::Admin {
                    operation: "produce metrics",
                    source: source.into(),
                })
        };
        match tokio::time::timeout(cfg.kafka.request_timeout, produce).await {
            Ok(Ok(_)) => kafka.succeeded(),
            Ok(Err(e)) => {
                let e = crate::logging::chain(&e);
                tracing::debug!(error = %e, "could not produce metrics snapshot");
                kafka.failed(&e);
            }
            Err(_) => kafka.failed(&"producing the metrics snapshot got no answer"),
        }
        previous = snap;
    }
}
