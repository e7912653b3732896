//! The engine end to end: exact rows, crash safety, outages, shutdown, backpressure, scale-out.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use conscope::config::{Config, Secret};
use tokio_util::sync::CancellationToken;

use crate::harness::{self, PrivateBroker, PrivatePg, Running, TestDb};
use crate::kills;

fn soak() -> bool {
    std::env::var("CONSCOPE_SOAK").is_ok_and(|v| v == "1")
}

async fn alert_ids(db: &TestDb) -> BTreeSet<String> {
    let c = db.connect().await.expect("connect");
    c.query("SELECT alert_id FROM price_alerts", &[])
        .await
        .expect("alerts")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn history_keys(db: &TestDb) -> Vec<(i32, i64)> {
    let c = db.connect().await.expect("connect");
    c.query(
        "SELECT kafka_partition, kafka_offset FROM price_history ORDER BY 1, 2",
        &[],
    )
    .await
    .expect("history")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// A DLQ record as ConScope wrote it: key, value, `error` header.
type DlqEntry = (Option<Vec<u8>>, Option<Vec<u8>>, String);

/// Every (partition, offset) of the topic, exactly once.
fn every_offset(hw: &[i64]) -> Vec<(i32, i64)> {
    hw.iter()
        .enumerate()
        .flat_map(|(p, n)| (0..*n).map(move |o| (p as i32, o)))
        .collect()
}

#[tokio::test]
async fn produced_records_become_exactly_the_expected_rows_alerts_and_dlq_records() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 2);
    let client = harness::create_topics(&cfg).await.expect("topics");
    let raw = &cfg.kafka.topics.raw_prices.name;
    let a = |price| (b"mock:A".to_vec(), harness::event_json("show1", "A", price));
    let b = |price| (b"mock:B".to_vec(), harness::event_json("show1", "B", price));
    // Partition 0: A 100 → 100 (re-poll) → 80 (drop 20%, $20: alert) → 80 → 90 (rise) → 50 (alert).
    harness::produce_to(
        &client,
        raw,
        0,
        vec![a(100.0), a(100.0), a(80.0), a(80.0), a(90.0), a(50.0)],
    )
    .await
    .expect("produce");
    // Partition 1: B 30 → 29.99 (one cent: noise) → 20 (drop 33%, $9.99: alert), with bad records between.
    let bad: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b"k1".to_vec(), b"".to_vec()),
        (b"k2".to_vec(), b"[1,2,3]".to_vec()),
        (b"k3".to_vec(), b"{\"event_id\": ".to_vec()),
        (b"k4".to_vec(), vec![0xff, 0xfe, 0x7b]),
        (b"k5".to_vec(), harness::event_json("show1", "Z", 0.0)),
        (b"k6".to_vec(), vec![b' '; 5 * 1024 * 1024]),
    ];
    let mut p1 = vec![b(30.0)];
    p1.extend(bad.iter().take(3).cloned());
    p1.push(b(29.99));
    p1.extend(bad.iter().skip(3).cloned());
    p1.push(b(20.0));
    harness::produce_to(&client, raw, 1, p1).await.expect("produce");

    harness::run_to_end(&cfg, &db, &client).await.expect("engine");

    assert_eq!(db.count("SELECT count(*) FROM price_history").await, 9);
    assert_eq!(
        db.count("SELECT count(*) FROM price_history WHERE change_kind = 'drop'")
            .await,
        4,
        "three qualifying drops and one below the noise floor"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM price_history WHERE change_kind = 'unchanged'")
            .await,
        2
    );
    let c = db.connect().await.expect("connect");
    let alerts = c
        .query(
            "SELECT listing_key, old_price::float8, new_price::float8, kafka_partition, kafka_offset
               FROM price_alerts ORDER BY kafka_partition, kafka_offset",
            &[],
        )
        .await
        .expect("alerts");
    let alerts: Vec<(String, f64, f64, i32, i64)> = alerts
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(
        alerts,
        vec![
            ("mock:A".into(), 100.0, 80.0, 0, 2),
            ("mock:A".into(), 90.0, 50.0, 0, 5),
            ("mock:B".into(), 29.99, 20.0, 1, 8),
        ]
    );
    let state = c
        .query(
            "SELECT listing_key, last_price::float8, lowest_price::float8, observations FROM listing_state ORDER BY 1",
            &[],
        )
        .await
        .expect("state");
    let state: Vec<(String, f64, f64, i64)> = state
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        state,
        vec![("mock:A".into(), 50.0, 50.0, 6), ("mock:B".into(), 20.0, 20.0, 3)]
    );
    let offsets = c
        .query(
            "SELECT \"partition\", next_offset, published_offset FROM kafka_offsets WHERE consumer = 'engine' ORDER BY 1",
            &[],
        )
        .await
        .expect("offsets");
    let offsets: Vec<(i32, i64, i64)> = offsets.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    assert_eq!(
        offsets,
        vec![(0, 6, 6), (1, 9, 9)],
        "stored offsets equal the high watermarks"
    );

    let dlq = harness::read_all(&client, &cfg.kafka.topics.dlq.name, 0)
        .await
        .expect("dlq");
    assert_eq!(dlq.len(), 6);
    // By source offset: (key, value, error) exactly as ConScope wrote them.
    let mut by_offset: HashMap<i64, DlqEntry> = HashMap::new();
    for r in dlq {
        let h = &r.record.headers;
        assert_eq!(h["source_partition"], b"1");
        assert_eq!(h["source_topic"], raw.as_bytes());
        let offset: i64 = String::from_utf8_lossy(&h["source_offset"])
            .parse()
            .expect("offset");
        let error = String::from_utf8_lossy(&h["error"]).to_string();
        by_offset.insert(offset, (r.record.key, r.record.value, error));
    }
    let mut offsets: Vec<i64> = by_offset.keys().copied().collect();
    offsets.sort_unstable();
    assert_eq!(
        offsets,
        [1, 2, 3, 5, 6, 7],
        "each bad record once, at its own offset"
    );
    for (offset, (key, value)) in [1, 2, 3, 5, 6].into_iter().zip(&bad) {
        let (stored_key, stored_value, error) = &by_offset[&offset];
        assert_eq!(
            stored_key.as_ref(),
            Some(key),
            "offset {offset}: the original key"
        );
        assert_eq!(
            stored_value.as_deref().unwrap_or_default(),
            value.as_slice(),
            "offset {offset}: the DLQ keeps the original bytes"
        );
        assert!(!error.is_empty());
    }
    assert_eq!(by_offset[&1].2, "empty value");
    assert_eq!(by_offset[&6].2, "field `price` must be greater than 0");
    // The 5 MB value at offset 7: Kafka returns an oversized first record anyway, and the
    // parser refuses it; Tansu 0.6 never returns it, and the engine records the offset as
    // unreadable instead of stalling. Either way, what ConScope wrote is checked as written.
    let (key, value, error) = &by_offset[&7];
    match key {
        Some(key) => {
            assert_eq!(key, b"k6");
            assert!(error.contains("over the 65536-byte limit"), "{error}");
            let value = value.as_deref().unwrap_or_default();
            assert!(
                !value.is_empty() && bad[5].1.starts_with(value),
                "the DLQ keeps the original bytes (or their prefix)"
            );
        }
        None => {
            assert!(
                value.as_deref().is_none_or(<[u8]>::is_empty),
                "an unreadable record has no value to keep"
            );
            assert_eq!(
                error,
                "record at offset 7 is larger than 16777216 bytes and could not be fetched"
            );
        }
    }

    let alerts_out: usize = {
        let mut n = 0;
        for p in 0..cfg.kafka.topics.price_alerts.partitions {
            n += harness::read_all(&client, &cfg.kafka.topics.price_alerts.name, p)
                .await
                .expect("read")
                .len();
        }
        n
    };
    assert_eq!(alerts_out, 3, "each alert published once");
    let mut processed = 0;
    for p in 0..cfg.kafka.topics.processed_prices.partitions {
        processed += harness::read_all(&client, &cfg.kafka.topics.processed_prices.name, p)
            .await
            .expect("read")
            .len();
    }
    assert_eq!(processed, 9);
}

