//! The configuration file (`config.toml`): its shape, its defaults and how it is loaded.
//!
//! Loading is three steps, each in its own file:
//!
//! ```text
//!  config.toml ──► toml::Value ──► env.rs: CONSCOPE_<SECTION>__<KEY> overrides ──► serde ──► validate.rs
//! ```
//!
//! Every default lives in a `Default` impl (here, and for the engine's sections in
//! [`engine`], the sources' in `sources.rs`, alerting's in `alert.rs`). Every struct denies
//! unknown fields, so a typo is an error naming the key. Secrets are [`Secret`] values whose
//! `Debug` is redacted; `check-config` prints through [`Config::redacted_toml`].

mod alert;
mod engine;
mod env;
mod secret;
mod sources;
mod validate;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use alert::{AlertConfig, NotifierConfig, NotifierKind, RateLimit, StartFrom, redact_webhook_url};
pub use engine::{DetectConfig, IngestConfig, LatePolicy, PipelineConfig, WindowsConfig};
pub use secret::{Secret, redact_url};
pub use sources::{SeatGeekConfig, TicketmasterConfig};
pub use validate::Problem;

/// Why a configuration could not be used. Each variant is one clear sentence for the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{path}: {message}")]
    Shape { path: String, message: String },
    #[error("invalid configuration:\n{}", format_problems(.0))]
    Invalid(Vec<Problem>),
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole configuration of one ConScope instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This instance's number, `0..instances`. It owns raw_prices partitions `p % instances == instance`.
    pub instance: u32,
    /// How many instances share the raw_prices partitions.
    pub instances: u32,
    pub log: LogConfig,
    pub kafka: KafkaConfig,
    pub postgres: PostgresConfig,
    pub pipeline: PipelineConfig,
    pub ingest: IngestConfig,
    pub detect: DetectConfig,
    pub windows: WindowsConfig,
    pub sources: SourcesConfig,
    pub web: WebConfig,
    pub alert: AlertConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            instance: 0,
            instances: 1,
            log: LogConfig::default(),
            kafka: KafkaConfig::default(),
            postgres: PostgresConfig::default(),
            pipeline: PipelineConfig::default(),
            ingest: IngestConfig::default(),
            detect: DetectConfig::default(),
            windows: WindowsConfig::default(),
            sources: SourcesConfig::default(),
            web: WebConfig::default(),
            alert: AlertConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `conscope=debug,rskafka=warn`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info,rskafka=error".into(),
        }
    }
}

/// The one backoff policy, reused by Kafka, Postgres and webhook retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    pub multiplier: f64,
    /// Fraction of each delay drawn at random (0.0 to 1.0).
    pub jitter: f64,
    /// Give up after this long in total; [`BackoffConfig::NO_DEADLINE`] (`"none"` in the file)
    /// retries for as long as it takes.
    #[serde(with = "deadline_serde")]
    pub deadline: Duration,
}

impl BackoffConfig {
    /// The deadline that never passes: `deadline = "none"`.
    pub const NO_DEADLINE: Duration = Duration::MAX;

    /// The deadline, `None` when retries never give up.
    pub fn deadline(&self) -> Option<Duration> {
        (self.deadline != Self::NO_DEADLINE).then_some(self.deadline)
    }
}

impl Default for BackoffConfig {
    /// Kafka's retries: an outage is waited out for as long as it lasts.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
            deadline: Self::NO_DEADLINE,
        }
    }
}

/// A deadline is a duration string or `"none"` (never give up).
mod deadline_serde {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::BackoffConfig;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if *d == BackoffConfig::NO_DEADLINE {
            s.serialize_str("none")
        } else {
            humantime_serde::serialize(d, s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().eq_ignore_ascii_case("none") {
            return Ok(BackoffConfig::NO_DEADLINE);
        }
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("{e} (a duration such as \"10m\", or \"none\")")))
    }
}

