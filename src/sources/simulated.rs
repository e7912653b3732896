//! The simulated feed as a producer: a source task inside `conscope run` (paced at
//! `sources.simulated.rate`) and the `conscope simulate` command (paced, or as fast as the
//! broker takes it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rskafka::client::Client;
use tokio_util::sync::CancellationToken;

use super::feed::{Feed, Move, to_wire_json};
use crate::app::App;
use crate::config::{Config, SimulatedConfig};
use crate::kafka::KafkaError;
use crate::kafka::produce::TopicProducer;
use crate::store::{self, StoreError};

/// Why the simulated source task stopped: the broker, or Postgres when reading where to resume.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counts of what a simulation produced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub new: u64,
    pub drops: u64,
    pub rises: u64,
    pub unchanged: u64,
}

impl Summary {
    fn count(&mut self, mv: Move) {
        self.events += 1;
        match mv {
            Move::New => self.new += 1,
            Move::Drop => self.drops += 1,
            Move::Rise => self.rises += 1,
            Move::Same => self.unchanged += 1,
        }
    }
}

/// Produce `events` observations (all of them, or until `cancel`), at `rate` per second when
/// given. `progress` is called after every chunk with the running summary.
pub async fn produce(
    client: &Client,
    cfg: &Config,
    sim: &SimulatedConfig,
    events: Option<u64>,
    rate: Option<f64>,
    cancel: &CancellationToken,
    progress: impl FnMut(&Summary),
) -> Result<Summary, KafkaError> {
    produce_feed(client, cfg, Feed::new(sim), events, rate, cancel, progress).await
}

/// [`produce`] from a given feed (a resumed one, say).
async fn produce_feed(
    client: &Client,
    cfg: &Config,
    mut feed: Feed,
    events: Option<u64>,
    rate: Option<f64>,
    cancel: &CancellationToken,
    mut progress: impl FnMut(&Summary),
) -> Result<Summary, KafkaError> {
    let topic = &cfg.kafka.topics.raw_prices;
    let producer = TopicProducer::connect(client, &topic.name, topic.partitions, &cfg.kafka).await?;
    let mut summary = Summary::default();
    let started = Instant::now();
    // Paced runs send small chunks often; unpaced runs send big chunks.
    let chunk = match rate {
        Some(r) => ((r / 10.0).ceil() as u64).clamp(1, 5_000),
        None => 5_000,
    };
    loop {
        let remaining = events.map_or(chunk, |n| n.saturating_sub(summary.events).min(chunk));
        if remaining == 0 || cancel.is_cancelled() {
            break;
        }
        let now = chrono::Utc::now();
        let mut records = Vec::with_capacity(remaining as usize);
        for _ in 0..remaining {
            let (event, mv) = feed.next_event(now);
            summary.count(mv);
            records.push((event.listing_key().as_bytes().to_vec(), to_wire_json(&event), now));
        }
        producer.send(records).await?;
        progress(&summary);
        if let Some(r) = rate {
            let due = started + Duration::from_secs_f64(summary.events as f64 / r);
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                () = tokio::time::sleep_until(due.into()) => {}
            }
        }
    }
    Ok(summary)
}

/// The last stored price (cents) of every listing whose listing id is `prefix` and a number,
/// by that number: what an earlier run of the same seed left in listing_state.
pub async fn stored_prices(
    client: &tokio_postgres::Client,
    prefix: &str,
) -> Result<HashMap<u64, i64>, StoreError> {
    let rows = client
        .query(
            "SELECT listing_key, last_price FROM listing_state WHERE listing_key LIKE $1",
            &[&format!("%:{prefix}%")],
        )
        .await
        .map_err(StoreError::query("read the simulated listings' stored prices"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let key: &str = r.get(0);
            let (_, id) = key.split_once(':')?;
            let number = id.strip_prefix(prefix)?.parse().ok()?;
            Some((number, crate::model::money::cents_of(r.get(1))))
        })
        .collect())
}

/// The source task inside `conscope run`: the feed resumes its listings at their stored prices
/// (see [`Feed::resume`]), so a restart is not taken for a burst of price changes.
pub async fn run_source(app: App, cancel: CancellationToken) -> Result<(), SourceError> {
    let App {
        cfg,
        pool,
        kafka: client,
        metrics,
        ..
    } = app;
    let sim = &cfg.sources.simulated;
    let mut feed = Feed::new(sim);
    let db = store::client(&pool, &cfg.postgres).await?;
    let stored = stored_prices(&db, &feed.id_prefix()).await?;
    drop(db);
    let resumed = feed.resume(&stored);
    tracing::info!(
        rate = sim.rate,
        listings = sim.listings,
        seed = sim.seed,
        resumed,
        "simulated feed started"
    );
    let mut reported = 0;
    let result = produce_feed(&client, &cfg, feed, None, Some(sim.rate), &cancel, |s| {
        metrics.counters.source_records.inc_by(s.events - reported);
        reported = s.events;
    })
    .await;
    if result.is_err() {
        metrics.counters.source_errors.inc();
    }
    result.map(|_| ()).map_err(Into::into)
}