#[tokio::test]
async fn a_restart_neither_re_alerts_nor_misses_a_drop_made_while_down() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 1);
    let client = harness::create_topics(&cfg).await.expect("topics");
    let raw = &cfg.kafka.topics.raw_prices.name;
    let a = |price| (b"mock:A".to_vec(), harness::event_json("show1", "A", price));
    harness::produce_to(&client, raw, 0, vec![a(100.0), a(70.0)])
        .await
        .expect("produce");
    harness::run_to_end(&cfg, &db, &client).await.expect("first run");
    assert_eq!(alert_ids(&db).await.len(), 1);
    // While ConScope is down: a re-poll at the same price, then a drop.
    harness::produce_to(&client, raw, 0, vec![a(70.0), a(40.0)])
        .await
        .expect("produce");
    harness::run_to_end(&cfg, &db, &client).await.expect("second run");
    let c = db.connect().await.expect("connect");
    let kinds: Vec<String> = c
        .query("SELECT change_kind FROM price_history ORDER BY kafka_offset", &[])
        .await
        .expect("history")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["new", "drop", "unchanged", "drop"]);
    assert_eq!(alert_ids(&db).await.len(), 2);
}

#[tokio::test]
async fn sigkill_at_random_moments_loses_nothing_and_doubles_nothing() {
    let records: u64 = if soak() { 400_000 } else { 60_000 };
    let kills = if soak() { 20 } else { 5 };
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 4);
    cfg.pipeline.batch_max_records = 2_000;
    let client = harness::create_topics(&cfg).await.expect("topics");
    harness::produce_feed(&client, &cfg, records, 11, 5_000)
        .await
        .expect("feed");
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    let path = harness::write_config(&cfg);

    // Each kill lands while records are still unconsumed.
    let total: i64 = hw.iter().sum();
    let mut rng = rand::thread_rng();
    for kill in 0..kills {
        let at = kills::kill_mid_stream(&path, &db, &cfg, total, kills - kill, &mut rng).await;
        eprintln!("kill {kill}: {at} of {total} records committed");
    }
    let mut run = Running::start(&path);
    harness::wait_for_offsets(&db, &cfg, &hw, Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", run.logs()));
    kills::wait_published(&db, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", run.logs()));
    run.sigterm();
    let _ = run.child.wait();

    assert_eq!(
        history_keys(&db).await,
        every_offset(&hw),
        "every record exactly once"
    );
    let killed_alerts = alert_ids(&db).await;
    // Every alert was raised by a stored drop (the ids themselves are compared below).
    let unexplained = db
        .count(
            "SELECT count(*) FROM price_alerts a
              WHERE NOT EXISTS (SELECT 1 FROM price_history h
                                 WHERE (h.kafka_partition, h.kafka_offset) = (a.kafka_partition, a.kafka_offset)
                                   AND h.change_kind = 'drop')",
        )
        .await;
    assert_eq!(unexplained, 0, "every alert comes from a stored drop");
    // No foreign key checks this (sql/005): every batch writes its events in its own transaction.
    for table in ["price_history", "listing_state"] {
        let orphans = format!(
            "SELECT count(*) FROM {table} t
              WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.event_id)"
        );
        assert_eq!(db.count(&orphans).await, 0, "every {table} row's event is stored");
    }
    kills::assert_outputs_complete(&client, &cfg, &every_offset(&hw), &killed_alerts).await;

    // The same feed, uninterrupted, into a fresh database.
    let clean = TestDb::migrated().await.expect("db");
    let mut clean_cfg = cfg.clone();
    clean_cfg.postgres.url = Secret::new(clean.url.clone());
    harness::run_to_end(&clean_cfg, &clean, &client)
        .await
        .expect("clean run");
    assert!(!killed_alerts.is_empty());
    assert_eq!(
        killed_alerts,
        alert_ids(&clean).await,
        "same alerts as an uninterrupted run"
    );
}