/// One topic. A partial `[kafka.topics.X]` table keeps the defaults of the keys it omits
/// (the file is merged onto the defaults before it is read).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub name: String,
    pub partitions: i32,
    /// Informational for Kafka set-ups made outside ConScope: rskafka cannot send topic
    /// configs, so topics ConScope creates get the broker's default retention.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl TopicConfig {
    fn new(name: &str, partitions: i32, retention_days: u64) -> Self {
        Self {
            name: name.into(),
            partitions,
            retention: Duration::from_secs(retention_days * 86_400),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub raw_prices: TopicConfig,
    pub processed_prices: TopicConfig,
    pub price_alerts: TopicConfig,
    pub dlq: TopicConfig,
    pub system_metrics: TopicConfig,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            raw_prices: TopicConfig::new("raw_prices", 4, 7),
            processed_prices: TopicConfig::new("processed_prices", 4, 30),
            price_alerts: TopicConfig::new("price_alerts", 2, 1),
            dlq: TopicConfig::new("raw_prices_dlq", 1, 30),
            system_metrics: TopicConfig::new("system_metrics", 1, 7),
        }
    }
}

impl TopicsConfig {
    /// Every topic ConScope reads or writes, in creation order.
    pub fn all(&self) -> [&TopicConfig; 5] {
        [
            &self.raw_prices,
            &self.processed_prices,
            &self.price_alerts,
            &self.dlq,
            &self.system_metrics,
        ]
    }
}

/// What to do when a stored offset is no longer on the broker (deleted by retention).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// Stop the partition with a clear error: an operator decides.
    Fail,
    /// Continue from the earliest offset still on the broker, counted as possible data loss.
    Earliest,
}

/// The compression of the record batches ConScope produces (every Kafka codec reads back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProduceCompression {
    None,
    Gzip,
    Lz4,
    Snappy,
    Zstd,
}

