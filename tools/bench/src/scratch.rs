//! A benchmark's own world on the configured servers: a fresh database (`CREATE DATABASE` on
//! the configured Postgres server, migrated) and a fresh topic set (every configured topic name
//! with a `_bench_<id>` suffix, plus one for the Python consumer's alerts), a configuration
//! file pointing at both for child processes, and the database's removal afterwards.
//!
//! Topics are **not** deleted: on Tansu 0.6.0 (the local broker) a DeleteTopics request for one
//! topic deletes every topic of the cluster (its `topic_delete_by.sql` matches on the cluster,
//! not the name), which would take other users' topics with it. The `*_bench_<id>` topics stay;
//! `conscope-bench` prints their names.

use std::path::PathBuf;
use std::sync::Arc;

use rand::Rng;
use rskafka::client::Client;
use tokio_postgres::NoTls;

use crate::BenchError;
use conscope::config::{Config, Secret};
use conscope::kafka::KafkaError;
use conscope::runtime;
use conscope::store::StoreError;

/// The database, topics and config file of one benchmark run.
#[derive(Debug)]
pub struct Scratch {
    /// The configuration with the fresh database and topics.
    pub cfg: Config,
    pub database: String,
    /// Where the Python consumer produces its alerts (not ConScope's price_alerts topic).
    pub python_alerts_topic: String,
    pub config_file: PathBuf,
    pub pool: deadpool_postgres::Pool,
    pub kafka: Arc<Client>,
    server_url: Secret,
}

/// `url` with its database replaced by `database` (URL or key=value connection strings).
pub fn with_database(url: &str, database: &str) -> String {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .map(|r| ("postgres://", r))
        .or_else(|| url.strip_prefix("postgresql://").map(|r| ("postgresql://", r)))
    else {
        // key=value form: a later key wins.
        return format!("{url} dbname={database}");
    };
    let (scheme, rest) = rest;
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let authority = main.split_once('/').map_or(main, |(a, _)| a);
    match query {
        Some(q) => format!("{scheme}{authority}/{database}?{q}"),
        None => format!("{scheme}{authority}/{database}"),
    }
}

async fn admin(url: &Secret) -> Result<tokio_postgres::Client, StoreError> {
    let (client, conn) =
        tokio_postgres::connect(url.expose(), NoTls)
            .await
            .map_err(|e| StoreError::Connect {
                url: conscope::config::redact_url(url.expose()),
                reason: conscope::store::sqlstate::describe(&e),
            })?;
    tokio::spawn(conn);
    Ok(client)
}

impl Scratch {
    /// Create the database and topics, migrate, and write the config file.
    pub async fn create(base: &Config) -> Result<Self, BenchError> {
        let id = format!("{:08x}", rand::thread_rng().r#gen::<u32>());
        let database = format!("conscope_bench_{id}");
        let server_url = base.postgres.url.clone();
        admin(&server_url)
            .await?
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await
            .map_err(StoreError::query("create the benchmark database"))?;
        let mut cfg = base.clone();
        cfg.postgres.url = Secret::new(with_database(server_url.expose(), &database));
        for topic in [
            &mut cfg.kafka.topics.raw_prices,
            &mut cfg.kafka.topics.processed_prices,
            &mut cfg.kafka.topics.price_alerts,
            &mut cfg.kafka.topics.dlq,
            &mut cfg.kafka.topics.system_metrics,
        ] {
            topic.name = format!("{}_bench_{id}", topic.name);
        }
        cfg.sources.simulated.enabled = false;
        cfg.sources.seatgeek.enabled = false;
        cfg.sources.ticketmaster.enabled = false;
        let config_file = std::env::temp_dir().join(format!("conscope_bench_{id}.toml"));
        let text = toml::to_string(&cfg).map_err(|e| BenchError::Invalid(e.to_string()))?;
        std::fs::write(&config_file, text).map_err(|source| BenchError::Io {
            what: format!("writing {}", config_file.display()),
            source,
        })?;
        // Migrations and the configured topics, exactly as `conscope run` makes them.
        let (pool, kafka) = runtime::prepare(&cfg).await?;
        let python_alerts_topic = format!("first_conscope_alerts_bench_{id}");
        let controller = kafka.controller_client().map_err(|source| KafkaError::Admin {
            operation: "find controller",
            source: source.into(),
        })?;
        let timeout_ms = cfg.kafka.request_timeout.as_millis().min(i32::MAX as u128) as i32;
        tokio::time::timeout(
            cfg.kafka.request_timeout,
            controller.create_topic(python_alerts_topic.clone(), 1, 1, timeout_ms),
        )
        .await
        .map_err(|_| BenchError::Invalid(format!("creating topic {python_alerts_topic} got no answer")))?
        .map_err(|source| KafkaError::Admin {
            operation: "create topic",
            source: source.into(),
        })?;
        Ok(Self {
            cfg,
            database,
            python_alerts_topic,
            config_file,
            pool,
            kafka,
            server_url,
        })
    }

    /// Remove the database (unless `keep`) and the config file. Returns what could not be
    /// removed, for the report. Topics stay (see the module documentation).
    pub async fn remove(self, keep: bool) -> Vec<String> {
        let mut problems = Vec::new();
        let _ = std::fs::remove_file(&self.config_file);
        self.pool.close();
        if keep {
            return problems;
        }
        let dropped = async {
            admin(&self.server_url)
                .await?
                .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database))
                .await
                .map_err(StoreError::query("drop the benchmark database"))
        };
        if let Err(e) = dropped.await {
            problems.push(format!(
                "database {} was not dropped: {}",
                self.database,
                conscope::logging::chain(&e)
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:15432/conscope", "b1"),
            "postgres://postgres@127.0.0.1:15432/b1"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?sslmode=disable", "b1"),
            "postgresql://u:p@h/b1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:5432", "b1"), "postgres://h:5432/b1");
        assert_eq!(
            with_database("host=h user=u dbname=x", "b1"),
            "host=h user=u dbname=x dbname=b1"
        );
    }
}
