//! The first ConScope's way, side by side: `tools/bench/python/first_conscope_consumer.py` (kafka-python +
//! psycopg2, one INSERT and commit per event, a producer flush per alert) run as a child
//! process on the same topic, broker and database, for a bounded time.
//!
//! A failure here (no venv, kafka-python refused by the broker) is reported in the figures,
//! not raised: ConScope's own figures of the run stay valid.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::RunArgs;
use crate::scratch::Scratch;
use conscope::usage;

/// What the Python consumer did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PythonFigures {
    /// Events consumed and committed.
    pub events: u64,
    /// Seconds from its first record to its last commit.
    pub seconds: f64,
    pub events_per_s: f64,
    pub alerts: u64,
    /// Whether it consumed through a consumer group (else by explicit partition assignment).
    pub consumer_group: bool,
    /// CPU seconds of the Python process.
    pub cpu_seconds: f64,
    /// Peak RSS of the children waited for so far (the Python process is the largest), MiB.
    pub peak_rss_mib: f64,
    /// Why it did not run or stopped early, when it did.
    pub error: Option<String>,
}

/// Seconds the child may run beyond its own time limit before it is killed.
const GRACE: Duration = Duration::from_secs(60);

pub async fn run(scratch: &Scratch, args: &RunArgs) -> PythonFigures {
    let cfg = &scratch.cfg;
    let before = usage::children();
    let mut cmd = tokio::process::Command::new(&args.python);
    cmd.arg(&args.python_script)
        .args(["--brokers", &cfg.kafka.brokers.join(",")])
        .args(["--topic", &cfg.kafka.topics.raw_prices.name])
        .args([
            "--partitions",
            &cfg.kafka.topics.raw_prices.partitions.to_string(),
        ])
        .args(["--alerts-topic", &scratch.python_alerts_topic])
        .args(["--dsn", cfg.postgres.url.expose()])
        .args(["--max-events", &args.events.to_string()])
        .args(["--max-seconds", &args.python_seconds.to_string()])
        .args(["--min-drop-percent", &cfg.detect.min_drop_percent.to_string()])
        .args(["--min-change-abs", &cfg.detect.min_change_abs.to_string()]);
    let within = Duration::from_secs(args.python_seconds) + GRACE;
    let report = run_reporting(cmd, "the Python consumer", within).await;
    let after = usage::children();
    let mut figures = PythonFigures {
        cpu_seconds: after.cpu_since(&before),
        peak_rss_mib: usage::mib(after.max_rss_kib),
        ..PythonFigures::default()
    };
    match report {
        Ok(r) => {
            let num = |k: &str| r.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
            figures.events = num("events") as u64;
            figures.seconds = num("seconds");
            figures.events_per_s = num("events_per_s");
            figures.alerts = num("alerts") as u64;
            figures.consumer_group = r
                .get("consumer_group")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            figures.error = r.get("error").and_then(|e| e.as_str()).map(str::to_string);
        }
        Err(e) => figures.error = Some(e),
    }
    figures
}

/// Run a Python child that prints its report as a JSON line last: that report, or why there is
/// none (it could not start, did not stop within `within` and was killed, or printed none — with
/// the end of its stderr).
pub async fn run_reporting(
    mut cmd: tokio::process::Command,
    what: &str,
    within: Duration,
) -> Result<serde_json::Value, String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let started = Instant::now();
    let child = cmd.spawn().map_err(|e| {
        format!(
            "cannot start {} (run tools/bench/python/setup.sh first): {e}",
            cmd.as_std().get_program().to_string_lossy()
        )
    })?;
    let output = match tokio::time::timeout(within, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(format!("waiting for {what}: {e}")),
        Err(_) => return Err(format!("{what} did not stop within {within:?} and was killed")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if let Some(report) = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
    {
        return Ok(report);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
    Err(format!(
        "exited with {} after {:.1} s and no report: {}",
        output.status,
        started.elapsed().as_secs_f64(),
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    ))
}
