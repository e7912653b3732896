//! `conscope replay FILE`: JSON lines through the engine's parse → detect → persist path without
//! Kafka, for backfills and for measuring ConScope without the broker.
//!
//! ```text
//!  FILE or stdin ──► reader thread: parse · detect (price cache warm-started from listing_state)
//!                                   · windows (open ones rebuilt from price_history)
//!                        ▼ mpsc<ReplayBatch> (cap 2)
//!                    history writer: ONE transaction per batch: events · COPY price_history ·
//!                            the windows the batch closed and the file's watermark ·
//!                            the history offset
//!                        ▼ mpsc (cap 1), each batch once committed
//!                    state writer (state.rs, a second connection): folds --state-records into
//!                            ONE transaction: listing_state (each listing once) ·
//!                            price_alerts · the state offset
//!  then, with --compare-copy only: bare COPYs of the same rows into a scratch table, without
//!  and with price_history's foreign key
//! ```
//!
//! **Two writers.** The engine writes a batch's listing state and alerts in the batch's own
//! transaction. A replay has no broker to wait for, and one Postgres backend writing the
//! history, the alerts and the listing state one after the other was its whole bound, so the
//! listing state and the alerts go to a second backend, written for many batches at once: a
//! listing they touch many times is rewritten once. The state writer keeps the alerts as rows
//! ([`writer::AlertRows`]), not as events.
//!
//! **The offset rule.** An input is a partition of its own: its name (`--name`, by default the
//! file's canonical path and size; stdin must be named) gives the consumer `replay:<name>`,
//! stored in `kafka_offsets`, and its rows
//! carry a synthetic negative `kafka_partition` derived from that consumer name, with the 0-based
//! line number as `kafka_offset`. Each writer stores the next line number in the same
//! transaction as its rows: the history writer under topic `replay`, the state writer under
//! `replay_state` (partition 0). The state writer takes a batch only after the history writer
//! has committed it, so its offset is never ahead. A re-run of the same file starts reading at
//! the state offset: lines up to the history offset are detected again only to write the listing
//! state and alerts they are missing (their history and windows are stored; alerts are inserted
//! `ON CONFLICT DO NOTHING` in any case), so no row is doubled and no observation lost. A file
//! that grew, was moved or was replaced has another default name and counts as a new input;
//! replayed under its old `--name`, only the lines appended since are stored. Nothing is produced to
//! Kafka. Until a stopped replay is run again, listing_state and price_alerts lack at most its
//! last `--state-records` records.
//!
//! **Beside the engine.** A backfill of older history running beside the engine never rewinds
//! live state: the cache is warm-started from listing_state, so a line older than its listing's
//! last observation is stored as `out_of_order` and moves nothing, and the `listing_state`
//! upsert itself keeps a stored row whose `last_seen` is newer (for listings the engine saw
//! after the replay started).
//!
//! **Windows.** A file keeps windows of its own, as an engine instance does: written with the
//! file's partition as their `instance` (negative, never an engine's), with a watermark of their
//! own in window_progress, and summed with the engine's by the web layer. At the end of the file
//! every open window is written; a later run of the grown file merges records that fall into a
//! written window (`windows.late_records`), as the engine does with late records.

pub mod copy;
pub mod reader;
mod state;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::kafka::produce::partition_for;
use crate::pipeline::detect::stage::Detector;
use crate::pipeline::detect::windows;
use crate::pipeline::detect::{PriceCache, Rules};
use crate::pipeline::ingest::parse::Parser;
use crate::pipeline::persist::windows as persist_windows;
use crate::pipeline::persist::writer;
use crate::rate::Rate;
use crate::store::{self, StoreError, migrate, offsets, warm};
use crate::usage;
use copy::Ceilings;
use reader::{ReplayBatch, Resume};
use state::{StateFigures, write_states};

