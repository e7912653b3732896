//! The web layer: the JSON API against a real Postgres filled with data, bad requests, write
//! auth, `/metrics` through a Prometheus text parser, health following Postgres and lag,
//! loopback binding, `conscope run` serving it all, and the dashboard in headless Chromium.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use conscope::config::{Config, Secret};
use conscope::detect::PriceCache;
use conscope::metrics::Metrics;
use conscope::web::{self, WebState};
use conscope::{kafka, store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::harness::{self, Infra, Running, TestDb};

/// A web server in this process over a fresh database.
struct App {
    db: TestDb,
    base: String,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), web::WebError>>,
    http: reqwest::Client,
}

impl App {
    async fn start(token: &str) -> Self {
        let db = TestDb::migrated().await.expect("db");
        let mut cfg = harness::config(&db, 1);
        cfg.web.listen = "127.0.0.1:0".into();
        cfg.web.api_token = Secret::new(token);
        let cfg = Arc::new(cfg);
        let pool = store::pool(&cfg.postgres).expect("pool");
        let client = kafka::connect(&cfg.kafka).await.expect("broker");
        let metrics = Arc::new(Metrics::default());
        let listener = web::bind(&cfg).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = WebState::new(cfg, pool, metrics.clone(), Arc::new(PriceCache::new()), client);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(web::serve_on(listener, state, cancel.clone()));
        Self {
            db,
            base: format!("http://{addr}"),
            metrics,
            cancel,
            task,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}, {ctype}: body is not JSON ({e}): {text}"));
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn stop(self) {
        self.cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops when cancelled")
            .expect("server task");
        result.expect("clean stop");
    }
}

/// Three events with known numbers (see each assertion for the arithmetic).
async fn seed(db: &TestDb) {
    let c = db.connect().await.expect("connect");
    c.batch_execute(
        "INSERT INTO events (event_id, event_name, venue) VALUES
             ('ev_alpha', 'Alpha Tour', 'Arena One'),
             ('ev_beta', 'Beta Live', 'Hall Two'),
             ('ev_gamma', 'Gamma Night', 'Club Three');
         -- ev_alpha: listing a1 at 100..140 and a2 at 200, one observation each every 10 minutes
         -- for 7 days, the newest 5 minutes ago: 36 per listing in 6h, 144 in 24h, 1008 in 7d.
         INSERT INTO price_history (event_id, listing_key, source, price, total_price, \"timestamp\",
                                    change_kind, kafka_partition, kafka_offset)
         SELECT 'ev_alpha', 'mock:a' || l, 'mock', p, p, now() - make_interval(mins => k * 10 + 5),
                'unchanged', 0, l * 10000 + k
           FROM generate_series(1, 2) l, generate_series(0, 1007) k,
                LATERAL (SELECT CASE l WHEN 1 THEN 100 + (k % 5) * 10 ELSE 200 END AS p) x;
         INSERT INTO price_history (event_id, listing_key, source, price, total_price, \"timestamp\",
                                    change_kind, kafka_partition, kafka_offset)
         SELECT 'ev_beta', 'vivid:b1', 'vivid', 50, 50, now() - make_interval(mins => k * 5 + 1),
                'unchanged', 1, k
           FROM generate_series(0, 9) k;
         INSERT INTO listing_state (listing_key, event_id, source, last_price, lowest_price, first_seen,
                                    last_seen, observations) VALUES
             ('mock:a1', 'ev_alpha', 'mock', 100, 100, now() - interval '7 days', now(), 1008),
             ('mock:a2', 'ev_alpha', 'mock', 200, 200, now() - interval '7 days', now(), 1008),
             ('vivid:b1', 'ev_beta', 'vivid', 50, 50, now() - interval '1 hour', now(), 10);
         INSERT INTO price_alerts (alert_id, event_id, alert_type, rule, alert_timestamp, listing_key,
                                   old_price, new_price, drop_amount, drop_percent, source, listing_url,
                                   kafka_partition, kafka_offset, payload)
         VALUES
             ('al1', 'ev_alpha', 'price_drop', 'default', now() - interval '1 minute', 'mock:a1',
              140, 100, 40, 28.57, 'mock', 'https://tickets.example/a1', 0, 1, '{}'),
             ('al2', 'ev_alpha', 'price_increase', 'default', now() - interval '2 minutes', 'mock:a1',
              100, 140, -40, -40, 'mock', NULL, 0, 2, '{}'),
             ('al3', 'ev_alpha', 'price_drop', 'default', now() - interval '3 hours', 'mock:a1',
              130, 100, 30, 23.08, 'mock', 'javascript:alert(1)', 0, 3, '{}'),
             ('al4', 'ev_alpha', 'price_drop', 'default', now() - interval '3 days', 'mock:a1',
              120, 100, 20, 16.67, 'mock', NULL, 0, 4, '{}'),
             ('bl1', 'ev_beta', 'price_drop', 'default', now() - interval '30 minutes', 'vivid:b1',
              60, 50, 10, 16.67, 'vivid', NULL, 1, 1, '{}');
         INSERT INTO price_windows (event_id, source, width_seconds, window_start, window_end,
                                    observations, distinct_listings, min_price, max_price, sum_price,
                                    mean_price, first_price, last_price, drops)
         VALUES
             ('ev_alpha', 'mock', 300, now() - interval '10 minutes', now() - interval '5 minutes',
              2, 2, 100, 200, 300, 150, 100, 200, 0),
             ('ev_alpha', 'mock', 300, now() - interval '5 minutes', now(), 2, 2, 110, 200, 310, 155,
              110, 200, 1),
             ('ev_alpha', 'mock', 3600, now() - interval '1 hour', now(), 12, 2, 100, 200, 1800, 150,
              100, 200, 2);",
    )
    .await
    .expect("seed");
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-6)
}

