//! `conscope-bench`: ConScope's figures on this machine, measured against the real broker and
//! Postgres in a scratch database and topic set of its own. A workspace member of its own, built
//! on the `conscope` library.
//!
//! ```text
//!  scratch   CREATE DATABASE conscope_bench_<id> (migrated) · topics <name>_bench_<id>
//!  producer  `conscope-bench produce` child ──► raw_prices        (first, or paced with --rate)
//!  run       engine in-process until committed = N ──► figures: events/s, rows/s, latency
//!            (with --probe-broker: a bare consumer tailing the topic gives the broker's share),
//!            alerts, CPU, RSS; RSS samples while Postgres is held locked (--stall-postgres)
//!  ceiling   bare rskafka fetch of the same topic ──► ConScope / bare ratio;
//!            bare librdkafka consume of it (tools/bench/python/bare_consume.py) ──► ConScope /
//!            librdkafka ratio, the broker's ceiling as another client sees it (--no-librdkafka skips)
//!  python    first ConScope consumer on the same topic (--with-python)
//!  cleanup   DROP DATABASE (unless --keep); topics stay (see [`scratch`])
//! ```
//!
//! Also `conscope-bench gen` (the feed as JSON lines for `conscope replay`) and
//! `conscope-bench cache` (bytes per listing in the price cache).
//!
//! Exit codes: 0 success, 2 usage or configuration error, 1 a failed run.

pub mod cache;
pub mod ceiling;
pub mod fetch;
pub mod producer;
pub mod python;
pub mod report;
pub mod run;
pub mod scratch;
pub mod stall;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use conscope::cli;
use conscope::config::Config;
use conscope::kafka::KafkaError;
use conscope::pipeline::engine::EngineError;
use conscope::runtime::RunError;
use conscope::store::StoreError;

/// Why a benchmark could not produce its figures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Kafka(Box<KafkaError>),
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error(transparent)]
    Prepare(Box<RunError>),
    #[error("the engine failed")]
    Engine(#[source] Box<EngineError>),
    #[error("{what}")]
    Io { what: String, source: std::io::Error },
    #[error("the producer (`conscope-bench produce`) failed: {0}")]
    Producer(String),
    #[error("no progress for {waited:?}: {committed} of {target} events committed")]
    Stuck {
        committed: i64,
        target: i64,
        waited: Duration,
    },
}

// The variants are boxed: the rskafka and tokio-postgres errors are large, and a benchmark
// error is rare and cold.
impl From<KafkaError> for BenchError {
    fn from(e: KafkaError) -> Self {
        Self::Kafka(Box::new(e))
    }
}

impl From<StoreError> for BenchError {
    fn from(e: StoreError) -> Self {
        Self::Store(Box::new(e))
    }
}

impl From<RunError> for BenchError {
    fn from(e: RunError) -> Self {
        Self::Prepare(Box::new(e))
    }
}

impl From<EngineError> for BenchError {
    fn from(e: EngineError) -> Self {
        Self::Engine(Box::new(e))
    }
}

#[global_allocator]
static ALLOC: conscope::alloc::Allocator = conscope::alloc::Allocator;

/// Measure ConScope end to end against the configured broker and Postgres, in a scratch database
/// and topic set (docs/benchmarks.md); `gen` writes a feed file, `cache` measures the price cache.
#[derive(Debug, Parser)]
#[command(name = "conscope-bench", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Configuration file (the broker and Postgres to measure against).
    #[arg(long, global = true, default_value = "config.toml", env = "CONSCOPE_CONFIG")]
    pub config: PathBuf,
    /// Log JSON lines instead of human-readable text (overrides log.format).
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub tool: Option<BenchTool>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchTool {
    /// Write the simulated feed as JSON lines, the input of `conscope replay`.
    Gen(GenArgs),
    /// Measure the price cache's bytes per tracked listing (resident-memory growth).
    Cache(CacheArgs),
    /// Read a topic with variants of the bare rskafka fetch (fetch size, wait, connections),
    /// and with librdkafka, one after another: where the read time goes.
    Fetch(FetchArgs),
    /// The producer child of a run (`conscope simulate` without its progress bar).
    #[command(hide = true)]
    Produce(producer::ProduceArgs),
}

