//! Semantic checks on a parsed [`Config`]: every problem is collected, each with its key path,
//! so a user fixes them all in one go (`kafka.brokers: must not be empty`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::{BackoffConfig, Config};

/// Bytes a DLQ record needs besides its (capped) key and value: headers and record framing.
const DLQ_HEADER_ROOM: usize = 8 * 1024;

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn check(&mut self, ok: bool, key: &str, message: &str) {
        if !ok {
            self.0.push(Problem {
                key: key.to_string(),
                message: message.to_string(),
            });
        }
    }

    pub(super) fn positive_duration(&mut self, value: Duration, key: &str) {
        self.check(!value.is_zero(), key, "must be longer than zero");
    }

    pub(super) fn backoff(&mut self, b: &BackoffConfig, key: &str) {
        self.positive_duration(b.initial, &format!("{key}.initial"));
        self.check(
            b.max >= b.initial,
            &format!("{key}.max"),
            "must be at least `initial`",
        );
        self.check(
            b.multiplier >= 1.0 && b.multiplier.is_finite(),
            &format!("{key}.multiplier"),
            "must be a number >= 1.0",
        );
        self.check(
            (0.0..=1.0).contains(&b.jitter),
            &format!("{key}.jitter"),
            "must be between 0.0 and 1.0",
        );
        self.positive_duration(b.deadline, &format!("{key}.deadline"));
    }
}

impl Config {
    /// Every problem with this configuration; empty when it is usable.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        p.check(self.instances >= 1, "instances", "must be at least 1");
        p.check(
            self.instance < self.instances.max(1),
            "instance",
            "must be less than `instances`",
        );
        p.check(
            tracing_subscriber::EnvFilter::try_new(&self.log.level).is_ok(),
            "log.level",
            "is not a valid filter (try `info` or `conscope=debug`)",
        );

        let k = &self.kafka;
        p.check(!k.brokers.is_empty(), "kafka.brokers", "must not be empty");
        for (i, broker) in k.brokers.iter().enumerate() {
            let ok = broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            p.check(ok, &format!("kafka.brokers[{i}]"), "must be host:port");
        }
        p.check(!k.client_id.is_empty(), "kafka.client_id", "must not be empty");
        p.positive_duration(k.request_timeout, "kafka.request_timeout");
        p.check(
            (1..=10_000).contains(&k.fetch_max_wait_ms),
            "kafka.fetch_max_wait_ms",
            "must be between 1 and 10000 milliseconds",
        );
        p.check(
            k.fetch_max_bytes >= 1024,
            "kafka.fetch_max_bytes",
            "must be at least 1024 bytes",
        );
        p.check(
            k.fetch_max_record_bytes >= k.fetch_max_bytes,
            "kafka.fetch_max_record_bytes",
            "must be at least kafka.fetch_max_bytes",
        );
        p.check(
            (4096..=i32::MAX as usize).contains(&k.max_request_bytes),
            "kafka.max_request_bytes",
            "must be between 4096 and 2147483647 bytes",
        );
        p.check(
            k.dlq_max_value_bytes
                .checked_mul(2)
                .and_then(|b| b.checked_add(DLQ_HEADER_ROOM))
                .is_some_and(|b| b <= k.max_request_bytes),
            "kafka.dlq_max_value_bytes",
            "must leave room for a DLQ record's key, value and headers in kafka.max_request_bytes \
             (2 × this + 8 KiB at most)",
        );
        p.positive_duration(k.partition_poll_interval, "kafka.partition_poll_interval");
        p.backoff(&k.backoff, "kafka.backoff");
        let mut names = Vec::new();
        for (key, topic) in [
            ("raw_prices", &k.topics.raw_prices),
            ("processed_prices", &k.topics.processed_prices),
            ("price_alerts", &k.topics.price_alerts),
            ("dlq", &k.topics.dlq),
            ("system_metrics", &k.topics.system_metrics),
        ] {
            let ok_name = !topic.name.is_empty()
                && topic.name.len() <= 249
                && topic
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            p.check(
                ok_name,
                &format!("kafka.topics.{key}.name"),
                "must be 1-249 characters of letters, digits, '.', '_' or '-'",
            );
            p.check(
                !names.contains(&topic.name),
                &format!("kafka.topics.{key}.name"),
                "is used by another topic",
            );
            names.push(topic.name.clone());
            p.check(
                topic.partitions >= 1,
                &format!("kafka.topics.{key}.partitions"),
                "must be at least 1",
            );
        }
        p.check(
            self.instances as i64 <= k.topics.raw_prices.partitions as i64,
            "instances",
            "must not exceed kafka.topics.raw_prices.partitions (an instance would own nothing)",
        );

        let pg = &self.postgres;
        let url = pg.url.expose();
        p.check(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "postgres.url",
            "must start with postgres:// or postgresql://",
        );
        if url.starts_with("postgres") {
            p.check(
                url.parse::<tokio_postgres::Config>().is_ok(),
                "postgres.url",
                "is not a valid PostgreSQL connection URL",
            );
        }
        p.check(pg.pool_size >= 2, "postgres.pool_size", "must be at least 2");
        p.positive_duration(pg.statement_timeout, "postgres.statement_timeout");
        p.positive_duration(pg.connect_timeout, "postgres.connect_timeout");
        p.backoff(&pg.backoff, "postgres.backoff");