/// The `topic` of replay offsets in `kafka_offsets`: the history writer's.
pub const REPLAY_TOPIC: &str = "replay";
/// The `topic` of the state writer's replay offsets in `kafka_offsets`.
pub const REPLAY_STATE_TOPIC: &str = "replay_state";
/// Batches waiting for the writer: the reader stays at most this far ahead.
const CHANNEL_CAPACITY: usize = 2;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// JSON lines, one PriceEvent (the raw_prices wire format) per line; `-` reads stdin (and
    /// then needs --name).
    pub file: PathBuf,
    /// The name the input's progress is stored under: a re-run with the same name resumes after
    /// its last committed line. Default: the file's full canonical path and its size, so another
    /// file, or this one grown, is a new input; give the same name to a file that grew to store
    /// only its new lines. Required for stdin.
    #[arg(long, required_if_eq("file", "-"))]
    pub name: Option<String>,
    /// Records per Postgres transaction of the history writer.
    #[arg(long, default_value_t = 20_000)]
    pub batch_records: usize,
    /// Records folded into each transaction of the state writer (listing_state and alerts): each
    /// listing's row is written once per this many records, and listing_state and price_alerts
    /// lag the history by at most this many during the replay.
    #[arg(long, default_value_t = 480_000)]
    pub state_records: usize,
    /// After the replay, COPY the same rows into a scratch table without and with
    /// price_history's foreign key, and report ConScope's rate against those ceilings.
    #[arg(long)]
    pub compare_copy: bool,
    /// Rows of the `--compare-copy` comparison (it holds them in memory).
    #[arg(long, default_value_t = 1_000_000, requires = "compare_copy")]
    pub baseline_rows: u64,
    /// Print the figures as one JSON document (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// Where a replayed file's rows and offsets go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySource {
    pub name: String,
    pub consumer: String,
    /// Negative, so it never meets a Kafka partition in price_history's unique key.
    pub partition: i32,
}

/// Where `file`'s rows go: under `name` when given, else under the file's canonical path and
/// size. Stdin has neither, so it needs a name.
pub fn source_of(file: &Path, name: Option<&str>) -> Result<ReplaySource, ReplayError> {
    let name = match name {
        Some(name) if name.trim().is_empty() => {
            return Err(ReplayError::Invalid("--name must not be empty".into()));
        }
        Some(name) => name.to_string(),
        None if file == Path::new("-") => {
            return Err(ReplayError::Invalid(
                "reading stdin needs --name: the name a re-run resumes under".into(),
            ));
        }
        None => default_name(file)?,
    };
    Ok(ReplaySource::named(name))
}

/// `<canonical path> (<size> bytes)`.
fn default_name(file: &Path) -> Result<String, ReplayError> {
    let io = |source| ReplayError::Io {
        what: format!("opening {}", file.display()),
        source,
    };
    let path = std::fs::canonicalize(file).map_err(io)?;
    let size = std::fs::metadata(&path).map_err(io)?.len();
    Ok(format!("{} ({size} bytes)", path.display()))
}

impl ReplaySource {
    fn named(name: String) -> Self {
        let consumer = format!("replay:{name}");
        let partition = -1 - partition_for(consumer.as_bytes(), i32::MAX as usize - 1) as i32;
        Self {
            name,
            consumer,
            partition,
        }
    }
}

/// What one replay did and measured.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayFigures {
    pub file: String,
    pub consumer: String,
    pub partition: i32,
    /// The line the run started from (lines before it were stored by an earlier run).
    pub start_line: i64,
    pub lines: u64,
    pub already_stored: u64,
    /// Lines whose history was stored but whose listing state was not, when the run before
    /// stopped: read again only to write the state.
    pub state_caught_up: u64,
    pub blank: u64,
    pub invalid: u64,
    pub rows_written: u64,
    pub alerts: u64,
    pub batches: u64,
    pub seconds: f64,
    /// Rows written per second, from the first line read to the last commit.
    pub events_per_s: f64,
    pub parse_detect_seconds: f64,
    /// Seconds inside the history writer's transactions (events, price_history, windows).
    pub write_seconds: f64,
    pub state_transactions: u64,
    /// Seconds inside the state writer's transactions (listing_state, price_alerts), on a
    /// second connection alongside the history writer.
    pub state_write_seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    /// Bare COPYs of the same rows: as the issue defines it, and with the foreign key.
    pub bare_copy: Option<Ceilings>,
    /// ConScope's events/s over the bare COPY's rows/s (no foreign key, the issue's target).
    pub ratio_to_bare_copy: Option<f64>,
    /// The same over the bare COPY with the foreign key.
    pub ratio_to_bare_copy_with_fk: Option<f64>,
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
}

