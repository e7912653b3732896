//! Windowed price statistics: event-time placement, lateness, idle partitions, restarts, and
//! agreement with a straightforward recomputation from price_history.

use std::time::{Duration, Instant};

use conscope::config::{Config, LatePolicy, Secret};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::harness::{self, Running, TestDb};
use crate::kills;

fn windowed(db: &TestDb, partitions: i32, lateness_s: u64, idle_s: u64, policy: LatePolicy) -> Config {
    let mut cfg = harness::config(db, partitions);
    cfg.windows.enabled = true;
    cfg.windows.widths = vec!["1m".into()];
    cfg.windows.allowed_lateness = Duration::from_secs(lateness_s);
    cfg.windows.idle_timeout = Duration::from_secs(idle_s);
    cfg.windows.late_records = policy;
    cfg
}

type Row = (
    String,
    i64,
    i64,
    i32,
    String,
    String,
    String,
    String,
    String,
    i32,
    i32,
    i32,
);

/// Every written window, as text for exact comparison (minute offset of its start).
async fn windows(db: &TestDb) -> Vec<Row> {
    let c = db.connect().await.expect("connect");
    c.query(
        "SELECT source, (extract(epoch FROM window_start) / 60)::int8, observations, distinct_listings,
                min_price::text, max_price::text, mean_price::text, first_price::text, last_price::text,
                drops, rises, late_records
           FROM price_windows ORDER BY event_id, window_start, source",
        &[],
    )
    .await
    .expect("windows")
    .iter()
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
            r.get(8),
            r.get(9),
            r.get(10),
            r.get(11),
        )
    })
    .collect()
}

