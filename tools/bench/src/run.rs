//! One end-to-end run: produce the feed, run the engine in-process until every event is
//! committed, then measure the bare fetch of the same topic (and, when asked, the first
//! ConScope's Python consumer on it).
//!
//! ```text
//!  backlog mode:  simulate (child) ──► raw_prices ──┐ then
//!                                                   ▼
//!                 engine (in-process: ingest → detect → persist → publish) until committed = N
//!  steady mode:   simulate --rate R (child) ──► raw_prices ──► engine, concurrently
//!  then:          bare rskafka fetch of raw_prices · Python consumer (--with-python)
//! ```
//!
//! The engine runs with its own [`Metrics`], so the produce → commit histogram and the committed
//! offsets are read directly; CPU is `getrusage` of this process over the pipeline phase only
//! (the producer is another process).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::ceiling::{self, CeilingFigures};
use crate::fetch::{self, FetchFigures};
use crate::producer::{ProduceFigures, Producer};
use crate::python::{self, PythonFigures};
use crate::scratch::Scratch;
use crate::stall::{self, StallWindow};
use crate::{BenchError, RunArgs};
use conscope::app::App;
use conscope::pipeline::engine;
use conscope::rate::Rate;
use conscope::store::{self, StoreError};
use conscope::usage::{self, RssSample};

/// How often the committed offsets are checked.
const POLL: Duration = Duration::from_millis(10);
/// How often RSS is sampled during the pipeline phase.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// A run that commits nothing for this long (plus any stall) is stuck.
const NO_PROGRESS_LIMIT: Duration = Duration::from_secs(120);

/// Produce → commit latency, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub count: u64,
}

/// The pipeline phase.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineFigures {
    pub seconds: f64,
    /// Events committed per second, end to end.
    pub events_per_s: f64,
    /// price_history rows in the database after the run.
    pub rows_persisted: i64,
    pub rows_per_s: f64,
    /// listing_state rows (one per listing) after the run.
    pub listing_state_rows: i64,
    /// Alerts the detector raised, and the price_alerts rows stored.
    pub alerts_raised: u64,
    pub alert_rows: i64,
    pub latency: Latency,
    /// Produce → fetch latency of a bare consumer tailing the topic meanwhile (--probe-broker):
    /// the broker's share of `latency`.
    pub broker_latency: Option<Latency>,
    /// CPU seconds of this process over the pipeline phase (user + system).
    pub cpu_seconds: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cores_used: f64,
    /// Peak RSS of this process (`ru_maxrss`, whole process lifetime), MiB.
    pub peak_rss_mib: f64,
    pub rss_end_mib: f64,
    /// Price cache entries at the end.
    pub cached_listings: usize,
}

/// Everything one `conscope-bench` run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchFigures {
    /// `backlog` (the feed is produced first) or `steady` (produced at `--rate` meanwhile).
    pub mode: &'static str,
    pub events: u64,
    pub listings: u32,
    pub partitions: i32,
    pub produce: ProduceFigures,
    pub pipeline: PipelineFigures,
    pub bare_fetch: FetchFigures,
    /// ConScope's end-to-end events/s over the bare fetch's records/s.
    pub ratio_to_bare_fetch: f64,
    /// A bare librdkafka consume of the same topic (unless --no-librdkafka).
    pub librdkafka: Option<CeilingFigures>,
    /// ConScope's end-to-end events/s over librdkafka's records/s, when it was measured.
    pub ratio_to_librdkafka: Option<f64>,
    pub stall: Option<StallFigures>,
    pub python: Option<PythonFigures>,
    /// Load averages (1, 5, 15 min) before and after.
    pub load_before: [f64; 3],
    pub load_after: [f64; 3],
    pub database: String,
    pub raw_topic: String,
    pub kept: bool,
    pub cleanup_problems: Vec<String>,
}

/// RSS while Postgres was held stalled.
#[derive(Debug, Clone, Serialize)]
pub struct StallFigures {
    pub seconds: u64,
    pub window: Option<StallWindow>,
    pub rss_before_mib: f64,
    pub rss_max_during_mib: f64,
    pub rss_last_during_mib: f64,
    pub samples: Vec<RssSample>,
}