impl ProduceCompression {
    pub fn rskafka(self) -> rskafka::client::partition::Compression {
        use rskafka::client::partition::Compression as C;
        match self {
            Self::None => C::NoCompression,
            Self::Gzip => C::Gzip,
            Self::Lz4 => C::Lz4,
            Self::Snappy => C::Snappy,
            Self::Zstd => C::Zstd,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub client_id: String,
    /// Upper bound on one Kafka call (connect, metadata, fetch, produce).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long the broker may hold a fetch waiting for data, in milliseconds. Keep small (10–50).
    pub fetch_max_wait_ms: i32,
    /// Cap on the bytes one fetch returns per partition, which bounds memory with a backlog.
    /// Tansu answers at most about 5 MiB per partition and request whatever is asked for.
    pub fetch_max_bytes: i32,
    /// A record bigger than `fetch_max_bytes` is fetched alone with up to this many bytes; one
    /// bigger still is sent to the DLQ as unreadable (its offset still advances).
    pub fetch_max_record_bytes: i32,
    pub offset_out_of_range: OffsetReset,
    /// Upper bound on one produce request's records (Kafka's default `message.max.bytes` is
    /// 1 MiB): larger sends are split into several requests.
    pub max_request_bytes: usize,
    /// How produced record batches are compressed (processed_prices, price_alerts, the DLQ,
    /// system_metrics and the sources' raw_prices). `none` by default: Tansu 0.6.0 stores
    /// records one by one and compresses every fetch answer again, which on a topic of 200k
    /// compressed records takes longer than `request_timeout`, and it has no snappy encoder, so
    /// no client can fetch a snappy batch from it (docs/benchmarks.md). Any codec suits Kafka.
    pub compression: ProduceCompression,
    /// A DLQ record keeps at most this many bytes of the refused key and value; the original
    /// sizes go in the headers `original_key_bytes` / `original_value_bytes`.
    pub dlq_max_value_bytes: usize,
    /// How often the broker's partition counts are read while running: partitions added to
    /// raw_prices are picked up within this long.
    #[serde(with = "humantime_serde")]
    pub partition_poll_interval: Duration,
    pub backoff: BackoffConfig,
    pub topics: TopicsConfig,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: vec!["127.0.0.1:19092".into()],
            client_id: "conscope".into(),
            request_timeout: Duration::from_secs(10),
            fetch_max_wait_ms: 20,
            fetch_max_bytes: 5 * 1024 * 1024,
            fetch_max_record_bytes: 16 * 1024 * 1024,
            offset_out_of_range: OffsetReset::Fail,
            max_request_bytes: 1024 * 1024,
            compression: ProduceCompression::None,
            dlq_max_value_bytes: 64 * 1024,
            partition_poll_interval: Duration::from_secs(120),
            backoff: BackoffConfig::default(),
            topics: TopicsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db`. The password is a secret: never printed.
    pub url: Secret,
    pub pool_size: usize,
    /// Server-side `statement_timeout` for every ConScope session.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    pub backoff: BackoffConfig,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:15432/conscope"),
            pool_size: 8,
            statement_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            // Postgres outages are waited out for as long as they last.
            backoff: BackoffConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    pub simulated: SimulatedConfig,
    pub seatgeek: SeatGeekConfig,
    pub ticketmaster: TicketmasterConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatedConfig {
    /// Run the simulated marketplace feed inside `conscope run`.
    pub enabled: bool,
    /// Price observations produced per second.
    pub rate: f64,
    /// Same seed, same feed.
    pub seed: u64,
    /// Distinct listings the feed walks over.
    pub listings: u32,
    /// Chance that one observation of a listing is a drop / a rise; the rest repeat the price.
    pub drop_probability: f64,
    pub rise_probability: f64,
    /// Largest single move, as a fraction of the price.
    pub max_step: f64,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            rate: 200.0,
            seed: 42,
            listings: 2_000,
            drop_probability: 0.1,
            rise_probability: 0.1,
            max_step: 0.3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address the dashboard, API, /metrics and /health listen on. Loopback unless you mean it.
    pub listen: String,
    /// Bearer token required by every state-changing request. Empty disables those requests.
    pub api_token: Secret,
    /// `/health/ready` answers 503 while the total raw_prices consumer lag exceeds this many records.
    pub ready_max_lag: u64,
    /// Upper bound on each readiness probe (Postgres `SELECT 1`, broker metadata).
    #[serde(with = "humantime_serde")]
    pub health_timeout: Duration,
    /// Upper bound on one dashboard or API query; past it the request gets a 503.
    #[serde(with = "humantime_serde")]
    pub query_timeout: Duration,
    /// Postgres connections web requests may hold at once, out of `postgres.pool_size`: the
    /// rest stay free for the engine however many dashboards are open.
    pub db_connections: usize,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            api_token: Secret::new(""),
            ready_max_lag: 100_000,
            health_timeout: Duration::from_secs(2),
            query_timeout: Duration::from_secs(5),
            db_connections: 3,
        }
    }
}

impl Config {
    /// Read `path`, apply `CONSCOPE_…` overrides from the process environment and validate.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given (tests pass their own).
    pub fn load_with_env(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string(), vars)
    }

    pub fn from_toml_str(
        text: &str,
        origin: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: origin.to_string(),
            message: e.message().to_string(),
        })?;
        let skeleton = toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Shape {
            path: "<defaults>".into(),
            message: e.to_string(),
        })?;
        // Defaults first, the file over them, the environment over both.
        let mut tree = skeleton.clone();
        merge(&mut tree, file);
        env::apply_overrides(&mut tree, &skeleton, vars)?;
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Shape {
                path,
                message: e.into_inner().message().to_string(),
            }
        })?;
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The effective configuration as TOML with every secret replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut copy = self.clone();
        copy.postgres.url = Secret::new(redact_url(copy.postgres.url.expose()));
        copy.web.api_token = copy.web.api_token.redacted_marker();
        copy.sources.redact_secrets();
        copy.alert = copy.alert.redacted();
        toml::to_string_pretty(&copy).unwrap_or_else(|e| format!("# cannot print config: {e}"))
    }

    /// The raw_prices partitions this instance owns. The engine first sets
    /// `kafka.topics.raw_prices.partitions` to the broker's count (see `runtime::engine`).
    pub fn owned_partitions(&self) -> Vec<i32> {
        (0..self.kafka.topics.raw_prices.partitions)
            .filter(|p| (*p as u32) % self.instances.max(1) == self.instance)
            .collect()
    }
}

/// Deep-merge `over` onto `base`: tables merge key by key, anything else replaces.
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_topic_table_keeps_its_other_defaults() {
        let config =
            Config::from_toml_str("[kafka.topics.dlq]\npartitions = 3\n", "t", Vec::new()).expect("valid");
        assert_eq!(config.kafka.topics.dlq.name, "raw_prices_dlq");
        assert_eq!(config.kafka.topics.dlq.partitions, 3);
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let config = Config::from_toml_str("", "test", Vec::new()).expect("defaults are valid");
        assert_eq!(config.kafka.topics.raw_prices.partitions, 4);
        assert_eq!(config.pipeline.flush_interval, Duration::from_millis(25));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml_str("[kafka]\nbrokerz = []\n", "test", Vec::new())
            .expect_err("typo must be refused");
        let text = err.to_string();
        assert!(text.contains("kafka"), "{text}");
        assert!(text.contains("brokerz"), "{text}");
    }

    #[test]
    fn compression_takes_the_kafka_codec_names() {
        let config = Config::from_toml_str("[kafka]\ncompression = \"lz4\"\n", "t", Vec::new()).expect("lz4");
        assert_eq!(config.kafka.compression, ProduceCompression::Lz4);
        let err = Config::from_toml_str("[kafka]\ncompression = \"brotli\"\n", "t", Vec::new())
            .expect_err("not a Kafka codec");
        let text = err.to_string();
        assert!(text.starts_with("kafka.compression"), "{text}");
        assert!(text.contains("brotli") && text.contains("zstd"), "{text}");
    }

    #[test]
    fn wrong_type_names_the_key_path() {
        let err = Config::from_toml_str("[postgres]\npool_size = \"many\"\n", "test", Vec::new())
            .expect_err("a string is not a pool size");
        assert!(err.to_string().starts_with("postgres.pool_size"), "{err}");
    }

    #[test]
    fn kafka_and_postgres_retries_wait_without_a_deadline_unless_one_is_set() {
        let config = Config::from_toml_str("", "t", Vec::new()).expect("defaults");
        assert_eq!(config.kafka.backoff.deadline(), None);
        assert_eq!(config.postgres.backoff.deadline(), None);
        let text = "[kafka.backoff]\ndeadline = \"30s\"\n[postgres.backoff]\ndeadline = \"none\"\n";
        let config = Config::from_toml_str(text, "t", Vec::new()).expect("valid");
        assert_eq!(config.kafka.backoff.deadline(), Some(Duration::from_secs(30)));
        assert_eq!(config.postgres.backoff.deadline(), None);
        // What check-config prints reads back the same.
        let again = Config::from_toml_str(&config.redacted_toml(), "t", Vec::new()).expect("round trip");
        assert_eq!(again.postgres.backoff, config.postgres.backoff);
        assert!(config.redacted_toml().contains("deadline = \"none\""));
    }

    #[test]
    fn instances_split_partitions() {
        let config = Config {
            instances: 2,
            instance: 1,
            ..Config::default()
        };
        assert_eq!(config.owned_partitions(), vec![1, 3]);
    }

    #[test]
    fn redacted_toml_hides_password_and_token() {
        let mut config = Config::default();
        config.postgres.url = Secret::new("postgres://app:hunter2@db:5432/conscope");
        config.web.api_token = Secret::new("tok-very-secret");
        let text = config.redacted_toml();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("tok-very-secret"), "{text}");
        assert!(
            text.contains("postgres://app:<redacted>@db:5432/conscope"),
            "{text}"
        );
    }
}