/// The end-to-end run.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Events to produce and consume.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Distinct listings the feed walks over.
    #[arg(long, default_value_t = 100_000)]
    pub listings: u32,
    /// Seed of the feed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Steady mode: produce at this many events per second while the pipeline consumes. Without
    /// it (backlog mode) the whole feed is produced first, then consumed as fast as possible.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Once half of the events are committed, hold `LOCK TABLE price_history` from a separate
    /// connection for SECS seconds and report RSS samples over the run.
    #[arg(long, value_name = "SECS")]
    pub stall_postgres: Option<u64>,
    /// Steady mode only: also tail the topic with a bare consumer and report its produce → fetch
    /// latency, the broker's share of ConScope's produce → commit latency (it adds fetch load).
    #[arg(long, requires = "rate")]
    pub probe_broker: bool,
    /// Print the figures as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// Keep the scratch database (its name is printed). Topics are always kept.
    #[arg(long)]
    pub keep: bool,
    /// Also run tools/bench/python/first_conscope_consumer.py on the same topic (tools/bench/python/setup.sh installs it).
    #[arg(long)]
    pub with_python: bool,
    /// Python interpreter for --with-python.
    #[arg(long, default_value = "tools/bench/python/.venv/bin/python")]
    pub python: PathBuf,
    /// The Python consumer script.
    #[arg(long, default_value = "tools/bench/python/first_conscope_consumer.py")]
    pub python_script: PathBuf,
    /// Skip the librdkafka ceiling (tools/bench/python/bare_consume.py, in the venv of --python).
    #[arg(long)]
    pub no_librdkafka: bool,
    /// The librdkafka ceiling's consumer script.
    #[arg(long, default_value = "tools/bench/python/bare_consume.py")]
    pub ceiling_script: PathBuf,
    /// Seconds the Python consumer may run (it stops earlier when it has read every event).
    #[arg(long, default_value_t = 60)]
    pub python_seconds: u64,
}