#[tokio::test]
async fn api_serves_events_stats_prices_alerts_and_windows_from_postgres() {
    let app = App::start("").await;
    seed(&app.db).await;

    let (status, events) = app.get("/api/events").await;
    assert_eq!(status, 200, "{events}");
    let ids: Vec<&str> = events
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids, ["ev_alpha", "ev_beta", "ev_gamma"]);
    assert_eq!(events[0]["listings"], 2);
    assert_eq!(events[0]["observations"], 2016);
    assert!(close(&events[0]["min_price"], 100.0) && close(&events[0]["max_price"], 200.0));
    assert_eq!(events[2]["listings"], 0);
    assert!(events[2]["min_price"].is_null());

    let (status, stats) = app.get("/api/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["events"], 3);
    assert_eq!(stats["listings"], 3);
    assert_eq!(stats["observations"], 2016 + 10);
    assert!(close(&stats["mean_price"], 350.0 / 3.0), "{stats}");
    assert!(close(&stats["min_price"], 50.0) && close(&stats["max_price"], 200.0));
    let c = app.db.connect().await.expect("connect");
    let today: i64 = c
        .query_one(
            "SELECT count(*) FROM price_alerts WHERE alert_type = 'price_drop'
                AND alert_timestamp >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stats["drops_today"], today);
    let (_, alpha) = app.get("/api/stats?event_id=ev_alpha").await;
    assert_eq!(
        (alpha["events"].clone(), alpha["listings"].clone()),
        (json!(1), json!(2))
    );
    assert!(close(&alpha["mean_price"], 150.0), "{alpha}");

    for (range, per_listing, markers) in [("6h", 36, 2), ("24h", 144, 2), ("7d", 1008, 3)] {
        let (status, p) = app
            .get(&format!("/api/events/ev_alpha/prices?range={range}"))
            .await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(p["range"], range);
        assert_eq!(p["observations"], 2 * per_listing, "{range}");
        let buckets = p["buckets"].as_array().expect("buckets");
        let summed: i64 = buckets.iter().filter_map(|b| b["observations"].as_i64()).sum();
        assert_eq!(summed, 2 * per_listing);
        assert!(buckets.len() <= 145, "{range}: {} buckets", buckets.len());
        assert_eq!(p["drops"].as_array().expect("drops").len(), markers, "{range}");
        assert_eq!(p["drops"][0]["alert_id"], "al1", "newest first");
        // $100..$140 and $200: eleven $10 bins from $100 to $210.
        let d = &p["distribution"];
        assert!(close(&d["lo"], 100.0) && close(&d["hi"], 210.0), "{d}");
        assert!(close(&d["bin_width"], 10.0), "{d}");
        let counts: Vec<i64> = d["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        assert_eq!(counts.len(), 11);
        assert_eq!(counts.iter().sum::<i64>(), 2 * per_listing);
        assert_eq!(counts[10], per_listing, "a2 at $200");
        // a1 is at $100, $110, $120, $130 and $140: the first five bins; nothing in between.
        assert_eq!(counts[..5].iter().sum::<i64>(), per_listing, "a1");
        assert!(counts[5..10].iter().all(|n| *n == 0), "{counts:?}");
    }

    let (status, alerts) = app.get("/api/alerts").await;
    assert_eq!(status, 200, "{alerts}");
    let ids: Vec<&str> = alerts
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["alert_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["al1", "al2", "bl1", "al3"],
        "the last 24 hours, newest first"
    );
    assert_eq!(alerts[0]["event_name"], "Alpha Tour");
    assert!(close(&alerts[0]["old_price"], 140.0) && close(&alerts[0]["new_price"], 100.0));
    let (_, week) = app.get("/api/alerts?since=7d").await;
    assert_eq!(week.as_array().map(Vec::len), Some(5));
    let (_, beta) = app
        .get("/api/alerts?event_id=ev_beta&since=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(beta.as_array().map(Vec::len), Some(1));
    let (_, limited) = app.get("/api/alerts?since=7d&limit=2").await;
    assert_eq!(limited.as_array().map(Vec::len), Some(2));

    let (status, windows) = app.get("/api/events/ev_alpha/windows").await;
    assert_eq!(status, 200, "{windows}");
    assert_eq!(windows.as_array().map(Vec::len), Some(3));
    let (_, five) = app.get("/api/events/ev_alpha/windows?width=300").await;
    assert_eq!(five.as_array().map(Vec::len), Some(2));
    assert!(
        close(&five[1]["mean_price"], 155.0) && five[1]["drops"] == 1,
        "{five}"
    );
    let (_, none) = app.get("/api/events/ev_gamma/windows").await;
    assert_eq!(none, json!([]));
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_json_error_and_never_a_500() {
    let app = App::start("tok-bad-requests").await;
    seed(&app.db).await;
    let auth = "Bearer tok-bad-requests";
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            app.http.get(format!("{}/api/events/nope/prices", app.base)),
            404,
            "no event with id \"nope\"",
        ),
        (
            app.http.get(format!("{}/api/events/nope/windows", app.base)),
            404,
            "no event",
        ),
        (
            app.http.get(format!("{}/api/stats?event_id=nope", app.base)),
            404,
            "no event",
        ),
        (
            app.http.get(format!("{}/api/alerts?event_id=nope", app.base)),
            404,
            "no event",
        ),
        (
            app.http
                .get(format!("{}/api/events/ev_alpha/prices?range=5h", app.base)),
            400,
            "range must be one of",
        ),
        (
            app.http
                .get(format!("{}/api/events/ev_alpha/windows?width=0", app.base)),
            400,
            "width",
        ),
        (
            app.http.get(format!("{}/api/alerts?since=yesterday", app.base)),
            400,
            "since must be",
        ),
        (
            app.http
                .get(format!("{}/api/alerts?since=2099-01-01T00:00:00Z", app.base)),
            400,
            "future",
        ),
        (
            app.http.get(format!("{}/api/events?limit=0", app.base)),
            400,
            "limit",
        ),
        (
            app.http.get(format!("{}/api/events?limit=many", app.base)),
            400,
            "bad query string",
        ),
        (
            app.http.get(format!("{}/api/events?colour=red", app.base)),
            400,
            "unknown field",
        ),
        (
            app.http.get(format!("{}/no/such/page", app.base)),
            404,
            "no such page",
        ),
        (
            app.http.put(format!("{}/api/events", app.base)),
            405,
            "method not allowed",
        ),
        (
            app.http
                .post(format!("{}/api/watches", app.base))
                .header("authorization", auth)
                .body("{\"trigger_type\": "),
            400,
            "malformed JSON",
        ),
        (
            app.http
                .post(format!("{}/api/watches", app.base))
                .header("authorization", auth)
                .json(&json!({"trigger_type": "at_or_below", "event_id": "ev_alpha"})),
            400,
            "missing field `channel`",
        ),
        (
            app.http
                .post(format!("{}/api/watches", app.base))
                .header("authorization", auth)
                .json(&json!({"trigger_type": "drop_percent", "channel": "discord", "event_id": "ev_alpha"})),
            400,
            "drop_percent: required when trigger_type is drop_percent",
        ),
        (
            app.http
                .delete(format!("{}/api/watches/abc", app.base))
                .header("authorization", auth),
            400,
            "positive whole number",
        ),
    ];
    for (req, want, text) in cases {
        let (status, body) = app.send(req).await;
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {body}"));
        assert_eq!(status, want, "{message}");
        assert!(message.contains(text), "{message:?} should contain {text:?}");
        assert!(!message.contains("tok-bad-requests"), "{message}");
    }
    app.stop().await;
}

#[tokio::test]
async fn watch_writes_need_the_configured_bearer_token() {
    let app = App::start("tok-123").await;
    seed(&app.db).await;
    let url = format!("{}/api/watches", app.base);
    let body = json!({
        "trigger_type": "at_or_below", "channel": "discord", "event_id": "ev_alpha",
        "target_price": 120.5, "section": "112"
    });
    let (status, err) = app.send(app.http.post(&url).json(&body)).await;
    assert_eq!(status, 401, "{err}");
    let (status, _) = app
        .send(app.http.post(&url).bearer_auth("tok-12").json(&body))
        .await;
    assert_eq!(status, 401);
    assert_eq!(app.db.count("SELECT count(*) FROM watches").await, 0);

    let (status, created) = app
        .send(app.http.post(&url).bearer_auth("tok-123").json(&body))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().expect("id");
    assert!(close(&created["target_price"], 120.5), "{created}");
    assert_eq!(created["cooldown_seconds"], 21_600);
    let (_, list) = app.get("/api/watches").await;
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["trigger_type"], "at_or_below");

    let one = format!("{url}/{id}");
    let (status, _) = app.send(app.http.delete(&one)).await;
    assert_eq!(status, 401);
    let (status, deleted) = app.send(app.http.delete(&one).bearer_auth("tok-123")).await;
    assert_eq!((status, deleted), (200, json!({ "deleted": id })));
    let (status, _) = app.send(app.http.delete(&one).bearer_auth("tok-123")).await;
    assert_eq!(status, 404);
    app.stop().await;

    // No token configured: writes are refused whatever the client sends.
    let open = App::start("").await;
    let url = format!("{}/api/watches", open.base);
    let (status, err) = open.send(open.http.post(&url).bearer_auth("").json(&body)).await;
    assert_eq!(status, 403, "{err}");
    let (status, _) = open
        .send(open.http.delete(format!("{url}/1")).bearer_auth("anything"))
        .await;
    assert_eq!(status, 403);
    assert_eq!(open.db.count("SELECT count(*) FROM watches").await, 0);
    open.stop().await;
}