        let pl = &self.pipeline;
        for (key, cap) in [
            ("pipeline.ingest_channel_capacity", pl.ingest_channel_capacity),
            ("pipeline.persist_channel_capacity", pl.persist_channel_capacity),
            ("pipeline.publish_channel_capacity", pl.publish_channel_capacity),
        ] {
            p.check(cap >= 1, key, "must be at least 1");
        }
        p.check(
            (1..=1_000_000).contains(&pl.batch_max_records),
            "pipeline.batch_max_records",
            "must be between 1 and 1000000",
        );
        p.positive_duration(pl.flush_interval, "pipeline.flush_interval");
        p.positive_duration(pl.shutdown_timeout, "pipeline.shutdown_timeout");
        p.positive_duration(pl.metrics_interval, "pipeline.metrics_interval");
        p.positive_duration(pl.restart_window, "pipeline.restart_window");
        p.check(
            (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&self.ingest.max_future_skew),
            "ingest.max_future_skew",
            "must be between 1s and 1day",
        );

        let d = &self.detect;
        p.check(
            d.min_drop_percent.is_finite() && (0.0..100.0).contains(&d.min_drop_percent),
            "detect.min_drop_percent",
            "must be at least 0 and below 100",
        );
        p.check(
            d.min_change_abs.is_finite() && d.min_change_abs >= 0.0,
            "detect.min_change_abs",
            "must be a number >= 0",
        );
        p.check(!d.rule_name.is_empty(), "detect.rule_name", "must not be empty");

        let w = &self.windows;
        for (i, width) in w.widths.iter().enumerate() {
            let ok = humantime::parse_duration(width)
                .is_ok_and(|d| d.as_secs() >= 1 && d.as_secs() <= 86_400 && d.subsec_nanos() == 0);
            p.check(
                ok,
                &format!("windows.widths[{i}]"),
                "must be a whole number of seconds from 1s to 1day, e.g. \"1m\"",
            );
        }
        p.check(
            !w.enabled || !w.widths.is_empty(),
            "windows.widths",
            "must name at least one width when windows are enabled",
        );
        p.positive_duration(w.idle_timeout, "windows.idle_timeout");

        let s = &self.sources.simulated;
        p.check(
            s.rate.is_finite() && s.rate > 0.0,
            "sources.simulated.rate",
            "must be more than 0 events per second",
        );
        p.check(
            s.listings >= 1,
            "sources.simulated.listings",
            "must be at least 1",
        );
        p.check(
            (0.0..=1.0).contains(&s.drop_probability)
                && (0.0..=1.0).contains(&s.rise_probability)
                && s.drop_probability + s.rise_probability <= 1.0,
            "sources.simulated.drop_probability",
            "drop and rise probabilities must be in 0..1 and sum to at most 1",
        );
        p.check(
            s.max_step > 0.0 && s.max_step < 1.0,
            "sources.simulated.max_step",
            "must be between 0 and 1 (exclusive)",
        );

        super::sources::validate(&self.sources, &mut p);

        p.check(
            self.web.listen.parse::<SocketAddr>().is_ok(),
            "web.listen",
            "must be an address such as 127.0.0.1:8080",
        );
        p.check(
            !d.rule_name.starts_with("watch:"),
            "detect.rule_name",
            "must not start with `watch:` (reserved for alerts raised by watches)",
        );
        p.0.extend(self.alert.problems());
        p.positive_duration(self.web.health_timeout, "web.health_timeout");
        p.positive_duration(self.web.query_timeout, "web.query_timeout");
        // A wrong pool_size is reported on its own key; compare with it only when it is valid.
        p.check(
            self.web.db_connections >= 1 && (pg.pool_size < 2 || self.web.db_connections < pg.pool_size),
            "web.db_connections",
            "must be at least 1 and less than postgres.pool_size (the engine needs the rest)",
        );
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_mistakes_are_both_reported() {
        let mut config = Config::default();
        config.kafka.brokers.clear();
        config.postgres.pool_size = 0;
        let problems = config.validate();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["kafka.brokers", "postgres.pool_size"]);
        assert_eq!(problems[0].to_string(), "kafka.brokers: must not be empty");
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Config::default().validate(), Vec::new());
    }

    #[test]
    fn zero_web_timeouts_are_refused_with_their_keys() {
        let mut config = Config::default();
        config.web.health_timeout = Duration::ZERO;
        config.web.query_timeout = Duration::ZERO;
        let keys: Vec<_> = config.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["web.health_timeout", "web.query_timeout"]);
    }

    #[test]
    fn the_web_cannot_take_every_postgres_connection() {
        let mut config = Config::default();
        config.web.db_connections = config.postgres.pool_size;
        let keys: Vec<_> = config.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["web.db_connections"]);
    }

    #[test]
    fn a_dlq_prefix_that_cannot_fit_one_request_is_refused() {
        let mut config = Config::default();
        config.kafka.max_request_bytes = 64 * 1024;
        let keys: Vec<_> = config.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(keys, vec!["kafka.dlq_max_value_bytes"]);
        config.kafka.dlq_max_value_bytes = 16 * 1024;
        assert_eq!(config.validate(), Vec::new());
    }

    #[test]
    fn duplicate_topic_names_are_refused() {
        let mut config = Config::default();
        config.kafka.topics.dlq.name = "raw_prices".into();
        let problems = config.validate();
        assert!(
            problems.iter().any(|p| p.key == "kafka.topics.dlq.name"),
            "{problems:?}"
        );
    }
}