fn open(file: &Path) -> Result<(Box<dyn BufRead + Send>, Option<u64>), ReplayError> {
    if file == Path::new("-") {
        return Ok((
            Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin())),
            None,
        ));
    }
    let f = std::fs::File::open(file).map_err(|source| ReplayError::Io {
        what: format!("opening {}", file.display()),
        source,
    })?;
    let len = f.metadata().ok().map(|m| m.len());
    Ok((Box::new(std::io::BufReader::with_capacity(1 << 20, f)), len))
}

fn progress_bar(len: Option<u64>, hidden: bool) -> indicatif::ProgressBar {
    match len {
        _ if hidden => indicatif::ProgressBar::hidden(),
        Some(len) => indicatif::ProgressBar::new(len).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} · {msg} · eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    }
}

/// Replay `args.file` into the configured database.
pub async fn run(cfg: &Config, args: &ReplayArgs) -> Result<ReplayFigures, ReplayError> {
    if args.batch_records == 0 {
        return Err(ReplayError::Invalid("--batch-records must be at least 1".into()));
    }
    if args.state_records == 0 {
        return Err(ReplayError::Invalid("--state-records must be at least 1".into()));
    }
    let load_before = usage::load_average();
    let source = source_of(&args.file, args.name.as_deref())?;
    // Two writers, two connections, whatever the engine's pool size.
    let mut pg = cfg.postgres.clone();
    pg.pool_size = pg.pool_size.max(2);
    let pool = store::pool(&pg)?;
    let mut client = store::client(&pool, &cfg.postgres).await?;
    migrate::apply(&mut client, migrate::MIGRATIONS).await?;
    let stored = |topic| {
        let client = &client;
        let consumer = &source.consumer;
        async move {
            let offsets = offsets::load(client, consumer, topic).await?;
            Ok::<_, StoreError>(offsets.get(&0).map(|(next, _)| *next))
        }
    };
    let history = stored(REPLAY_TOPIC).await?.unwrap_or(0);
    let state = match stored(REPLAY_STATE_TOPIC).await? {
        Some(state) => state,
        None => {
            // A new file, or one stored before the writers were split (when its state was
            // written with its history): the state is as far as the history.
            let tx = client.transaction().await.map_err(StoreError::query("begin"))?;
            let at = BTreeMap::from([(0, history)]);
            offsets::store_offsets(&tx, &source.consumer, REPLAY_STATE_TOPIC, &at).await?;
            tx.commit().await.map_err(StoreError::query("commit"))?;
            history
        }
    };
    let resume = Resume::new(history, state);
    let start = resume.start;
    let cache = Arc::new(PriceCache::new());
    let listings = warm::listing_states(&client, |key, state| cache.load(key, state)).await?;
    let instance = source.partition;
    let (mut file_windows, _) = windows::resume(&client, &cfg.windows, instance, &[instance]).await?;
    tracing::info!(
        file = source.name,
        consumer = source.consumer,
        start_line = start,
        history_from = resume.history_from,
        listings,
        "replay started"
    );

    let state_client = store::client(&pool, &pg).await?;
    let (input, len) = open(&args.file)?;
    let bar = progress_bar(len, args.json);
    let detector = Detector::new(cache, Rules::from_config(&cfg.detect));
    let (tx, mut rx) = mpsc::channel::<ReplayBatch>(CHANNEL_CAPACITY);
    let before = usage::own();
    let started = Instant::now();
    let (partition, batch_records) = (source.partition, args.batch_records);
    let max_future_skew = cfg.ingest.max_future_skew;
    let reading = tokio::task::spawn_blocking(move || {
        reader::read(
            input,
            Parser::with_max_future_skew(max_future_skew),
            (resume, partition),
            &detector,
            &mut file_windows,
            batch_records,
            &tx,
        )
    });

    // The state writer: a second connection, so listing_state and the alerts are written on a
    // second Postgres backend while the history writer copies the next batches.
    let (to_state, from_history) = mpsc::channel::<ReplayBatch>(1);
    let consumer = source.consumer.clone();
    let state_writer = tokio::spawn(write_states(
        state_client,
        consumer,
        args.state_records,
        from_history,
    ));

    let (mut rows, mut alerts, mut batches, mut write_seconds) = (0u64, 0u64, 0u64, 0.0);
    let mut end = resume.history_from;
    let written: Result<(), StoreError> = async {
        while let Some(batch) = rx.recv().await {
            if !batch.state_only {
                let began = Instant::now();
                let tx = client.transaction().await.map_err(StoreError::query("begin"))?;
                writer::write_history(&tx, &batch.records, &batch.alerts).await?;
                let next = BTreeMap::from([(0, batch.next_offset)]);
                offsets::store_offsets(&tx, &source.consumer, REPLAY_TOPIC, &next).await?;
                let w = &batch.windows;
                persist_windows::upsert(&tx, instance, &w.closed).await?;
                if !w.late.is_empty() {
                    persist_windows::recompute(&tx, instance, &[instance], &w.late).await?;
                }
                if let Some(wm) = w.watermark {
                    persist_windows::store_watermark(&tx, instance, wm).await?;
                }
                tx.commit().await.map_err(StoreError::query("commit"))?;
                write_seconds += began.elapsed().as_secs_f64();
                rows += batch.records.len() as u64;
                alerts += batch.alerts.len() as u64;
                batches += 1;
                end = batch.next_offset;
            }
            bar.set_position(batch.bytes_read);
            bar.set_message(format!("{rows} rows · {alerts} alerts"));
            if to_state.send(batch).await.is_err() {
                // The state writer failed: its error is reported below.
                break;
            }
        }
        Ok(())
    }
    .await;
    // On a write error the channels close and the reader stops at its next send.
    drop(rx);
    drop(to_state);
    let summary = reading
        .await
        .map_err(|e| ReplayError::Invalid(format!("the reader thread failed: {e}")))?
        .map_err(|source| ReplayError::Io {
            what: format!("reading {}", args.file.display()),
            source,
        })?;
    let state = state_writer
        .await
        .map_err(|e| ReplayError::Invalid(format!("the state writer failed: {e}")))?;
    written?;
    let StateFigures {
        transactions: state_transactions,
        seconds: state_write_seconds,
    } = state?;
    let seconds = started.elapsed().as_secs_f64();
    let after = usage::own();
    bar.finish_and_clear();

    let bare_copy = if rows > 0 && args.compare_copy && args.baseline_rows > 0 {
        let from = resume.history_from;
        Some(copy::ceilings(&client, source.partition, from, end, args.baseline_rows).await?)
    } else {
        None
    };
    let events_per_s = Rate::new(rows, seconds).per_second();
    Ok(ReplayFigures {
        file: args.file.display().to_string(),
        consumer: source.consumer,
        partition: source.partition,
        start_line: start,
        lines: summary.lines,
        already_stored: summary.already_stored,
        state_caught_up: summary.state_caught_up,
        blank: summary.blank,
        invalid: summary.invalid,
        rows_written: rows,
        alerts,
        batches,
        seconds,
        events_per_s,
        parse_detect_seconds: summary.parse_detect_seconds,
        write_seconds,
        state_transactions,
        state_write_seconds,
        cpu_seconds: after.cpu_since(&before),
        peak_rss_mib: usage::mib(after.max_rss_kib),
        ratio_to_bare_copy: bare_copy
            .as_ref()
            .map(|c| events_per_s / c.bare.rows_per_s.max(1e-9)),
        ratio_to_bare_copy_with_fk: bare_copy
            .as_ref()
            .map(|c| events_per_s / c.with_foreign_key.rows_per_s.max(1e-9)),
        bare_copy,
        load_before,
        load_after: usage::load_average(),
    })
}