#[tokio::test]
async fn sigterm_commits_what_was_processed_and_a_restart_continues_without_gap() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 2);
    let client = harness::create_topics(&cfg).await.expect("topics");
    harness::produce_feed(&client, &cfg, 40_000, 5, 2_000)
        .await
        .expect("feed");
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    let path = harness::write_config(&cfg);
    let mut run = Running::start(&path);
    // Stop it mid-stream.
    let started = Instant::now();
    while db.count("SELECT count(*) FROM price_history").await < 2_000 {
        assert!(started.elapsed() < Duration::from_secs(60), "{}", run.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.sigterm();
    let status = run.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{}", run.logs());
    let logs = run.logs();
    assert!(logs.contains("persist drained and stopped"), "{logs}");
    let rows = db.count("SELECT count(*) FROM price_history").await;
    let stored = db
        .count("SELECT coalesce(sum(next_offset), 0)::int8 FROM kafka_offsets WHERE consumer = 'engine'")
        .await;
    assert_eq!(
        rows, stored,
        "what was processed is committed together with its offsets"
    );

    let mut run = Running::start(&path);
    harness::wait_for_offsets(&db, &cfg, &hw, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", run.logs()));
    run.sigterm();
    let _ = run.child.wait();
    assert_eq!(history_keys(&db).await, every_offset(&hw));
}

#[tokio::test]
async fn two_instances_split_the_partitions_and_write_what_one_would() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 4);
    let client = harness::create_topics(&cfg).await.expect("topics");
    harness::produce_feed(&client, &cfg, 20_000, 9, 1_000)
        .await
        .expect("feed");
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");

    let token = CancellationToken::new();
    let mut tasks = Vec::new();
    for instance in 0..2 {
        let mut c: Config = cfg.clone();
        c.instances = 2;
        c.instance = instance;
        assert_eq!(
            c.owned_partitions(),
            if instance == 0 { vec![0, 2] } else { vec![1, 3] }
        );
        tasks.push(tokio::spawn(conscope::runtime::run(c, token.clone())));
    }
    harness::wait_for_offsets(&db, &cfg, &hw, Duration::from_secs(120))
        .await
        .expect("both done");
    token.cancel();
    for t in tasks {
        t.await.expect("join").expect("instance ran cleanly");
    }
    assert_eq!(history_keys(&db).await, every_offset(&hw));

    let single = TestDb::migrated().await.expect("db");
    let mut one = cfg.clone();
    one.postgres.url = Secret::new(single.url.clone());
    harness::run_to_end(&one, &single, &client)
        .await
        .expect("single run");
    assert_eq!(alert_ids(&db).await, alert_ids(&single).await);
    let states = |db: &TestDb| {
        let db_url = db.url.clone();
        async move {
            let (c, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
                .await
                .expect("connect");
            tokio::spawn(conn);
            c.query(
                "SELECT listing_key, last_price::text, lowest_price::text FROM listing_state ORDER BY 1",
                &[],
            )
            .await
            .expect("state")
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                )
            })
            .collect::<Vec<_>>()
        }
    };
    assert_eq!(states(&db).await, states(&single).await);
}

