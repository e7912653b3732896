//! The feed's producer as a child process: this binary again, as `conscope-bench produce` (what
//! `conscope simulate` does, without the progress bar) with the benchmark's config file, so
//! producing costs nothing in the CPU and memory figures of the process measured.

use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;
use tokio::task::JoinHandle;

use crate::scratch::Scratch;
use crate::{BenchError, RunArgs};
use conscope::config::Config;
use conscope::kafka::{self, topics};
use conscope::rate::Rate;
use conscope::sources::simulated;
use tokio_util::sync::CancellationToken;

/// What producing took.
#[derive(Debug, Clone, Serialize)]
pub struct ProduceFigures {
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    /// `None` in backlog mode (as fast as the broker takes it).
    pub rate_target: Option<f64>,
}

/// A running producer.
#[derive(Debug)]
pub struct Producer {
    task: JoinHandle<std::io::Result<std::process::Output>>,
    started: Instant,
    events: u64,
    rate: Option<f64>,
}

impl Producer {
    /// Start `conscope-bench produce` for the whole feed, paced at `rate` when given.
    pub fn start(scratch: &Scratch, args: &RunArgs, rate: Option<f64>) -> Result<Self, BenchError> {
        let exe = std::env::current_exe().map_err(|source| BenchError::Io {
            what: "finding the conscope-bench executable".into(),
            source,
        })?;
        let mut cmd = tokio::process::Command::new(exe);
        // The subcommand first: `--config` before it would count as a run argument, which
        // conflicts with subcommands.
        cmd.arg("produce")
            .arg("--config")
            .arg(&scratch.config_file)
            .args(["--events", &args.events.to_string()])
            .args(["--listings", &args.listings.to_string()])
            .args(["--seed", &args.seed.to_string()]);
        if let Some(r) = rate {
            cmd.args(["--rate", &r.to_string()]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| BenchError::Io {
            what: "starting `conscope-bench produce`".into(),
            source,
        })?;
        Ok(Self {
            task: tokio::spawn(child.wait_with_output()),
            started: Instant::now(),
            events: args.events,
            rate,
        })
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Wait for the producer; an error carries the end of its stderr.
    pub async fn finish(self) -> Result<ProduceFigures, BenchError> {
        let output = self
            .task
            .await
            .map_err(|e| BenchError::Producer(e.to_string()))?
            .map_err(|e| BenchError::Producer(e.to_string()))?;
        let seconds = self.started.elapsed().as_secs_f64();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            return Err(BenchError::Producer(format!(
                "{}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        Ok(ProduceFigures {
            events: self.events,
            seconds,
            events_per_s: Rate::new(self.events, seconds).per_second(),
            rate_target: self.rate,
        })
    }
}

/// `conscope-bench produce` (hidden): the producer child's side.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceArgs {
    #[arg(long)]
    pub events: u64,
    #[arg(long)]
    pub listings: u32,
    #[arg(long)]
    pub seed: u64,
    #[arg(long)]
    pub rate: Option<f64>,
}

/// Produce the feed `args` names to the configured `raw_prices` (creating missing topics).
pub async fn produce(config: &Config, args: &ProduceArgs) -> Result<(), BenchError> {
    let mut sim = config.sources.simulated.clone();
    sim.seed = args.seed;
    sim.listings = args.listings;
    let client = kafka::connect(&config.kafka).await?;
    topics::ensure(&client, &config.kafka).await?;
    let cancel = CancellationToken::new();
    simulated::produce(
        &client,
        config,
        &sim,
        Some(args.events),
        args.rate,
        &cancel,
        |_| {},
    )
    .await?;
    Ok(())
}
