//! Query-time check of the dashboard on a large history: generates 10M `price_history` rows
//! (100 events × 100 listings × 7 days every 10 minutes, by default) in a database of its own,
//! then times every query the dashboard makes — through `store::queries` and, when the broker
//! is reachable, through HTTP — and prints p50 / p95 / max per query. Not a timed test: it
//! prints figures for `docs/benchmarks.md`.
//!
//! ```sh
//! set -a; . .local/env; set +a
//! cargo run --release --example dashboard_bench                 # generate (about 8 min) and time
//! cargo run --release --example dashboard_bench -- --reuse      # time an existing bench database
//! ```
//!
//! The database (`conscope_bench` on the `CONSCOPE_TEST_ADMIN_URL` server) is kept for reruns;
//! `--drop` removes it at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{Duration as ChronoDuration, Utc};
use clap::Parser;
use conscope::config::{Config, Secret};
use conscope::store::{self, migrate, queries};
use conscope::web::{self, WebState};
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Args {
    /// Postgres URL of a database with rights to create others.
    #[arg(long, env = "CONSCOPE_TEST_ADMIN_URL")]
    admin_url: String,
    /// Kafka brokers, for the HTTP timings (the web state holds a broker client).
    #[arg(long, env = "CONSCOPE_KAFKA__BROKERS", default_value = "127.0.0.1:19092")]
    brokers: String,
    #[arg(long, default_value = "conscope_bench")]
    database: String,
    #[arg(long, default_value_t = 100)]
    events: i32,
    #[arg(long, default_value_t = 100)]
    listings: i32,
    #[arg(long, default_value_t = 7)]
    days: i32,
    /// Seconds between two observations of one listing.
    #[arg(long, default_value_t = 600)]
    step: i32,
    /// Timed runs per query.
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Use the existing bench database as it is.
    #[arg(long)]
    reuse: bool,
    /// Drop the bench database at the end.
    #[arg(long)]
    drop: bool,
}

fn with_db(url: &str, db: &str) -> Result<String> {
    let (base, _) = url.rsplit_once('/').context("admin URL has no database")?;
    Ok(format!("{base}/{db}"))
}

async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(c)
}

