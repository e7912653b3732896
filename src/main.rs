//! The `conscope` command line. Exit codes: 0 success, 2 usage or configuration error,
//! 1 runtime failure.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use conscope::config::Config;
use conscope::kafka::{self, topics};
use conscope::store::{self, migrate};
use conscope::{cli, runtime, sources};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOC: conscope::alloc::Allocator = conscope::alloc::Allocator;

/// ConScope watches live-event ticket prices and tells people the moment a price drops.
#[derive(Debug, Parser)]
#[command(name = "conscope", version, about, long_about = None)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "config.toml", env = "CONSCOPE_CONFIG")]
    config: PathBuf,
    /// Log JSON lines instead of human-readable text (overrides log.format).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline: sources, ingest, detect, persist, publish (until SIGINT/SIGTERM).
    ///
    /// Applies pending migrations and creates missing topics first.
    Run,
    /// Apply pending database migrations (sql/) and report what was applied.
    Migrate,
    /// Create or list ConScope's Kafka topics.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Validate the configuration and print it with secrets redacted (exit 2 on problems).
    CheckConfig,
    /// Manage watches (user alert rules) and test their channels.
    Watch {
        #[command(subcommand)]
        action: conscope::alert::cli::WatchCommand,
    },
    /// List alert deliveries and put failed ones back to pending (`alerts redeliver`).
    Alerts {
        #[command(subcommand)]
        action: conscope::alert::admin::AlertsCommand,
    },
    /// Produce simulated price observations to raw_prices (deterministic for a seed).
    Simulate {
        /// How many observations to produce.
        #[arg(long)]
        events: u64,
        /// Observations per second; without it, as fast as the broker takes them.
        #[arg(long)]
        rate: Option<f64>,
        /// Seed of the feed: same seed, same listings and price walk.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Distinct listings to walk over (default: sources.simulated.listings).
        #[arg(long)]
        listings: Option<u32>,
    },
    /// Run JSON lines (FILE, or - for stdin with --name) through parse → detect → persist
    /// without Kafka; a re-run under the same name (by default the same file, unchanged)
    /// resumes after its last committed line.
    Replay(conscope::replay::ReplayArgs),
}

#[derive(Debug, Subcommand)]
enum TopicsAction {
    /// Create the configured topics that are missing; report the ones that existed.
    Create,
    /// List every topic on the broker with its partition count.
    List,
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
    if let Command::CheckConfig = cli.command {
        print!("{}", config.redacted_toml());
        eprintln!("configuration OK: {}", cli.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match cli::start(&config, cli.log_json) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(execute(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => cli::failure(e.as_ref()),
    }
}

async fn execute(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let shutdown = CancellationToken::new();
            tokio::spawn(on_signal(shutdown.clone()));
            runtime::run(config, shutdown).await.context("conscope run")?;
        }
        Command::Migrate => {
            let pool = store::pool(&config.postgres)?;
            let mut client = store::client(&pool, &config.postgres).await?;
            let report = migrate::apply(&mut client, migrate::MIGRATIONS).await?;
            for f in &report.already {
                println!("already applied  {f}");
            }
            for f in &report.applied {
                println!("applied          {f}");
            }
        }
        Command::Topics { action } => {
            let client = kafka::connect(&config.kafka).await?;
            match action {
                TopicsAction::Create => {
                    for (name, status) in topics::ensure(&client, &config.kafka).await? {
                        match status {
                            topics::TopicStatus::Created { partitions } => {
                                println!("created  {name} ({partitions} partitions)")
                            }
                            topics::TopicStatus::Existed { partitions } => {
                                println!("existed  {name} ({partitions} partitions)")
                            }
                        }
                    }
                }
                TopicsAction::List => {
                    for (name, partitions) in topics::list(&client, &config.kafka).await? {
                        println!("{name}\t{partitions}");
                    }
                }
            }
        }
        Command::Simulate {
            events,
            rate,
            seed,
            listings,
        } => simulate(config, events, rate, seed, listings).await?,
        Command::Watch { action } => conscope::alert::cli::run(action, &config).await?,
        Command::Alerts { action } => conscope::alert::admin::run(action, &config).await?,
        Command::Replay(args) => conscope::replay::command(config, args)
            .await
            .context("conscope replay")?,
        Command::CheckConfig => unreachable!("handled before the runtime starts"),
    }
    Ok(())
}

async fn simulate(
    config: Config,
    events: u64,
    rate: Option<f64>,
    seed: u64,
    listings: Option<u32>,
) -> anyhow::Result<()> {
    if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        anyhow::bail!("--rate must be a positive number of events per second");
    }
    let mut sim = config.sources.simulated.clone();
    sim.seed = seed;
    if let Some(l) = listings {
        anyhow::ensure!(l > 0, "--listings must be at least 1");
        sim.listings = l;
    }
    let client = kafka::connect(&config.kafka).await?;
    topics::ensure(&client, &config.kafka).await?;
    let bar = indicatif::ProgressBar::new(events);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events · {per_sec} · eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let cancel = CancellationToken::new();
    tokio::spawn(on_signal(cancel.clone()));
    let summary = sources::simulated::produce(&client, &config, &sim, Some(events), rate, &cancel, |s| {
        bar.set_position(s.events)
    })
    .await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "produced {} events to {} ({} new listings, {} drops, {} rises, {} unchanged) in {:.1} s: {:.0} events/s",
        summary.events,
        config.kafka.topics.raw_prices.name,
        summary.new,
        summary.drops,
        summary.rises,
        summary.unchanged,
        secs,
        conscope::rate::Rate::new(summary.events, secs).per_second()
    );
    Ok(())
}

/// Cancel `token` on SIGINT or SIGTERM.
async fn on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested: draining and committing");
    token.cancel();
}
