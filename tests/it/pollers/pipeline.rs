//! Sources into the real broker and engine: the pollers inside `conscope run`, and
//! `conscope simulate` followed by the engine.

use std::time::{Duration, Instant};

use conscope::config::Secret;
use conscope::config::TicketmasterConfig;
use conscope::kafka;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::fake_api::FakeApi;
use super::seatgeek;
use crate::fake_http::Answer;
use crate::harness::{self, Running, TestDb};

/// Poll `sql` (a count) until it reaches `at_least`, or fail after `within`.
async fn wait_for_count(db: &TestDb, sql: &str, at_least: i64, within: Duration, run: &Running) -> i64 {
    let started = Instant::now();
    loop {
        let n = db.count(sql).await;
        if n >= at_least {
            return n;
        }
        assert!(
            started.elapsed() < within,
            "`{sql}` reached {n}, not {at_least}, within {within:?}; logs:\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conscope_run_polls_seatgeek_into_the_engine_while_a_refused_ticketmaster_key_stops_only_that_source()
{
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 2);
    let sg_api = FakeApi::start(vec![Answer::json(
        200,
        seatgeek::page(
            vec![
                seatgeek::event(6_543_210, seatgeek::full_stats()),
                seatgeek::event(7, Value::Null),
            ],
            2,
            1,
            2,
        ),
    )])
    .await;
    let tm_api = FakeApi::start(vec![Answer::json(
        401,
        json!({"fault": {"faultstring": "Invalid ApiKey", "detail": {"errorcode": "oauth.v2.InvalidApiKey"}}}),
    )])
    .await;
    cfg.sources.seatgeek = seatgeek::config(&sg_api);
    cfg.sources.ticketmaster = TicketmasterConfig {
        enabled: true,
        base_url: tm_api.base_url.clone(),
        api_key: Secret::new("tm-key-never-logged"),
        keywords: vec!["phoebe".into()],
        ..TicketmasterConfig::default()
    };
    let path = harness::write_config(&cfg);
    let mut run = Running::start(&path);

    // Two polls a second apart: four series, first new, then unchanged.
    let within = Duration::from_secs(60);
    wait_for_count(&db, "SELECT count(*) FROM price_history", 8, within, &run).await;
    let keys = db
        .connect()
        .await
        .expect("connect")
        .query("SELECT listing_key FROM listing_state ORDER BY listing_key", &[])
        .await
        .expect("listing_state");
    let keys: Vec<String> = keys.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        keys,
        [
            "seatgeek:6543210:average_price",
            "seatgeek:6543210:highest_price",
            "seatgeek:6543210:lowest_price",
            "seatgeek:6543210:median_price",
        ]
    );
    assert_eq!(
        db.count("SELECT count(*) FROM price_history WHERE change_kind = 'new'")
            .await,
        4
    );
    assert!(
        db.count("SELECT count(*) FROM price_history WHERE change_kind = 'unchanged'")
            .await
            >= 4
    );
    assert_eq!(
        db.count("SELECT count(*) FROM price_history WHERE change_kind NOT IN ('new', 'unchanged')")
            .await,
        0,
        "an unchanged poll is no price change"
    );
    assert_eq!(db.count("SELECT count(*) FROM price_alerts").await, 0);
    // The event without stats was skipped and counted in the metrics.
    wait_for_count(
        &db,
        "SELECT coalesce(max((snapshot->>'source_skipped')::bigint), 0) FROM system_metrics",
        1,
        within,
        &run,
    )
    .await;

    // Ticketmaster refused the key once and stopped; the process and SeatGeek carry on.
    assert_eq!(tm_api.seen().len(), 1, "an invalid key is not retried");
    assert!(
        run.child.try_wait().expect("child status").is_none(),
        "still running"
    );
    let logs = run.logs();
    let stopped: Vec<_> = logs.lines().filter(|l| l.contains("source stopped")).collect();
    assert_eq!(stopped.len(), 1, "{logs}");
    assert!(
        stopped[0].contains("ERROR")
            && stopped[0].contains("ticketmaster")
            && stopped[0].contains("oauth.v2.InvalidApiKey"),
        "{logs}"
    );
    assert!(
        !logs.contains("tm-key-never-logged") && !logs.contains("sg-client-id-0123"),
        "{logs}"
    );

    run.sigterm();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = run.child.try_wait().expect("child status") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no clean exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}\n{}", run.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conscope_simulate_produces_exactly_n_records_that_the_engine_accepts_without_dlq_entries() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 4);
    let path = harness::write_config(&cfg);
    let out = harness::conscope(&path)
        .args(["simulate", "--events", "2000", "--seed", "7"])
        .output()
        .expect("run conscope simulate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("produced 2000 events"), "{stdout}");

    let client = kafka::connect(&cfg.kafka).await.expect("connect");
    let marks = harness::high_watermarks(&client, &cfg).await.expect("watermarks");
    assert_eq!(marks.iter().sum::<i64>(), 2_000, "{marks:?}");

    let cancel = CancellationToken::new();
    let engine = tokio::spawn(conscope::runtime::run(cfg.clone(), cancel.clone()));
    harness::wait_for_offsets(&db, &cfg, &marks, Duration::from_secs(90))
        .await
        .expect("the engine commits every record");
    cancel.cancel();
    engine.await.expect("engine task").expect("clean shutdown");

    assert_eq!(db.count("SELECT count(*) FROM price_history").await, 2_000);
    let dlq = harness::read_all(&client, &cfg.kafka.topics.dlq.name, 0)
        .await
        .expect("read the DLQ");
    assert!(dlq.is_empty(), "{} DLQ records", dlq.len());
}