async fn generate(args: &Args, url: &str) -> Result<()> {
    let admin = connect(&args.admin_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", args.database))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {}", args.database))
        .await?;
    let mut c = connect(url).await?;
    migrate::apply(&mut c, migrate::MIGRATIONS).await?;
    c.batch_execute(include_str!("../tests/data/generate_history.sql"))
        .await?;
    let rows = i64::from(args.events) * i64::from(args.listings) * i64::from(args.days) * 86_400
        / i64::from(args.step);
    println!("generating {rows} price_history rows ...");
    let started = Instant::now();
    // Generated rows reference events the generator inserted itself: skip the per-row FK trigger.
    c.batch_execute("SET session_replication_role = replica").await?;
    let n: i64 = c
        .query_one(
            "SELECT conscope_generate_history($1, $2, $3, $4)",
            &[&args.events, &args.listings, &args.days, &args.step],
        )
        .await?
        .get(0);
    println!("  {n} rows in {:.0} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    c.batch_execute("VACUUM (ANALYZE) price_history, price_alerts, listing_state, price_windows, events")
        .await?;
    println!("  VACUUM ANALYZE in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

struct Timing {
    name: String,
    ms: Vec<f64>,
}

impl Timing {
    fn print(&mut self) {
        self.ms.sort_by(f64::total_cmp);
        let at = |q: f64| self.ms[((self.ms.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {:<44} | {:>8.1} | {:>8.1} | {:>8.1} |",
            self.name,
            at(0.5),
            at(0.95),
            at(1.0)
        );
    }
}

async fn time<F, Fut, T>(name: &str, runs: usize, mut f: F) -> Result<Timing>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    f(0).await?; // warm-up
    let mut ms = Vec::with_capacity(runs);
    for i in 0..runs {
        let t = Instant::now();
        f(i + 1).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(Timing {
        name: name.into(),
        ms,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let url = with_db(&args.admin_url, &args.database)?;
    if !args.reuse {
        generate(&args, &url).await?;
    }
    let c = connect(&url).await?;
    let rows: i64 = c
        .query_one("SELECT count(*) FROM price_history", &[])
        .await?
        .get(0);
    let size: String = c
        .query_one(
            "SELECT pg_size_pretty(pg_total_relation_size('price_history'))",
            &[],
        )
        .await?
        .get(0);
    println!("price_history: {rows} rows, {size} with indexes");
    let events = args.events;
    let event = |i: usize| format!("gen_{}", 1 + (i * 37) % events as usize);
    let now = Utc::now();
    let day_start = now.date_naive().and_hms_opt(0, 0, 0).map_or(now, |m| m.and_utc());

    // The chart query of the 7-day view, as store::queries::price_series sends it.
    let plan = c
        .query(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
             SELECT b.t, a.lo, a.mean, a.hi, a.n, a.drops
               FROM generate_series(now() - interval '7 days', now() - interval '1 microsecond',
                                    make_interval(secs => 4200)) AS b (t),
                    LATERAL (SELECT min(price)::float8 AS lo, avg(price)::float8 AS mean,
                                    max(price)::float8 AS hi, count(*) AS n,
                                    count(*) FILTER (WHERE change_kind = 'drop') AS drops
                               FROM price_history
                              WHERE event_id = 'gen_50' AND \"timestamp\" >= b.t
                                AND \"timestamp\" < LEAST(b.t + make_interval(secs => 4200), now())) AS a
              WHERE a.n > 0 ORDER BY b.t",
            &[],
        )
        .await?;
    println!("\nplan of the 7-day price chart of one event:");
    for r in &plan {
        println!("  {}", r.get::<_, String>(0));
    }

    let n = args.runs;
    let mut timings = Vec::new();
    println!("\n| query (store::queries, {n} runs) | p50 ms | p95 ms | max ms |");
    println!("|---|---:|---:|---:|");
    timings.push(
        time("events list", n, |_| async {
            Ok(queries::list_events(&c, 500).await?)
        })
        .await?,
    );
    timings.push(
        time("stats, all events", n, |_| async {
            Ok(queries::stats(&c, None, day_start).await?)
        })
        .await?,
    );
    timings.push(
        time("stats, one event", n, |i| {
            let (c, e) = (&c, event(i));
            async move { Ok(queries::stats(c, Some(&e), day_start).await?) }
        })
        .await?,
    );
    for (label, hours, bucket) in [("6h", 6, 150.0), ("24h", 24, 600.0), ("7d", 168, 4200.0)] {
        let to = Utc::now();
        let from = to - ChronoDuration::hours(hours);
        timings.push(
            time(
                &format!("price chart + distribution, one event, {label}"),
                n,
                |i| {
                    let (c, e) = (&c, event(i));
                    async move { Ok(queries::price_series(c, &e, from, to, bucket).await?) }
                },
            )
            .await?,
        );
        timings.push(
            time(&format!("drop markers, one event, {label}"), n, |i| {
                let (c, e) = (&c, event(i));
                async move { Ok(queries::event_drops(c, &e, from, to, 500).await?) }
            })
            .await?,
        );
    }
    let since = Utc::now() - ChronoDuration::hours(24);
    timings.push(
        time("recent alerts, all events, 24h (200)", n, |_| async {
            Ok(queries::recent_alerts(&c, since, None, 200).await?)
        })
        .await?,
    );
    timings.push(
        time("recent alerts, one event, 24h (200)", n, |i| {
            let (c, e) = (&c, event(i));
            async move { Ok(queries::recent_alerts(c, since, Some(&e), 200).await?) }
        })
        .await?,
    );
    timings.push(
        time("windows, one event, 7d", n, |i| {
            let (c, e) = (&c, event(i));
            let from = Utc::now() - ChronoDuration::days(7);
            async move { Ok(queries::windows(c, &e, None, from, 2_000).await?) }
        })
        .await?,
    );
    for t in &mut timings {
        t.print();
    }

    // The same through HTTP: connection, all queries of an endpoint, JSON.
    let mut cfg = Config::default();
    cfg.postgres.url = Secret::new(url.clone());
    cfg.kafka.brokers = args.brokers.split(',').map(str::to_string).collect();
    cfg.kafka.request_timeout = Duration::from_secs(3);
    cfg.web.listen = "127.0.0.1:0".into();
    let cfg = Arc::new(cfg);
    match conscope::kafka::connect(&cfg.kafka).await {
        Err(e) => println!("\nHTTP timings skipped: {e}"),
        Ok(kafka) => {
            let pool = store::pool(&cfg.postgres)?;
            let listener = web::bind(&cfg).await?;
            let base = format!("http://{}", listener.local_addr()?);
            let state = WebState::new(conscope::app::App::new(cfg.clone(), pool, kafka));
            let cancel = CancellationToken::new();
            let server = tokio::spawn(web::serve_on(listener, state, cancel.clone()));
            let http = reqwest::Client::new();
            let get = |path: String| {
                let (http, base) = (http.clone(), base.clone());
                async move {
                    let res = http.get(format!("{base}{path}")).send().await?;
                    anyhow::ensure!(res.status().is_success(), "{path}: {}", res.status());
                    Ok(res.bytes().await?.len())
                }
            };
            println!("\n| endpoint (HTTP, {n} runs) | p50 ms | p95 ms | max ms |");
            println!("|---|---:|---:|---:|");
            let mut http_timings = vec![
                time("GET /api/events", n, |_| get("/api/events".into())).await?,
                time("GET /api/stats", n, |_| get("/api/stats".into())).await?,
                time("GET /api/stats?event_id=…", n, |i| {
                    get(format!("/api/stats?event_id={}", event(i)))
                })
                .await?,
            ];
            for range in ["6h", "24h", "7d"] {
                http_timings.push(
                    time(&format!("GET /api/events/{{id}}/prices?range={range}"), n, |i| {
                        get(format!("/api/events/{}/prices?range={range}", event(i)))
                    })
                    .await?,
                );
            }
            http_timings.push(
                time("GET /api/alerts?since=24h&limit=200", n, |_| {
                    get("/api/alerts?since=24h&limit=200".into())
                })
                .await?,
            );
            http_timings.push(
                time("GET /api/events/{id}/windows?range=7d", n, |i| {
                    get(format!("/api/events/{}/windows?range=7d", event(i)))
                })
                .await?,
            );
            http_timings.push(time("GET /metrics", n, |_| get("/metrics".into())).await?);
            for t in &mut http_timings {
                t.print();
            }
            cancel.cancel();
            let _ = server.await;
        }
    }

    if args.drop {
        drop(c);
        let admin = connect(&args.admin_url).await?;
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", args.database))
            .await?;
        println!("dropped {}", args.database);
    }
    Ok(())
}
