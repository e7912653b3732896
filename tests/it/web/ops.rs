//! Operating the web layer: `/metrics` read by a Prometheus text parser, readiness following
//! Postgres and lag, loopback-only binding, and `conscope run` serving it and stopping cleanly.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use conscope::config::Config;
use conscope::web;
use serde_json::{Value, json};

use super::{App, free_port, wait_ready};
use crate::harness::{self, Infra, Running, TestDb};

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
    m.counters.ingest_records.inc_by(1_234);
    m.counters.dlq_records.inc_by(7);
    m.counters.persist_records.inc_by(1_200);
    m.counters.task_restarts.inc_by(1);
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