/// Run `conscope replay` and print its figures.
pub async fn command(cfg: Config, args: ReplayArgs) -> Result<(), ReplayError> {
    let f = run(&cfg, &args).await?;
    if args.json {
        let text = serde_json::to_string_pretty(&f).map_err(|e| ReplayError::Invalid(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "replayed {} ({}): {} lines from line {}, {} already stored, {} blank, {} invalid",
        f.file, f.consumer, f.lines, f.start_line, f.already_stored, f.blank, f.invalid
    );
    if f.state_caught_up > 0 {
        println!(
            "                  {} lines read again to bring listing_state and alerts up to the stored history",
            f.state_caught_up
        );
    }
    println!(
        "into Postgres     {:>10.0} events/s   ({} rows, {} alerts, {} + {} transactions in {:.1} s; \
         parse+detect {:.1} s, history writes {:.1} s, state writes {:.1} s)",
        f.events_per_s,
        f.rows_written,
        f.alerts,
        f.batches,
        f.state_transactions,
        f.seconds,
        f.parse_detect_seconds,
        f.write_seconds,
        f.state_write_seconds
    );
    if let Some(c) = &f.bare_copy {
        println!(
            "bare COPY         {:>10.0} rows/s     ({} rows, {:.1} MB in {:.1} s; three indexes): ConScope at {:.2}x",
            c.bare.rows_per_s,
            c.bare.rows,
            c.bare.bytes as f64 / 1e6,
            c.bare.seconds,
            f.ratio_to_bare_copy.unwrap_or(0.0)
        );
        println!(
            "bare COPY + FK    {:>10.0} rows/s     (the same with price_history's foreign key to events): ConScope at {:.2}x",
            c.with_foreign_key.rows_per_s,
            f.ratio_to_bare_copy_with_fk.unwrap_or(0.0)
        );
    }
    println!(
        "CPU {:.1} s · peak RSS {:.1} MiB · load average {:.2} before, {:.2} after",
        f.cpu_seconds, f.peak_rss_mib, f.load_before[0], f.load_after[0]
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_named_by_its_canonical_path_and_size_and_gets_a_stable_negative_partition() {
        let dir = std::env::temp_dir().join(format!("conscope_replay_name_{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).expect("dir");
            std::fs::write(d.join("feed.jsonl"), "{}\n").expect("file");
        }
        let in_a = source_of(&a.join("feed.jsonl"), None).expect("named");
        let via_dots = source_of(&a.join("../a/feed.jsonl"), None).expect("named");
        let in_b = source_of(&b.join("feed.jsonl"), None).expect("named");
        assert_eq!(in_a, via_dots, "the path is canonical");
        assert_ne!(
            in_a.consumer, in_b.consumer,
            "same basename, other folder: another input"
        );
        assert_ne!(in_a.partition, in_b.partition);
        assert!(in_a.partition < 0 && in_b.partition < 0);
        let canonical = std::fs::canonicalize(a.join("feed.jsonl")).expect("canonical");
        assert_eq!(in_a.consumer, format!("replay:{} (3 bytes)", canonical.display()));
        std::fs::write(a.join("feed.jsonl"), "{}\n{}\n").expect("grow");
        assert_ne!(
            source_of(&a.join("feed.jsonl"), None).expect("named"),
            in_a,
            "a grown file is a new input unless named"
        );
        let named = source_of(&a.join("feed.jsonl"), Some("nov")).expect("named");
        assert_eq!(
            named,
            source_of(&b.join("feed.jsonl"), Some("nov")).expect("named")
        );
        assert_eq!(named.consumer, "replay:nov");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn stdin_needs_a_name() {
        assert!(matches!(
            source_of(Path::new("-"), None),
            Err(ReplayError::Invalid(_))
        ));
        assert!(matches!(
            source_of(Path::new("-"), Some(" ")),
            Err(ReplayError::Invalid(_))
        ));
        assert_eq!(
            source_of(Path::new("-"), Some("feed")).expect("named").consumer,
            "replay:feed"
        );
    }
}
