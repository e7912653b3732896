//! The engine's settings: `[pipeline]` (channels, batches, shutdown, restarts), `[detect]`
//! (the default alert rule) and `[windows]` (windowed statistics). Defaults live in the
//! `Default` impls here; `validate.rs` checks them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Batches of parsed records waiting between ingest and detect (all partitions share it).
    pub ingest_channel_capacity: usize,
    /// Detected batches waiting to be written to Postgres.
    pub persist_channel_capacity: usize,
    /// Committed batches waiting to be produced to the output topics.
    pub publish_channel_capacity: usize,
    /// A persist batch closes when it holds this many records...
    pub batch_max_records: usize,
    /// ...or when its oldest record has waited this long.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// On SIGINT/SIGTERM, how long stages may take to drain and commit.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How often the metrics line is logged and written to system_metrics.
    #[serde(with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// A failed task is restarted at most this many times within `restart_window`...
    pub restart_budget: u32,
    /// ...after which the process exits non-zero naming the task.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
    /// Produce `processed_prices` (one record per input record). Alerts are always produced.
    pub publish_processed: bool,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            ingest_channel_capacity: 4,
            persist_channel_capacity: 4,
            publish_channel_capacity: 4,
            batch_max_records: 5_000,
            flush_interval: Duration::from_millis(25),
            shutdown_timeout: Duration::from_secs(30),
            metrics_interval: Duration::from_secs(10),
            restart_budget: 5,
            restart_window: Duration::from_secs(120),
            publish_processed: true,
        }
    }
}

/// `[ingest]`: what a raw_prices record must keep to be accepted, beyond its shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// An observation time further than this ahead of the wall clock at ingest is refused
    /// (to the DLQ): a far-future time would move the windows' watermark past every record.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_future_skew: crate::model::limits::MAX_FUTURE_SKEW,
        }
    }
}

/// What to do with a record whose window has already been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatePolicy {
    /// Recompute the written window from price_history, now including the record.
    Merge,
    /// Leave the window as written; the record is only counted.
    Drop,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowsConfig {
    /// Keep tumbling-window statistics per (event, source).
    pub enabled: bool,
    /// Window widths, e.g. ["1m", "1h"].
    pub widths: Vec<String>,
    /// Watermark = the largest event time seen − this.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// A partition silent this long stops holding windows open.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub late_records: LatePolicy,
}

impl Default for WindowsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            widths: vec!["1m".into(), "1h".into()],
            allowed_lateness: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(30),
            late_records: LatePolicy::Merge,
        }
    }
}

impl WindowsConfig {
    /// The widths in milliseconds; unparsable entries are reported by `validate`.
    pub fn widths_ms(&self) -> Vec<i64> {
        self.widths
            .iter()
            .filter_map(|w| humantime::parse_duration(w).ok())
            .map(|d| d.as_millis() as i64)
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// A drop alerts when it is at least this many percent of the previous price...
    pub min_drop_percent: f64,
    /// ...and at least this many dollars: the default rule's dollar threshold, never below one
    /// cent (±1 cent never alerts). User watches have their own floor, `alert.noise_floor`.
    pub min_change_abs: f64,
    /// Also raise an alert on increases that pass both thresholds.
    pub alert_on_increase: bool,
    /// Name recorded with each alert, so users know which rule fired.
    pub rule_name: String,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            min_drop_percent: 10.0,
            min_change_abs: 5.0,
            alert_on_increase: false,
            rule_name: "default".into(),
        }
    }
}
