//! The application context: what every long-lived task of `conscope run` shares — the
//! configuration, the Postgres pool, the Kafka client, the metrics and the live price cache.
//!
//! One [`App`] is built at start and handed, cloned (every field is a shared handle), to the
//! engine, the alert task, the web server, the metrics reporter and the sources. The stages
//! inside the engine take only what they use, so each of them reads as a function of its inputs.

use std::sync::Arc;

use deadpool_postgres::Pool;
use rskafka::client::Client;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::pipeline::detect::cache::PriceCache;

/// What every task shares; cloning it clones handles, never the data behind them.
#[derive(Debug, Clone)]
pub struct App {
    pub cfg: Arc<Config>,
    /// Shared by every task; the web holds at most `web.db_connections` of it at once.
    pub pool: Pool,
    pub kafka: Arc<Client>,
    pub metrics: Arc<Metrics>,
    /// The detector's listing state, read live by the dashboard.
    pub cache: Arc<PriceCache>,
}

impl App {
    /// A context with fresh metrics and an empty price cache (the engine warm-starts it).
    pub fn new(cfg: Arc<Config>, pool: Pool, kafka: Arc<Client>) -> Self {
        Self {
            cfg,
            pool,
            kafka,
            metrics: Arc::default(),
            cache: Arc::new(PriceCache::new()),
        }
    }
}