/// Every line of a text exposition is a comment or `name{labels} value` (the parser skips
/// what it cannot read, so this is checked separately).
fn assert_well_formed(text: &str) {
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.starts_with("conscope_")
                && name.split('_').count() >= 3
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "name not conscope_<stage>_<what>_<unit>: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line}"
            );
        }
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_that_a_parser_reads() {
    let app = App::start("").await;
    let m = &app.metrics;
    m.counters.ingest_records.store(1_234, Relaxed);
    m.counters.dlq_records.store(7, Relaxed);
    m.counters.persist_records.store(1_200, Relaxed);
    m.counters.task_restarts.store(1, Relaxed);
    let p0 = m.partition(0);
    p0.high_watermark.store(500, Relaxed);
    p0.committed.store(450, Relaxed);
    m.partition(1).high_watermark.store(10, Relaxed);
    m.partition(1).committed.store(10, Relaxed);
    m.set_channel("ingest_to_detect", 3, 16);
    m.record_latencies([2_000, 40_000, 40_000, 700_000]);

    let res = reqwest::get(format!("{}/metrics", app.base))
        .await
        .expect("scrape");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/plain; version=0.0.4")),
    );
    let text = res.text().await.expect("body");
    assert_well_formed(&text);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let value = |name: &str, label: Option<(&str, &str)>| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| s.value.clone())
            .unwrap_or_else(|| panic!("{name} {label:?} missing from:\n{text}"))
    };
    use prometheus_parse::Value::{Counter, Gauge, Histogram};
    assert_eq!(value("conscope_ingest_records_total", None), Counter(1_234.0));
    assert_eq!(value("conscope_ingest_dlq_records_total", None), Counter(7.0));
    assert_eq!(value("conscope_persist_records_total", None), Counter(1_200.0));
    assert_eq!(value("conscope_supervisor_restarts_total", None), Counter(1.0));
    assert_eq!(
        value("conscope_ingest_lag_records", Some(("partition", "0"))),
        Gauge(50.0)
    );
    assert_eq!(
        value("conscope_ingest_lag_records", Some(("partition", "1"))),
        Gauge(0.0)
    );
    assert_eq!(
        value("conscope_ingest_committed_offset", Some(("partition", "0"))),
        Gauge(450.0)
    );
    assert_eq!(
        value(
            "conscope_pipeline_channel_used_batches",
            Some(("channel", "ingest_to_detect"))
        ),
        Gauge(3.0)
    );
    assert_eq!(
        value("conscope_detect_changes_total", Some(("kind", "drop"))),
        Counter(0.0)
    );
    let Histogram(buckets) = value("conscope_persist_commit_latency_seconds", None) else {
        panic!("latency is not a histogram:\n{text}");
    };
    let at = |le: f64| {
        buckets
            .iter()
            .find(|b| b.less_than == le || (b.less_than - le).abs() < 1e-12)
            .map(|b| b.count)
    };
    assert_eq!(at(0.0025), Some(1.0));
    assert_eq!(at(0.05), Some(3.0));
    assert_eq!(at(1.0), Some(4.0));
    assert_eq!(at(f64::INFINITY), Some(4.0));
    assert!(
        text.contains("conscope_persist_commit_latency_seconds_count 4\n"),
        "{text}"
    );
    assert!(
        text.contains("conscope_persist_commit_latency_seconds_sum 0.782\n"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn readiness_follows_postgres_and_ingest_lag() {
    let app = App::start("").await;
    let (status, live) = app.get("/health/live").await;
    assert_eq!((status, live), (200, json!({ "status": "live" })));
    let (status, ready) = app.get("/health/ready").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["kafka"]["ok"], true);

    // Lag over web.ready_max_lag (100000 by default) makes the instance not ready.
    let p = app.metrics.partition(0);
    p.high_watermark.store(250_000, Relaxed);
    let (status, lagging) = app.get("/health/ready").await;
    assert_eq!(status, 503, "{lagging}");
    assert!(
        lagging["error"]
            .as_str()
            .is_some_and(|e| e.contains("lag 250000")),
        "{lagging}"
    );
    p.committed.store(249_000, Relaxed);
    let (status, _) = app.get("/health/ready").await;
    assert_eq!(status, 200);

    // The database goes away under the running server.
    let infra = Infra::get();
    let (admin, conn) = tokio_postgres::connect(&infra.admin_url, tokio_postgres::NoTls)
        .await
        .expect("admin");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("DROP DATABASE {} WITH (FORCE)", app.db.name))
        .await
        .expect("drop the test database");
    let started = Instant::now();
    let (status, down) = app.get("/health/ready").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by web.health_timeout"
    );
    assert_eq!(status, 503, "{down}");
    assert_eq!(down["error"], "PostgreSQL is unreachable");
    assert_eq!(down["postgres"]["ok"], false);
    assert_eq!(down["kafka"]["ok"], true);
    assert!(!down.to_string().contains("postgres://"), "no URL in {down}");
    let (status, live) = app.get("/health/live").await;
    assert_eq!((status, live["status"].clone()), (200, json!("live")));
    let (status, err) = app.get("/api/stats").await;
    assert_eq!((status, err), (503, json!({ "error": "database unavailable" })));

    // ...and comes back.
    admin
        .batch_execute(&format!("CREATE DATABASE {}", app.db.name))
        .await
        .expect("recreate");
    let (status, back) = app.get("/health/ready").await;
    assert_eq!(status, 200, "{back}");
    app.stop().await;
}