impl RunArgs {
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.events == 0 || self.listings == 0 {
            return Err(BenchError::Invalid(
                "--events and --listings must be at least 1".into(),
            ));
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(BenchError::Invalid(
                "--rate must be a positive number of events per second".into(),
            ));
        }
        if self.stall_postgres == Some(0) {
            return Err(BenchError::Invalid(
                "--stall-postgres must be at least 1 second".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Where to write the JSON lines (`-` for stdout).
    #[arg(long, value_name = "PATH")]
    pub to_file: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    #[arg(long, default_value_t = 100_000)]
    pub listings: u32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// The topic to read (e.g. the raw_prices_bench_<id> topic a run left on the broker).
    #[arg(long)]
    pub topic: String,
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Fetch sizes to try, bytes (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1048576")]
    pub max_bytes: Vec<i32>,
    /// Fetch waits to try, ms (comma-separated; default: the configured fetch_max_wait_ms).
    #[arg(long, value_delimiter = ',')]
    pub wait_ms: Vec<i32>,
    /// Also try one connection per partition.
    #[arg(long)]
    pub own_connections: bool,
    /// Rounds over all variants (alternating, as paired runs).
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Python interpreter of the bench venv, for the librdkafka line ("" skips it).
    #[arg(long, default_value = "tools/bench/python/.venv/bin/python")]
    pub python: PathBuf,
    #[arg(long, default_value = "tools/bench/python/bare_consume.py")]
    pub ceiling_script: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CacheArgs {
    #[arg(long, default_value_t = 1_000_000)]
    pub listings: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

fn main() -> ExitCode {
    let cli = match cli::parse::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let config = match cli::load_config(&cli.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match cli::start(&config, cli.log_json) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(command(config, cli.tool, cli.run)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(BenchError::Invalid(why)) => cli::usage_error(&why),
        Err(e) => cli::failure(&e),
    }
}

/// Run `conscope-bench …` and print its figures.
async fn command(config: Config, tool: Option<BenchTool>, run_args: RunArgs) -> Result<(), BenchError> {
    match tool {
        None => {
            let figures = run::run(&config, &run_args).await?;
            report::print_run(&figures, run_args.json)
        }
        Some(BenchTool::Gen(g)) => {
            if g.events == 0 || g.listings == 0 {
                return Err(BenchError::Invalid(
                    "--events and --listings must be at least 1".into(),
                ));
            }
            let mut sim = config.sources.simulated.clone();
            sim.seed = g.seed;
            sim.listings = g.listings;
            let figures =
                conscope::sources::jsonl::write_feed_to(&g.to_file, &sim, g.events).map_err(|source| {
                    BenchError::Io {
                        what: format!("writing {}", g.to_file.display()),
                        source,
                    }
                })?;
            if g.to_file.as_os_str() != "-" {
                eprintln!(
                    "wrote {} events ({} bytes; {} new, {} drops, {} rises, {} unchanged) to {}",
                    figures.events,
                    figures.bytes,
                    figures.new,
                    figures.drops,
                    figures.rises,
                    figures.unchanged,
                    g.to_file.display()
                );
            }
            Ok(())
        }
        Some(BenchTool::Produce(p)) => producer::produce(&config, &p).await,
        Some(BenchTool::Fetch(f)) => fetch_study(&config, &f).await,
        Some(BenchTool::Cache(c)) => {
            if c.listings == 0 {
                return Err(BenchError::Invalid("--listings must be at least 1".into()));
            }
            let figures = cache::measure(c.listings, c.seed);
            report::print_cache(&figures, c.json)
        }
    }
}

/// `conscope-bench fetch`: each variant of the bare fetch, then librdkafka, per round.
async fn fetch_study(config: &Config, args: &FetchArgs) -> Result<(), BenchError> {
    let k = &config.kafka;
    let waits = if args.wait_ms.is_empty() {
        vec![k.fetch_max_wait_ms]
    } else {
        args.wait_ms.clone()
    };
    let mut variants = Vec::new();
    for &max_bytes in &args.max_bytes {
        for &wait_ms in &waits {
            for own_connections in [false, true] {
                if own_connections && !args.own_connections {
                    continue;
                }
                variants.push(fetch::Variant {
                    max_bytes,
                    wait_ms,
                    own_connections,
                });
            }
        }
    }
    println!(
        "load average {:?}; topic {}, {} partitions",
        conscope::usage::load_average(),
        args.topic,
        args.partitions
    );
    for round in 1..=args.rounds {
        for v in &variants {
            let before = conscope::usage::own();
            let f = fetch::bare_fetch_variant(k, &args.topic, args.partitions, *v).await?;
            let cpu = conscope::usage::own().cpu_since(&before);
            println!(
                "round {round} rskafka max_bytes {:>9} wait {:>4} ms {:<22} {:>8.0} records/s  {:>6} fetches  {:>6.0} records/fetch  {:.1} s  CPU {:.2} s",
                v.max_bytes,
                v.wait_ms,
                if v.own_connections {
                    "connection per partition"
                } else {
                    "one connection"
                },
                f.records_per_s,
                f.fetches,
                f.records as f64 / f.fetches.max(1) as f64,
                f.seconds,
                cpu
            );
        }
        if !args.python.as_os_str().is_empty() {
            let c = ceiling::run(
                &args.python,
                &args.ceiling_script,
                k,
                &args.topic,
                args.partitions,
            )
            .await;
            match c.error {
                Some(e) => println!("round {round} librdkafka not measured: {e}"),
                None => println!(
                    "round {round} librdkafka wait {:>4} ms {:>8.0} records/s  ({} records, {:.1} s)",
                    k.fetch_max_wait_ms, c.records_per_s, c.records, c.seconds
                ),
            }
        }
    }
    Ok(())
}