/// The same windows recomputed from price_history in one plain query.
async fn recomputed(db: &TestDb) -> Vec<Row> {
    let c = db.connect().await.expect("connect");
    c.query(
        "SELECT w.source, (extract(epoch FROM w.window_start) / 60)::int8, count(*), count(DISTINCT h.listing_key)::int4,
                min(h.price)::text, max(h.price)::text, round(avg(h.price), 4)::text,
                ((array_agg(h.price ORDER BY h.\"timestamp\", h.kafka_partition, h.kafka_offset))[1])::text,
                ((array_agg(h.price ORDER BY h.\"timestamp\" DESC, h.kafka_partition DESC, h.kafka_offset DESC))[1])::text,
                (count(*) FILTER (WHERE h.change_kind = 'drop'))::int4,
                (count(*) FILTER (WHERE h.change_kind = 'increase'))::int4, w.late_records
           FROM price_windows w
           JOIN price_history h ON h.event_id = w.event_id AND h.source = w.source
                AND h.\"timestamp\" >= w.window_start AND h.\"timestamp\" < w.window_end
          GROUP BY w.event_id, w.source, w.window_start, w.late_records
          ORDER BY w.event_id, w.window_start, w.source",
        &[],
    )
    .await
    .expect("recompute")
    .iter()
    .map(|r| {
        (
            r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6), r.get(7), r.get(8),
            r.get(9), r.get(10), r.get(11),
        )
    })
    .collect()
}

fn at(minute: u32, second: u32) -> String {
    format!("2026-11-21T10:{minute:02}:{second:02}")
}

/// 10:00 UTC on the test day, in minutes since the epoch: window starts are reported this way.
const BASE_MIN: i64 = 29_920_920;

/// Produce the late feed and run the engine over it.
async fn run_late_feed(policy: LatePolicy) -> (TestDb, Config) {
    let db = TestDb::migrated().await.expect("db");
    let cfg = windowed(&db, 1, 120, 3_600, policy);
    let client = harness::create_topics(&cfg).await.expect("topics");
    let ev = |l: &str, p: f64, t: String| (l.as_bytes().to_vec(), harness::event_json_at("show1", l, p, &t));
    let records = vec![
        ev("A", 100.0, at(0, 10)),
        ev("B", 50.0, at(0, 50)),
        ev("A", 90.0, at(1, 20)),
        ev("C", 70.0, at(0, 30)), // out of order, but its window is still open
        ev("A", 80.0, at(5, 0)),  // watermark 10:03: the 10:00 and 10:01 windows are written
        ev("D", 60.0, at(0, 40)), // late: 10:00 was already written
    ];
    harness::produce_to(&client, &cfg.kafka.topics.raw_prices.name, 0, records)
        .await
        .expect("produce");
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
    harness::wait_for_offsets(&db, &cfg, &hw, Duration::from_secs(60))
        .await
        .expect("offsets");
    // Let one metrics snapshot (every second in tests) record what was counted.
    let started = Instant::now();
    while late_in_metrics(&db).await < 1 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    token.cancel();
    task.await.expect("join").expect("clean run");
    (db, cfg)
}

async fn late_in_metrics(db: &TestDb) -> i64 {
    let c = db.connect().await.expect("connect");
    c.query_one(
        "SELECT max((snapshot->>'windows_late_records')::int8) FROM system_metrics",
        &[],
    )
    .await
    .expect("metrics")
    .get::<_, Option<i64>>(0)
    .unwrap_or(0)
}

#[tokio::test]
async fn out_of_order_records_land_in_their_window_and_late_ones_are_merged() {
    let (db, _) = run_late_feed(LatePolicy::Merge).await;
    let rows = windows(&db).await;
    let s = |v: &str| v.to_string();
    assert_eq!(
        rows,
        vec![
            (
                s("mock"),
                BASE_MIN,
                4,
                4,
                s("50.00"),
                s("100.00"),
                s("70.0000"),
                s("100.00"),
                s("50.00"),
                0,
                0,
                1
            ),
            (
                s("mock"),
                BASE_MIN + 1,
                1,
                1,
                s("90.00"),
                s("90.00"),
                s("90.0000"),
                s("90.00"),
                s("90.00"),
                1,
                0,
                0
            ),
        ]
    );
    assert_eq!(rows, recomputed(&db).await);
}

#[tokio::test]
async fn late_records_are_counted_and_dropped_when_configured() {
    let (db, _) = run_late_feed(LatePolicy::Drop).await;
    let rows = windows(&db).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0].2, rows[0].3, rows[0].11),
        (3, 3, 0),
        "D is not in the 10:00 window"
    );
    // Never silently: the metrics snapshot counts the dropped record.
    assert_eq!(late_in_metrics(&db).await, 1);
}

#[tokio::test]
async fn the_idle_timeout_closes_windows_held_open_by_a_silent_partition() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = windowed(&db, 2, 60, 2, LatePolicy::Merge);
    let client = harness::create_topics(&cfg).await.expect("topics");
    let raw = &cfg.kafka.topics.raw_prices.name;
    harness::produce_to(
        &client,
        raw,
        1,
        vec![(
            b"Q".to_vec(),
            harness::event_json_at("show1", "Q", 40.0, &at(0, 5)),
        )],
    )
    .await
    .expect("produce");
    let p0 = (0..10)
        .map(|m| {
            (
                b"P".to_vec(),
                harness::event_json_at("show1", "P", 100.0 + f64::from(m), &at(m, 10)),
            )
        })
        .collect();
    harness::produce_to(&client, raw, 0, p0).await.expect("produce");
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
    // Partition 1 stopped at 10:00:05; once it is idle (2 s) partition 0's 10:09 sets the
    // watermark to 10:08 and the windows up to 10:08 are written.
    let started = Instant::now();
    while windows(&db).await.len() < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "windows: {:?}",
            windows(&db).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    token.cancel();
    task.await.expect("join").expect("clean run");
    let rows = windows(&db).await;
    assert_eq!(rows.len(), 8);
    assert_eq!(
        (rows[0].1, rows[0].2, rows[0].3),
        (BASE_MIN, 2, 2),
        "10:00 holds both partitions' records"
    );
    assert_eq!(rows, recomputed(&db).await);
}

#[tokio::test]
async fn a_restart_mid_window_and_sigkills_give_the_windows_of_an_uninterrupted_run() {
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = windowed(&db, 4, 60, 3_600, LatePolicy::Merge);
    cfg.pipeline.batch_max_records = 500;
    let client = harness::create_topics(&cfg).await.expect("topics");
    // 24,000 observations 50 ms apart (20 minutes of event time) over 300 listings and 3 shows,
    // each partition's timestamps in order.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut prices = [100.0f64; 300];
    let mut per_partition: Vec<Vec<(Vec<u8>, Vec<u8>)>> = vec![Vec::new(); 4];
    for i in 0..24_000u32 {
        let l = rng.gen_range(0..300usize);
        let roll: f64 = rng.r#gen();
        if roll < 0.1 {
            prices[l] = (prices[l] * 0.85 * 100.0).round() / 100.0;
        } else if roll < 0.2 {
            prices[l] = (prices[l] * 1.1 * 100.0).round() / 100.0;
        }
        let ms = u64::from(i) * 50;
        let t = format!(
            "2026-11-21T10:{:02}:{:02}.{:03}",
            ms / 60_000,
            (ms / 1000) % 60,
            ms % 1000
        );
        let listing = format!("L{l}");
        let json = harness::event_json_at(&format!("show{}", l % 3), &listing, prices[l], &t);
        per_partition[l % 4].push((listing.into_bytes(), json));
    }
    for (p, records) in per_partition.into_iter().enumerate() {
        harness::produce_to(&client, &cfg.kafka.topics.raw_prices.name, p as i32, records)
            .await
            .expect("produce");
    }
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    let path = harness::write_config(&cfg);
    // Each kill lands while records are still unconsumed.
    let total: i64 = hw.iter().sum();
    let mut rng = rand::thread_rng();
    for kill in 0..3 {
        let at = kills::kill_mid_stream(&path, &db, &cfg, total, 3 - kill, &mut rng).await;
        eprintln!("kill {kill}: {at} of {total} records committed");
    }
    let mut run = Running::start(&path);
    harness::wait_for_offsets(&db, &cfg, &hw, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", run.logs()));
    run.sigterm();
    let _ = run.child.wait();

    let clean = TestDb::migrated().await.expect("db");
    let mut clean_cfg = cfg.clone();
    clean_cfg.postgres.url = Secret::new(clean.url.clone());
    harness::run_to_end(&clean_cfg, &clean, &client)
        .await
        .expect("clean run");

    let killed = windows(&db).await;
    assert!(
        killed.len() >= 50,
        "3 shows × ~19 closed minutes, got {}",
        killed.len()
    );
    assert_eq!(
        killed,
        windows(&clean).await,
        "same windows as an uninterrupted run"
    );
    assert_eq!(killed, recomputed(&db).await, "windows agree with price_history");
}