#[tokio::test]
async fn the_server_listens_on_loopback_only_by_default() {
    let default: SocketAddr = Config::default().web.listen.parse().expect("address");
    assert_eq!(default.ip().to_string(), "127.0.0.1");
    let mut cfg = Config::default();
    let mut any_port = default;
    any_port.set_port(0);
    cfg.web.listen = any_port.to_string();
    let listener = web::bind(&cfg).await.expect("bind");
    let bound = listener.local_addr().expect("addr");
    assert_eq!(bound.ip().to_string(), "127.0.0.1");
    // Another address of this machine (still loopback, 127.0.0.2) is refused.
    let other = SocketAddr::from(([127, 0, 0, 2], bound.port()));
    assert!(
        tokio::net::TcpStream::connect(other).await.is_err(),
        "{other} must not reach it"
    );
    assert!(tokio::net::TcpStream::connect(bound).await.is_ok());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn wait_ready(base: &str, run: &Running, within: Duration) {
    let started = Instant::now();
    loop {
        if let Ok(res) = reqwest::get(format!("{base}/health/ready")).await
            && res.status() == 200
        {
            return;
        }
        assert!(
            started.elapsed() < within,
            "conscope run did not become ready within {within:?}; logs:\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn conscope_run_serves_the_web_task_and_stops_on_sigterm() {
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 2);
    let port = free_port();
    cfg.web.listen = format!("127.0.0.1:{port}");
    let path = harness::write_config(&cfg);
    let mut run = Running::start(&path);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &run, Duration::from_secs(60)).await;
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("conscope_ingest_records_total"), "{metrics}");
    let engine: Value = reqwest::get(format!("{base}/api/engine"))
        .await
        .expect("engine")
        .json()
        .await
        .expect("json");
    assert!(engine["lag_total"].is_number(), "{engine}");
    let page = reqwest::get(&base).await.expect("page");
    assert!(page.headers()["content-security-policy"].to_str().is_ok());
    assert!(page.text().await.expect("html").contains("<title>ConScope"));

    run.sigterm();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = run.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}; logs:\n{}", run.logs());
    let logs = run.logs();
    assert!(
        logs.contains("web server listening") && logs.contains("web server stopped"),
        "{logs}"
    );
}

