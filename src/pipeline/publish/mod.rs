//! The publish stage: after a batch commits, produce `processed_prices` and `price_alerts`, then
//! move the outbox mark (`kafka_offsets.published_offset`).
//!
//! Kafka is the durable boundary out, so nothing committed may be left unpublished: at engine
//! start, [`recover`] re-produces whatever lies between the published mark and the committed
//! offset (a crash between commit and produce). Produce retries and recovery may duplicate
//! records; every record carries a deterministic key and id (`listing_key` + source offset,
//! `alert_id`), so consumers dedupe.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rskafka::client::Client;
use rust_decimal::Decimal;
use tokio::sync::mpsc;

use crate::backoff::Caller;
use crate::config::Config;
use crate::kafka::KafkaError;
use crate::kafka::produce::TopicProducer;
use crate::metrics::Metrics;
use crate::model::money::{cents_of, change_percent};
use crate::model::{ChangeKind, PriceEvent, PriceEventFields, ProcessedPrice};
use crate::pipeline::messages::CommittedBatch;
use crate::store::offsets::ENGINE_CONSUMER;
use crate::store::{self, StoreError, offsets};

/// Offsets of one partition re-produced per step of [`recover`]: at ~0.5 KB per processed
/// record, a chunk holds a few MB in memory.
pub const RECOVERY_CHUNK: i64 = 20_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Producers for the output topics.
#[derive(Debug)]
pub struct Publisher {
    processed: TopicProducer,
    alerts: TopicProducer,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
}

type Out = (String, Vec<u8>, DateTime<Utc>);

impl Publisher {
    pub async fn connect(
        client: &Client,
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, KafkaError> {
        let t = &cfg.kafka.topics;
        let outage = &metrics.kafka_outage;
        let processed = TopicProducer::connect(
            client,
            &t.processed_prices.name,
            t.processed_prices.partitions,
            &cfg.kafka,
        )
        .await?
        .reporting_to(outage, "publish");
        let alerts = TopicProducer::connect(
            client,
            &t.price_alerts.name,
            t.price_alerts.partitions,
            &cfg.kafka,
        )
        .await?
        .reporting_to(outage, "publish");
        Ok(Self {
            processed,
            alerts,
            cfg,
            metrics,
        })
    }

    /// Produce `processed` and `alerts` (key, JSON value, time) concurrently.
    pub async fn publish(&self, processed: Vec<Out>, alerts: Vec<Out>) -> Result<(), KafkaError> {
        let n = (processed.len() + alerts.len()) as u64;
        let bytes = |v: Vec<Out>| v.into_iter().map(|(k, v, t)| (k.into_bytes(), v, t)).collect();
        let result = futures::future::try_join(
            self.processed.send(bytes(processed)),
            self.alerts.send(bytes(alerts)),
        )
        .await;
        if result.is_err() {
            self.metrics.counters.publish_errors.inc();
        }
        result?;
        self.metrics.counters.publish_records.inc_by(n);
        Ok(())
    }
}

fn processed_records(batch: &CommittedBatch) -> Vec<Out> {
    batch
        .records
        .iter()
        .map(|p| {
            let out = ProcessedPrice {
                listing_key: p.listing_key.clone(),
                event: &*p.record.event,
                previous_price: p.change.previous_cents,
                change: p.change.change_cents,
                change_pct: p.change.change_pct,
                change_kind: p.change.kind,
                source_partition: p.record.partition,
                source_offset: p.record.offset,
            };
            let value = serde_json::to_vec(&out).unwrap_or_default();
            (p.listing_key.to_string(), value, p.record.kafka_ts)
        })
        .collect()
}

/// Run until persist's sender is gone.
pub async fn run(
    publisher: Publisher,
    pool: Pool,
    mut rx: mpsc::Receiver<CommittedBatch>,
) -> Result<(), PublishError> {
    let cfg = publisher.cfg.clone();
    let mut marking = publisher.metrics.postgres_outage.caller("publish");
    while let Some(batch) = rx.recv().await {
        let processed = if cfg.pipeline.publish_processed {
            processed_records(&batch)
        } else {
            Vec::new()
        };
        let alerts = batch
            .alerts
            .iter()
            .map(|a| {
                (
                    a.alert_id.clone(),
                    serde_json::to_vec(a).unwrap_or_default(),
                    a.alert_timestamp,
                )
            })
            .collect();
        publisher.publish(processed, alerts).await?;
        mark(&pool, &cfg, &batch.offsets, &mut marking).await;
    }
    tracing::info!("publish drained and stopped");
    Ok(())
}

/// Move the outbox mark. A failure here only means a later restart republishes (ids dedupe);
/// it counts towards the Postgres outage, which logs it once.
async fn mark(pool: &Pool, cfg: &Config, offsets: &[(i32, i64)], outage: &mut Caller) {
    let topic = &cfg.kafka.topics.raw_prices.name;
    let result = async {
        let client = store::client(pool, &cfg.postgres).await?;
        offsets::mark_published(&client, ENGINE_CONSUMER, topic, offsets).await
    }
    .await;
    match result {
        Ok(()) => outage.succeeded(),
        Err(e) => {
            let e = crate::logging::chain(&e);
            tracing::debug!(error = %e, "could not record published offsets; they will be republished at restart");
            outage.failed(&e);
        }
    }
}

/// Re-produce what committed but was not published before the last stop.
pub async fn recover(
    publisher: &Publisher,
    pool: &Pool,
    stored: &BTreeMap<i32, (i64, i64)>,
) -> Result<u64, PublishError> {
    let cfg = publisher.cfg.clone();
    let client = store::client(pool, &cfg.postgres).await?;
    let mut total = 0;
    // Alerts raised by watches (rule `watch:<id>`) are written by the alert task and never go
    // through this outbox.
    for (&partition, &(next, published)) in stored {
        if published >= next {
            continue;
        }
        let mut n = 0;
        let mut from = published;
        while from < next {
            let to = next.min(from.saturating_add(RECOVERY_CHUNK));
            n += recover_range(publisher, &client, partition, from, to).await?;
            offsets::mark_published(
                &client,
                ENGINE_CONSUMER,
                &cfg.kafka.topics.raw_prices.name,
                &[(partition, to)],
            )
            .await?;
            tracing::debug!(partition, to, "republished up to");
            from = to;
        }
        tracing::info!(
            partition,
            from = published,
            to = next,
            records = n,
            "republished committed records"
        );
        total += n;
    }
    Ok(total)
}

/// Produce what offsets `from..to` of `partition` committed; the number of records produced.
async fn recover_range(
    publisher: &Publisher,
    client: &tokio_postgres::Client,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<u64, PublishError> {
    let processed = if publisher.cfg.pipeline.publish_processed {
        unpublished_processed(client, partition, from, to).await?
    } else {
        Vec::new()
    };
    let rows = client
        .query(
            "SELECT alert_id, payload::text, alert_timestamp FROM price_alerts
              WHERE kafka_partition = $1 AND kafka_offset >= $2 AND kafka_offset < $3
                AND rule NOT LIKE 'watch:%'
              ORDER BY kafka_offset",
            &[&partition, &from, &to],
        )
        .await
        .map_err(StoreError::query("read unpublished alerts"))?;
    let alerts: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1).into_bytes(),
                r.get(2),
            )
        })
        .collect();
    let n = (processed.len() + alerts.len()) as u64;
    publisher.publish(processed, alerts).await?;
    Ok(n)
}