/// Run the benchmark in a scratch database and topic set, removing both afterwards.
pub async fn run(base: &conscope::config::Config, args: &RunArgs) -> Result<BenchFigures, BenchError> {
    args.validate()?;
    let load_before = usage::load_average();
    let scratch = Scratch::create(base).await?;
    let result = measure(&scratch, args, load_before).await;
    let database = scratch.database.clone();
    let problems = scratch.remove(args.keep).await;
    let mut figures = result?;
    figures.database = database;
    figures.kept = args.keep;
    figures.cleanup_problems = problems;
    Ok(figures)
}

async fn measure(
    scratch: &Scratch,
    args: &RunArgs,
    load_before: [f64; 3],
) -> Result<BenchFigures, BenchError> {
    let cfg = Arc::new(scratch.cfg.clone());
    let partitions = cfg.kafka.topics.raw_prices.partitions;
    let mut produced = match args.rate {
        None => Some(Producer::start(scratch, args, None)?.finish().await?),
        Some(_) => None,
    };

    let ctx = App::new(cfg.clone(), scratch.pool.clone(), scratch.kafka.clone());
    let (metrics, cache) = (ctx.metrics.clone(), ctx.cache.clone());
    let token = CancellationToken::new();
    // Cancel the engine on every way out of this function, errors included.
    let _stop = token.clone().drop_guard();
    let before = usage::own();
    let started = Instant::now();
    let mut engine_task = tokio::spawn(engine::run(ctx, token.clone()));
    let stop_probe = CancellationToken::new();
    let _stop_probe = stop_probe.clone().drop_guard();
    let probe = (args.probe_broker && args.rate.is_some()).then(|| {
        let (kafka, kcfg, topic) = (
            scratch.kafka.clone(),
            cfg.kafka.clone(),
            cfg.kafka.topics.raw_prices.name.clone(),
        );
        let stop = stop_probe.clone();
        tokio::spawn(async move { fetch::tail_latency(&kafka, &kcfg, &topic, partitions, stop).await })
    });
    let mut producer = match args.rate {
        Some(r) => Some(Producer::start(scratch, args, Some(r))?),
        None => None,
    };

    let target = args.events as i64;
    let stalled = Arc::new(AtomicBool::new(false));
    let mut stall_task = None;
    let mut samples = Vec::new();
    let mut next_sample = started;
    let (mut last_committed, mut last_progress) = (0i64, Instant::now());
    let limit = NO_PROGRESS_LIMIT + Duration::from_secs(args.stall_postgres.unwrap_or(0));
    loop {
        let committed: i64 = (0..partitions)
            .map(|p| metrics.partition(p).committed.load(Relaxed))
            .sum();
        let now = Instant::now();
        if now >= next_sample {
            samples.push(RssSample {
                t_s: started.elapsed().as_secs_f64(),
                rss_mib: usage::mib(usage::rss_kib()),
                committed,
                stalled: stalled.load(Relaxed),
            });
            next_sample += SAMPLE_EVERY;
        }
        if committed >= target {
            break;
        }
        if committed > last_committed {
            (last_committed, last_progress) = (committed, now);
        } else if now - last_progress > limit {
            return Err(BenchError::Stuck {
                committed,
                target,
                waited: limit,
            });
        }
        if engine_task.is_finished() {
            return Err(match (&mut engine_task).await {
                Ok(Err(e)) => e.into(),
                Ok(Ok(())) => {
                    BenchError::Invalid("the engine stopped before every event was committed".into())
                }
                Err(e) => BenchError::Invalid(format!("the engine task failed: {e}")),
            });
        }
        // A failed producer cannot deliver the rest: say why instead of waiting.
        if producer.as_ref().is_some_and(Producer::is_finished)
            && let Some(p) = producer.take()
        {
            produced = Some(p.finish().await?);
        }
        if let Some(secs) = args.stall_postgres
            && stall_task.is_none()
            && committed >= target / 2
        {
            stall_task = Some(tokio::spawn(stall::hold_history_lock(
                cfg.postgres.url.clone(),
                Duration::from_secs(secs),
                stalled.clone(),
                started,
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = usage::own();
    let rss_end_mib = usage::mib(usage::rss_kib());
    stop_probe.cancel();
    let broker_latency = match probe {
        Some(task) => {
            Some(latency_of(&task.await.map_err(|e| {
                BenchError::Invalid(format!("the broker probe failed: {e}"))
            })??))
        }
        None => None,
    };

    // Drain and stop the engine (publish finishes what committed), then the producer.
    token.cancel();
    match engine_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => return Err(BenchError::Invalid(format!("the engine task failed: {e}"))),
    }
    if let Some(p) = producer.take() {
        produced = Some(p.finish().await?);
    }
    let window = match stall_task {
        Some(task) => Some(
            task.await
                .map_err(|e| BenchError::Invalid(format!("the stall task failed: {e}")))??,
        ),
        None => None,
    };

    let db = store::client(&scratch.pool, &cfg.postgres).await?;
    let count = |sql: &'static str| {
        let db = &db;
        async move {
            db.query_one(sql, &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .map_err(StoreError::query("count benchmark rows"))
        }
    };
    let rows_persisted = count("SELECT count(*) FROM price_history").await?;
    let listing_state_rows = count("SELECT count(*) FROM listing_state").await?;
    let alert_rows = count("SELECT count(*) FROM price_alerts").await?;
    drop(db);

    let h = metrics.latency_histogram();
    let ms = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1e3
        }
    };
    let latency = Latency {
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: if h.is_empty() { 0.0 } else { h.max() as f64 / 1e3 },
        count: h.len(),
    };
    let cpu_seconds = after.cpu_since(&before);
    let pipeline = PipelineFigures {
        seconds,
        events_per_s: Rate::new(args.events, seconds).per_second(),
        rows_persisted,
        rows_per_s: Rate::new(u64::try_from(rows_persisted).unwrap_or(0), seconds).per_second(),
        listing_state_rows,
        alerts_raised: metrics.counters.alerts_raised.get(),
        alert_rows,
        latency,
        broker_latency,
        cpu_seconds,
        cores_used: cpu_seconds / seconds.max(1e-9),
        peak_rss_mib: usage::mib(after.max_rss_kib),
        rss_end_mib,
        cached_listings: cache.len(),
    };

    let raw = &cfg.kafka.topics.raw_prices.name;
    let bare_fetch = fetch::bare_fetch(&scratch.kafka, &cfg.kafka, raw, partitions).await?;
    let librdkafka = if args.no_librdkafka {
        None
    } else {
        Some(ceiling::run(&args.python, &args.ceiling_script, &cfg.kafka, raw, partitions).await)
    };
    let ratio_to_librdkafka = librdkafka
        .as_ref()
        .filter(|c| c.error.is_none() && c.records_per_s > 0.0)
        .map(|c| pipeline.events_per_s / c.records_per_s);
    let python = if args.with_python {
        Some(python::run(scratch, args).await)
    } else {
        None
    };
    let stall = args
        .stall_postgres
        .map(|secs| stall_figures(secs, window, &samples));
    let produce = produced.ok_or_else(|| BenchError::Invalid("the producer did not report".into()))?;
    Ok(BenchFigures {
        mode: if args.rate.is_some() { "steady" } else { "backlog" },
        events: args.events,
        listings: args.listings,
        partitions,
        produce,
        ratio_to_bare_fetch: pipeline.events_per_s / bare_fetch.records_per_s.max(1e-9),
        pipeline,
        bare_fetch,
        librdkafka,
        ratio_to_librdkafka,
        stall,
        python,
        load_before,
        load_after: usage::load_average(),
        database: String::new(),
        raw_topic: raw.clone(),
        kept: false,
        cleanup_problems: Vec::new(),
    })
}

/// Quantiles of a microsecond histogram, in milliseconds.
fn latency_of(h: &hdrhistogram::Histogram<u64>) -> Latency {
    let ms = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1e3
        }
    };
    Latency {
        p50_ms: ms(0.50),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: if h.is_empty() { 0.0 } else { h.max() as f64 / 1e3 },
        count: h.len(),
    }
}

fn stall_figures(secs: u64, window: Option<StallWindow>, samples: &[RssSample]) -> StallFigures {
    let during: Vec<&RssSample> = samples.iter().filter(|s| s.stalled).collect();
    let before = samples
        .iter()
        .take_while(|s| !s.stalled)
        .last()
        .map_or(0.0, |s| s.rss_mib);
    StallFigures {
        seconds: secs,
        window,
        rss_before_mib: before,
        rss_max_during_mib: during.iter().map(|s| s.rss_mib).fold(0.0, f64::max),
        rss_last_during_mib: during.last().map_or(0.0, |s| s.rss_mib),
        samples: samples.to_vec(),
    }
}
