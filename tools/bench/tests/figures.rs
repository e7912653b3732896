//! `conscope-bench` through its binary against the real broker and Postgres (started by
//! `scripts/local-infra.sh`): the figures are present and agree with what the database held, and
//! the scratch database is gone afterwards. No timing asserted.

use std::process::Command;

#[path = "../../../tests/it/harness.rs"]
mod harness;

use harness::{TestDb, json_num, json_ok};

/// `conscope-bench --config CONFIG`, with no CONSCOPE_ overrides inherited.
fn conscope_bench(config: &std::path::Path) -> Command {
    harness::command(env!("CARGO_BIN_EXE_conscope-bench"), config)
}

#[tokio::test]
async fn bench_json_figures_are_present_and_agree_with_the_database() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 2);
    let config = harness::write_config(&cfg);
    let output = conscope_bench(&config)
        .args(["--events", "5000", "--listings", "500", "--json"])
        .output()
        .expect("run conscope-bench");
    let f = json_ok(output, "conscope-bench");

    assert_eq!(f["mode"], "backlog");
    assert_eq!(json_num(&f, "events"), 5000.0);
    assert_eq!(json_num(&f, "produce.events"), 5000.0);
    assert_eq!(
        json_num(&f, "pipeline.rows_persisted"),
        5000.0,
        "every event is one price_history row"
    );
    assert_eq!(
        json_num(&f, "pipeline.latency.count"),
        5000.0,
        "one latency per committed record"
    );
    assert_eq!(
        json_num(&f, "bare_fetch.records"),
        5000.0,
        "the bare fetch reads the same topic"
    );
    assert_eq!(
        json_num(&f, "pipeline.alerts_raised"),
        json_num(&f, "pipeline.alert_rows")
    );
    assert!(
        json_num(&f, "pipeline.alerts_raised") > 0.0,
        "a 10% drop rate over 5000 events alerts"
    );
    assert!(json_num(&f, "pipeline.listing_state_rows") >= 500.0);
    assert_eq!(
        json_num(&f, "pipeline.listing_state_rows"),
        json_num(&f, "pipeline.cached_listings"),
        "the cache and listing_state hold the same listings"
    );
    for key in [
        "pipeline.events_per_s",
        "pipeline.rows_per_s",
        "pipeline.cpu_seconds",
        "pipeline.peak_rss_mib",
        "bare_fetch.records_per_s",
        "ratio_to_bare_fetch",
    ] {
        assert!(json_num(&f, key) > 0.0, "{key} should be positive in {f}");
    }
    let l = |q: &str| json_num(&f, &format!("pipeline.latency.{q}"));
    assert!(l("p50_ms") <= l("p95_ms") && l("p95_ms") <= l("p99_ms") && l("p99_ms") <= l("max_ms"));
    assert!(f["stall"].is_null() && f["python"].is_null());

    // The scratch database is gone; ours was never touched.
    let name = f["database"].as_str().expect("database name").to_string();
    assert!(name.starts_with("conscope_bench_"), "{name}");
    let c = db.connect().await.expect("connect");
    let left: i64 = c
        .query_one("SELECT count(*) FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("pg_database")
        .get(0);
    assert_eq!(left, 0, "the benchmark database is dropped without --keep");
    assert_eq!(db.count("SELECT count(*) FROM price_history").await, 0);
    let _ = std::fs::remove_file(config);
}