async fn unpublished_processed(
    client: &tokio_postgres::Client,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Vec<Out>, StoreError> {
    let rows = client
        .query(
            "SELECT h.listing_key, h.event_id, e.event_name, e.venue, e.event_date, h.source, h.section,
                    h.\"row\", h.seat, h.price, h.fees, h.total_price, h.\"timestamp\", h.listing_id,
                    h.listing_url, h.quantity, h.previous_price, h.change_kind, h.kafka_offset,
                    h.delivery_method, h.seller_notes
               FROM price_history h JOIN events e USING (event_id)
              WHERE h.kafka_partition = $1 AND h.kafka_offset >= $2 AND h.kafka_offset < $3
              ORDER BY h.kafka_offset",
            &[&partition, &from, &to],
        )
        .await
        .map_err(StoreError::query("read unpublished price_history"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let price = cents_of(r.get::<_, Decimal>(9));
            let previous = r.get::<_, Option<Decimal>>(16).map(cents_of);
            let change = previous.map_or(0, |p| price - p);
            let kind = match r.get::<_, &str>(17) {
                "drop" => ChangeKind::Drop,
                "increase" => ChangeKind::Increase,
                "unchanged" => ChangeKind::Unchanged,
                "out_of_order" => ChangeKind::OutOfOrder,
                _ => ChangeKind::New,
            };
            let timestamp: DateTime<Utc> = r.get(12);
            let out = ProcessedPrice {
                listing_key: r.get::<_, &str>(0).into(),
                event: PriceEvent::from(PriceEventFields {
                    event_id: r.get::<_, &str>(1).into(),
                    event_name: r.get::<_, &str>(2).into(),
                    venue: r.get::<_, &str>(3).into(),
                    event_date: r.get(4),
                    source: r.get::<_, &str>(5).into(),
                    section: r.get::<_, &str>(6).into(),
                    row: r.get::<_, &str>(7).into(),
                    seat: r.get::<_, &str>(8).into(),
                    price,
                    fees: r.get::<_, Option<Decimal>>(10).map(cents_of),
                    total_price: cents_of(r.get::<_, Decimal>(11)),
                    timestamp,
                    listing_id: r.get::<_, Option<&str>>(13).map(Into::into),
                    listing_url: r.get::<_, Option<&str>>(14).map(Into::into),
                    quantity: r.get(15),
                    delivery_method: r.get::<_, Option<&str>>(19).map(Into::into),
                    seller_notes: r.get::<_, Option<&str>>(20).map(Into::into),
                }),
                previous_price: previous,
                change,
                change_pct: previous.map_or(0.0, |p| change_percent(change, p)),
                change_kind: kind,
                source_partition: partition,
                source_offset: r.get(18),
            };
            (
                out.listing_key.to_string(),
                serde_json::to_vec(&out).unwrap_or_default(),
                timestamp,
            )
        })
        .collect())
}
