//! `conscope watch add|list|remove|test`: managing watches from the command line, and sending a
//! real test message to a watch's channel that reports the real HTTP answer (a 404 is a
//! failure, never a success).

use std::time::Duration;

use anyhow::{Context, bail, ensure};

use super::notifiers::Outcome;
use super::rules::Trigger;
use super::watch::{self, NewWatch};
use super::{queue, task};
use crate::config::Config;
use crate::model::Cents;
use crate::store::{self, migrate};

// Parsed once per process: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, clap::Subcommand)]
pub enum WatchCommand {
    /// Add a watch: which event, which trigger, which channel.
    ///
    /// First sighting: when the watch first sees a listing and its trigger already holds (say,
    /// the price is already below the target), `--first-sight notify` (the default) sends a
    /// message; `skip` stays quiet until the price falls further or the cooldown passes.
    Add(AddArgs),
    /// List every watch.
    List,
    /// Remove a watch (its past deliveries stay recorded).
    Remove {
        /// The watch id, as `watch list` shows it.
        id: i64,
    },
    /// Send a real test message to the watch's channel and report the HTTP answer.
    Test {
        /// The watch id, as `watch list` shows it.
        id: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TriggerArg {
    /// The price is at or below --target.
    AtOrBelow,
    /// The price dropped at least --percent from the listing's previous price.
    DropPercent,
    /// The price is at least --percent below the listing's lowest of the last --lookback-days.
    DropVsLow,
    /// A new all-time low for the listing.
    NewLowListing,
    /// A new all-time low for the event (over all its listings).
    NewLowEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FirstSight {
    Notify,
    Skip,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The event id to watch.
    #[arg(long, required_unless_present = "event_name", conflicts_with = "event_name")]
    pub event_id: Option<String>,
    /// Or a pattern of event names: `*` and `?` wildcards match the whole name; plain text
    /// matches names containing it (case-insensitive).
    #[arg(long)]
    pub event_name: Option<String>,
    #[arg(long, value_enum)]
    pub trigger: TriggerArg,
    /// Target price in dollars (at-or-below).
    #[arg(long)]
    pub target: Option<f64>,
    /// Drop in percent (drop-percent, drop-vs-low).
    #[arg(long)]
    pub percent: Option<f64>,
    /// Days the lowest price is taken over (drop-vs-low).
    #[arg(long, default_value_t = 30)]
    pub lookback_days: i32,
    /// The channel to notify: a name in [alert.notifiers].
    #[arg(long)]
    pub channel: String,
    /// Only listings in this section.
    #[arg(long)]
    pub section: Option<String>,
    /// Only listings in this row or nearer (numbers as numbers, letters as letters).
    #[arg(long)]
    pub max_row: Option<String>,
    /// Only listings priced at most this many dollars.
    #[arg(long)]
    pub max_price: Option<f64>,
    /// Whether a first sighting whose trigger already holds notifies.
    #[arg(long, value_enum, default_value = "notify")]
    pub first_sight: FirstSight,
    /// After notifying, stay quiet for this long unless the price falls below the notified one.
    #[arg(long, default_value = "6h", value_parser = humantime::parse_duration)]
    pub cooldown: Duration,
    /// Whose watch this is (free text).
    #[arg(long)]
    pub user: Option<String>,
}

fn dollars_arg(v: Option<f64>, flag: &str) -> anyhow::Result<Option<i64>> {
    v.map(|d| {
        Cents::from_dollars(d)
            .map(|c| c.0)
            .filter(|c| *c > 0)
            .with_context(|| format!("{flag} must be a positive amount of dollars"))
    })
    .transpose()
}

fn new_watch(a: AddArgs, cfg: &Config) -> anyhow::Result<NewWatch> {
    if !cfg.alert.notifiers.contains_key(&a.channel) {
        let known: Vec<&str> = cfg.alert.notifiers.keys().map(String::as_str).collect();
        bail!(
            "channel `{}` is not in [alert.notifiers] of the configuration (configured: {})",
            a.channel,
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    let percent = || -> anyhow::Result<f64> {
        let p = a.percent.context("this trigger needs --percent")?;
        ensure!(p > 0.0 && p < 100.0, "--percent must be between 0 and 100");
        Ok(p)
    };
    let trigger = match a.trigger {
        TriggerArg::AtOrBelow => Trigger::AtOrBelow {
            target: dollars_arg(a.target, "--target")?.context("at-or-below needs --target")?,
        },
        TriggerArg::DropPercent => Trigger::DropPercent { percent: percent()? },
        TriggerArg::DropVsLow => {
            ensure!(a.lookback_days >= 1, "--lookback-days must be at least 1");
            Trigger::DropVsLow {
                percent: percent()?,
                lookback_days: a.lookback_days,
            }
        }
        TriggerArg::NewLowListing => Trigger::NewLowListing,
        TriggerArg::NewLowEvent => Trigger::NewLowEvent,
    };
    let cooldown_seconds =
        i32::try_from(a.cooldown.as_secs()).context("--cooldown must be shorter than 68 years")?;
    Ok(NewWatch {
        user_id: a.user,
        event_id: a.event_id,
        event_name_pattern: a.event_name,
        section: a.section,
        max_row: a.max_row,
        max_price: dollars_arg(a.max_price, "--max-price")?,
        trigger,
        channel: a.channel,
        notify_on_first_sight: a.first_sight == FirstSight::Notify,
        cooldown_seconds,
    })
}

/// Run one `conscope watch` command, printing its result.
pub async fn run(command: WatchCommand, cfg: &Config) -> anyhow::Result<()> {
    let pool = store::pool(&cfg.postgres)?;
    let mut client = store::client(&pool, &cfg.postgres).await?;
    migrate::apply(&mut client, migrate::MIGRATIONS).await?;
    match command {
        WatchCommand::Add(args) => {
            let w = new_watch(args, cfg)?;
            let id = watch::insert(&**client, &w).await?;
            let added = watch::get(&**client, id)
                .await?
                .context("the watch just added cannot be read back")?;
            println!("added {}", added.describe());
            if !cfg.alert.enabled {
                eprintln!("note: alert.enabled is false: `conscope run` will not evaluate watches");
            }
        }
        WatchCommand::List => {
            println!("id\tactive\tchannel\tfirst_sight\tcooldown\tlast_triggered\tevent\trule");
            for row in watch::load_all(&**client).await? {
                match row {
                    Ok(w) => println!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        w.id,
                        w.active,
                        w.channel,
                        if w.notify_on_first_sight { "notify" } else { "skip" },
                        humantime::format_duration(Duration::from_secs(w.cooldown_seconds.max(0) as u64)),
                        w.last_triggered.map_or("-".to_string(), |t| t.to_rfc3339()),
                        w.event_id
                            .clone()
                            .or(w.event_name_pattern.clone().map(|p| format!("name ~ {p}")))
                            .unwrap_or_default(),
                        w.describe(),
                    ),
                    Err((id, why)) => println!("{id}\t(unusable: {why})"),
                }
            }
        }
        WatchCommand::Remove { id } => {
            ensure!(watch::remove(&**client, id).await?, "no watch {id}");
            println!("removed watch {id}");
        }
        WatchCommand::Test { id } => {
            let w = watch::get(&**client, id)
                .await?
                .with_context(|| format!("no watch {id}"))?;
            let http = task::http_client(cfg)?;
            let n = task::notifier(cfg, &w.channel, http)?;
            let reply = n.send_test(&w.describe()).await;
            let said = reply.outcome.describe();
            let target = format!(
                "channel `{}` ({}, {})",
                w.channel,
                n.kind.as_str(),
                n.redacted_url()
            );
            match reply.outcome {
                Outcome::Sent { .. } => {
                    println!("test message to {target}: {said}");
                    if queue::enable(&**client, &w.channel).await? {
                        println!(
                            "channel `{}` was disabled after a 404; it is enabled again",
                            w.channel
                        );
                    }
                }
                _ => bail!("test message to {target} failed: {said}"),
            }
        }
    }
    Ok(())
}
