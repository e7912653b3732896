//! The broker's ceiling, measured by another client: `tools/bench/python/bare_consume.py`, a bare
//! librdkafka consumer (confluent-kafka: several partitions per request, large fetches,
//! prefetching), reading the same topic from the same broker in the same run, with the engine's
//! `fetch_max_wait_ms` as its `fetch.wait.max.ms`. ConScope's end-to-end rate is reported as a
//! ratio of it, beside the ratio to the bare rskafka fetch.
//!
//! A consumer that cannot run (no venv, the broker refusing it) is reported in the figures, not
//! raised: the rest of the run stays valid.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::python::run_reporting;
use conscope::config::KafkaConfig;

/// What the librdkafka consumer read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CeilingFigures {
    pub records: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    /// librdkafka's version, as the consumer reported it.
    pub librdkafka: Option<String>,
    /// Why there is no figure, when there is none.
    pub error: Option<String>,
}

/// How long the consumer may take before it is killed.
const LIMIT: Duration = Duration::from_secs(900);

/// Read every record of `topic` (partitions `0..partitions`) with librdkafka.
pub async fn run(
    python: &Path,
    script: &Path,
    cfg: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> CeilingFigures {
    let failed = |error: String| CeilingFigures {
        error: Some(error),
        ..CeilingFigures::default()
    };
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script)
        .args(["--brokers", &cfg.brokers.join(",")])
        .args(["--topic", topic])
        .args(["--partitions", &partitions.to_string()])
        .args(["--fetch-wait-ms", &cfg.fetch_max_wait_ms.to_string()])
        .args(["--max-seconds", &LIMIT.as_secs().to_string()]);
    let r = match run_reporting(cmd, "the librdkafka consumer", LIMIT + Duration::from_secs(30)).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    if let Some(e) = r.get("error").and_then(|e| e.as_str()) {
        return failed(e.to_string());
    }
    let num = |k: &str| r.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    CeilingFigures {
        records: num("records") as u64,
        seconds: num("seconds"),
        records_per_s: num("records_per_s"),
        librdkafka: r.get("librdkafka").and_then(|v| v.as_str()).map(str::to_string),
        error: None,
    }
}