#[tokio::test]
async fn a_postgres_outage_is_waited_out_with_bounded_memory_and_nothing_lost() {
    let pg = PrivatePg::start().expect("private postgres");
    let url = pg.create_db("conscope").await.expect("db");
    let db = TestDb::migrated().await.expect("scratch db for the config");
    let mut cfg = harness::config(&db, 2);
    cfg.postgres.url = Secret::new(url.clone());
    cfg.postgres.connect_timeout = Duration::from_secs(2);
    cfg.postgres.backoff.max = Duration::from_secs(1);
    let client = harness::create_topics(&cfg).await.expect("topics");
    harness::produce_feed(&client, &cfg, 20_000, 3, 1_000)
        .await
        .expect("feed");
    let path = harness::write_config(&cfg);
    let mut run = Running::start(&path);
    let pgdb = PgAt(url.clone());
    let started = Instant::now();
    while pgdb.count("SELECT count(*) FROM price_history").await < 1 {
        assert!(started.elapsed() < Duration::from_secs(60), "{}", run.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pg.pause().expect("stop postgres");
    // More records arrive while Postgres is down.
    harness::produce_feed(&client, &cfg, 30_000, 4, 1_000)
        .await
        .expect("feed");
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    // The positive signal first: the engine has seen the outage and said so.
    let started = Instant::now();
    while !run.logs().contains("PostgreSQL is unavailable") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no outage reported:\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_start = harness::rss_kib(run.child.id());
    let mut rss_max = rss_start;
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rss_max = rss_max.max(harness::rss_kib(run.child.id()));
    }
    assert!(
        run.child.try_wait().expect("status").is_none(),
        "conscope kept running:\n{}",
        run.logs()
    );
    pg.resume().expect("start postgres");
    let started = Instant::now();
    loop {
        let done = pgdb.count("SELECT count(*) FROM price_history").await;
        if done == hw.iter().sum::<i64>() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{done} rows\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.sigterm();
    let _ = run.child.wait();
    assert_eq!(
        pgdb.keys().await,
        every_offset(&hw),
        "nothing lost, nothing doubled"
    );
    eprintln!("RSS during the outage: {rss_start} KiB at start, {rss_max} KiB at most");
    assert!(
        rss_max < rss_start + 64 * 1024,
        "memory grew by more than 64 MiB while Postgres was down ({rss_start} → {rss_max} KiB)"
    );
    assert!(
        run.logs().contains("PostgreSQL is available again"),
        "{}",
        run.logs()
    );
}

#[tokio::test]
async fn a_broker_outage_is_ridden_out_by_ingest_and_publish() {
    let mut broker = PrivateBroker::start().expect("private broker");
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 2);
    cfg.kafka.brokers = vec![broker.address()];
    cfg.kafka.backoff.deadline = Duration::from_secs(60);
    cfg.kafka.backoff.max = Duration::from_secs(1);
    cfg.kafka.request_timeout = Duration::from_secs(3);
    let client = harness::create_topics(&cfg).await.expect("topics");
    harness::produce_feed(&client, &cfg, 10_000, 21, 800)
        .await
        .expect("feed");
    let path = harness::write_config(&cfg);
    let mut run = Running::start(&path);
    let started = Instant::now();
    while db.count("SELECT count(*) FROM price_history").await < 10_000 {
        assert!(started.elapsed() < Duration::from_secs(60), "{}", run.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.pause();
    tokio::time::sleep(Duration::from_secs(12)).await;
    broker.resume().expect("restart broker");
    let client = conscope::kafka::connect(&cfg.kafka).await.expect("reconnect");
    harness::produce_feed(&client, &cfg, 10_000, 22, 800)
        .await
        .expect("feed after outage");
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    harness::wait_for_offsets(&db, &cfg, &hw, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", run.logs()));
    run.sigterm();
    let status = run.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{}", run.logs());
    assert_eq!(history_keys(&db).await, every_offset(&hw));
    // Publish caught up too: every committed record reached processed_prices at least once.
    let c = db.connect().await.expect("connect");
    let published: Vec<(i64, i64)> = c
        .query(
            "SELECT next_offset, published_offset FROM kafka_offsets WHERE consumer = 'engine'",
            &[],
        )
        .await
        .expect("offsets")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(published.iter().all(|(n, p)| n == p), "{published:?}");
}

#[tokio::test]
async fn a_stalled_postgres_keeps_memory_bounded_by_the_channels() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 2);
    let client = harness::create_topics(&cfg).await.expect("topics");
    harness::produce_feed(&client, &cfg, 5_000, 13, 1_000)
        .await
        .expect("feed");
    let path = harness::write_config(&cfg);
    let mut run = Running::start(&path);
    let started = Instant::now();
    while db.count("SELECT count(*) FROM price_history").await < 5_000 {
        assert!(started.elapsed() < Duration::from_secs(60), "{}", run.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Hold a lock that blocks every write to price_history.
    let mut locker = db.connect().await.expect("connect");
    let tx = locker.transaction().await.expect("tx");
    tx.batch_execute("LOCK TABLE price_history IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let at_lock = kills::committed(&db, &cfg).await;
    harness::produce_feed(&client, &cfg, 150_000, 14, 5_000)
        .await
        .expect("backlog");
    // The positive signal first: a persist transaction is waiting for the lock (the engine is
    // holding the backlog in its channels, not idle).
    let started = Instant::now();
    while db
        .count(
            "SELECT count(*) FROM pg_locks
              WHERE relation = 'price_history'::regclass AND NOT granted",
        )
        .await
        < 1
    {
        assert!(started.elapsed() < Duration::from_secs(60), "{}", run.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut samples = Vec::new();
    for _ in 0..10 {
        samples.push(harness::rss_kib(run.child.id()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The stall held: nothing committed while price_history was locked, the backlog waiting.
    let during = kills::committed(&db, &cfg).await;
    tx.rollback().await.expect("unlock");
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    assert_eq!(
        during, at_lock,
        "no batch committed while price_history was locked"
    );
    assert!(
        during < hw.iter().sum::<i64>(),
        "the backlog was still unconsumed"
    );
    harness::wait_for_offsets(&db, &cfg, &hw, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", run.logs()));
    run.sigterm();
    let _ = run.child.wait();
    eprintln!("RSS while stalled (KiB): {samples:?}");
    let (first, max) = (samples[0], *samples.iter().max().expect("samples"));
    // A 150k-record backlog is ~60 MB of JSON: bounded channels keep the process far below that.
    assert!(
        max < first + 32 * 1024,
        "RSS grew from {first} to {max} KiB while stalled"
    );
    assert_eq!(history_keys(&db).await, every_offset(&hw));
}

/// A database URL on a private cluster.
struct PgAt(String);

impl PgAt {
    /// Every stored (kafka_partition, kafka_offset), in order.
    async fn keys(&self) -> Vec<(i32, i64)> {
        let (c, conn) = tokio_postgres::connect(&self.0, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        c.query(
            "SELECT kafka_partition, kafka_offset FROM price_history ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    }

    async fn count(&self, sql: &str) -> i64 {
        match tokio_postgres::connect(&self.0, tokio_postgres::NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                c.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or(0)
            }
            Err(_) => 0,
        }
    }
}