// ---- the dashboard in headless Chromium ----------------------------------------------------

const BROWSER_ENV: &str = "CONSCOPE_BROWSER_TESTS";

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Run headless Chromium on `url` with `extra` (screenshot or DOM dump); stdout is returned.
fn browse(bin: &Path, profile: &Path, url: &str, extra: &[&str]) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            // Virtual time lets the page's fetches and first refresh finish before the capture.
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `attr` on the element whose id is `id` in a serialized DOM.
fn attr(dom: &str, id: &str, attr: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} not in the page"));
    let start = dom[..at].rfind('<').expect("tag start");
    let end = at + dom[at..].find('>').expect("tag end");
    let tag = &dom[start..end];
    let key = format!(" {attr}=\"");
    let from = tag
        .find(&key)
        .unwrap_or_else(|| panic!("#{id} has no {attr}: {tag}"))
        + key.len();
    let len = tag[from..].find('"').expect("closing quote");
    tag[from..from + len].replace("&amp;", "&")
}

async fn scalar(c: &tokio_postgres::Client, sql: &str, event: &str) -> i64 {
    c.query_one(sql, &[&event]).await.expect(sql).get(0)
}

#[tokio::test]
async fn dashboard_in_headless_chromium_shows_the_numbers_from_postgres() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var(BROWSER_ENV).as_deref() != Ok("1"),
            "{BROWSER_ENV}=1 but Chromium is not installed (apt-get install -y chromium)"
        );
        eprintln!("SKIPPED dashboard browser test: Chromium not found; set {BROWSER_ENV}=1 to require it");
        return;
    };
    let db = TestDb::migrated().await.expect("db");
    let c = db.connect().await.expect("connect");
    c.batch_execute(include_str!("../data/generate_history.sql"))
        .await
        .expect("generator");
    c.query_one("SELECT conscope_generate_history(4, 30, 7, 900)", &[])
        .await
        .expect("generate");
    let mut cfg = harness::config(&db, 1);
    let port = free_port();
    cfg.web.listen = format!("127.0.0.1:{port}");
    let path = harness::write_config(&cfg);
    let run = Running::start(&path);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &run, Duration::from_secs(60)).await;

    let profile = std::env::temp_dir().join(harness::unique("chromium_profile"));
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshots folder");

    // All events, 24 hours: the stat cards are global.
    let dom = browse(&bin, &profile, &format!("{base}/?range=24h"), &["--dump-dom"]);
    assert!(
        dom.contains("data-loaded="),
        "the page never finished a refresh:\n{dom}"
    );
    let num = |id: &str| attr(&dom, id, "data-value");
    assert_eq!(num("stat-events"), "4");
    assert_eq!(num("stat-listings"), "120");
    let observations: i64 = c
        .query_one("SELECT sum(observations)::int8 FROM listing_state", &[])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(num("stat-observations"), observations.to_string());
    let (mean, min, max): (f64, f64, f64) = {
        let r = c
            .query_one(
                "SELECT avg(last_price)::float8, min(last_price)::float8, max(last_price)::float8
                   FROM listing_state",
                &[],
            )
            .await
            .expect("prices");
        (r.get(0), r.get(1), r.get(2))
    };
    for (id, want) in [("stat-mean", mean), ("stat-min", min), ("stat-max", max)] {
        let shown: f64 = num(id).parse().expect("number");
        assert!((shown - want).abs() < 1e-6, "{id}: {shown} vs {want}");
    }
    assert!(
        dom.contains("data-range=\"24h\" class=\"active\""),
        "24h is the active range"
    );

    // Event filter and range switched through the URL the controls write.
    let in_range = "SELECT count(*) FROM price_history WHERE event_id = $1
                     AND \"timestamp\" >= now() - interval '6 hours'";
    let drops_in_range = "SELECT count(*) FROM price_alerts WHERE event_id = $1
                           AND alert_type = 'price_drop' AND alert_timestamp >= now() - interval '6 hours'";
    let (obs_before, drops_before) = (
        scalar(&c, in_range, "gen_2").await,
        scalar(&c, drops_in_range, "gen_2").await,
    );
    let url = format!("{base}/?event=gen_2&range=6h");
    let dom = browse(&bin, &profile, &url, &["--dump-dom"]);
    let (obs_after, drops_after) = (
        scalar(&c, in_range, "gen_2").await,
        scalar(&c, drops_in_range, "gen_2").await,
    );
    // Rows age out of the 6-hour window while the page loads: the page shows a count in between.
    let shown: i64 = attr(&dom, "chart-summary", "data-value")
        .parse()
        .expect("observations");
    assert!(
        (obs_after..=obs_before).contains(&shown),
        "{obs_after} <= {shown} <= {obs_before}"
    );
    assert!(shown > 500, "a real chart, not an empty one: {shown}");
    let total: i64 = attr(&dom, "price-histogram", "data-total")
        .parse()
        .expect("histogram");
    assert_eq!(total, shown, "the histogram counts the same observations");
    let markers: i64 = attr(&dom, "price-chart", "data-markers")
        .parse()
        .expect("markers");
    assert!(
        (drops_after..=drops_before).contains(&markers),
        "{drops_after} <= {markers} <= {drops_before}"
    );
    assert!(markers > 0, "the generated data has drops in 6 hours");
    let rows: i64 = attr(&dom, "drops-table", "data-rows").parse().expect("rows");
    assert_eq!(
        rows,
        markers.min(200),
        "the table lists the event's drops in range"
    );
    assert!(dom.contains("data-range=\"6h\" class=\"active\""));
    assert!(
        dom.contains("Night Lights Live"),
        "gen_2's name in the chart title"
    );
    assert_eq!(
        attr(&dom, "stat-listings", "data-value"),
        "30",
        "cards follow the event filter"
    );
    assert!(
        dom.contains("href=\"https://tickets.example/gen_2/"),
        "drops link to listings"
    );

    // Screenshots for the README, with the simulated feed running so the engine panel is live:
    // everything over a day, and one event over a week.
    drop(run);
    cfg.sources.simulated.enabled = true;
    cfg.sources.simulated.rate = 150.0;
    let path = harness::write_config(&cfg);
    let run = Running::start(&path);
    wait_ready(&base, &run, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (name, url) in [
        ("dashboard.png", format!("{base}/?range=24h")),
        ("dashboard-event-7d.png", format!("{base}/?event=gen_3&range=7d")),
    ] {
        let file = shots.join(name);
        browse(
            &bin,
            &profile,
            &url,
            &[&format!("--screenshot={}", file.display())],
        );
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 20_000, "{name} looks empty ({size} bytes)");
    }
    let _ = std::fs::remove_dir_all(&profile);
    drop(run);
}
