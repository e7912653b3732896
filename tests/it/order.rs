//! Out-of-order observations of one listing: a producer without keys scatters a listing over
//! partitions, and a backfill replays old history beside the engine. An observation older than
//! the listing's last one is stored in history as `out_of_order` but moves neither the current
//! price, the lowest price nor the alert state — in the engine, across a restart, and in the
//! `listing_state` a replay writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conscope::config::{Config, DetectConfig};
use conscope::pipeline::detect::stage::Detector;
use conscope::pipeline::detect::{PriceCache, Rules};
use conscope::pipeline::ingest::parse::Parser;
use conscope::pipeline::messages::InRecord;
use conscope::pipeline::persist::writer::{ListingStates, upsert_listing_states};
use serde_json::Value;

use crate::harness::{self, TestDb};

const RAW_KEY: &[u8] = b"mock:A";

fn at(price: f64, timestamp: &str) -> (Vec<u8>, Vec<u8>) {
    (
        RAW_KEY.to_vec(),
        harness::event_json_at("show1", "A", price, timestamp),
    )
}

/// `(partition, offset) → change_kind` of every stored row.
async fn kinds(db: &TestDb) -> BTreeMap<(i32, i64), String> {
    let c = db.connect().await.expect("connect");
    c.query(
        "SELECT kafka_partition, kafka_offset, change_kind FROM price_history",
        &[],
    )
    .await
    .expect("history")
    .iter()
    .map(|r| ((r.get(0), r.get(1)), r.get(2)))
    .collect()
}

/// Listing A's `(last_price, lowest_price, first_seen, last_seen, observations)`, as text.
async fn state_of_a(db: &TestDb) -> (String, String, String, String, i64) {
    let c = db.connect().await.expect("connect");
    let r = c
        .query_one(
            "SELECT last_price::text, lowest_price::text,
                    to_char(first_seen AT TIME ZONE 'UTC', 'HH24:MI'),
                    to_char(last_seen AT TIME ZONE 'UTC', 'HH24:MI'), observations
               FROM listing_state WHERE listing_key = 'mock:A'",
            &[],
        )
        .await
        .expect("listing A's state");
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

/// `(source partition, source offset, old price, new price)` of every stored alert.
async fn alerts(db: &TestDb) -> Vec<(i32, i64, String, String)> {
    let c = db.connect().await.expect("connect");
    c.query(
        "SELECT kafka_partition, kafka_offset, old_price::text, new_price::text
           FROM price_alerts ORDER BY 1, 2",
        &[],
    )
    .await
    .expect("alerts")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// Every record's JSON on every partition of `topic`.
async fn topic_values(client: &rskafka::client::Client, topic: &str, partitions: i32) -> Vec<Value> {
    let mut out = Vec::new();
    for p in 0..partitions {
        for r in harness::read_all(client, topic, p).await.expect("read topic") {
            let value = r.record.value.expect("a value");
            out.push(serde_json::from_slice(&value).expect("JSON"));
        }
    }
    out
}

/// Run the engine in-process until everything produced is committed and published.
async fn run_and_publish(cfg: &Config, db: &TestDb, client: &rskafka::client::Client) {
    let targets = harness::high_watermarks(client, cfg).await.expect("hw");
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
    harness::wait_for_offsets(db, cfg, &targets, Duration::from_secs(60))
        .await
        .expect("committed");
    let c = db.connect().await.expect("connect");
    let started = Instant::now();
    loop {
        let behind: i64 = c
            .query_one(
                "SELECT count(*) FROM kafka_offsets
                  WHERE consumer = 'engine' AND published_offset < next_offset",
                &[],
            )
            .await
            .expect("offsets")
            .get(0);
        if behind == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "publish caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    token.cancel();
    task.await.expect("join").expect("engine ran cleanly");
}

#[tokio::test]
async fn a_listing_scattered_over_two_partitions_keeps_its_latest_price_and_alerts_only_on_real_drops() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 2);
    let client = harness::create_topics(&cfg).await.expect("topics");
    let raw = &cfg.kafka.topics.raw_prices.name;

    // Partition 0 sees 10:00 and 10:05 at $100 ...
    harness::produce_to(
        &client,
        raw,
        0,
        vec![at(100.0, "2026-11-21T10:00:00"), at(100.0, "2026-11-21T10:05:00")],
    )
    .await
    .expect("produce");
    run_and_publish(&cfg, &db, &client).await;
    // ... then partition 1 delivers the 10:02 observation at $50 (a 50% "drop" if it counted),
    // and partition 0 the 10:06 one at $88 (a real 12% drop from the latest $100).
    harness::produce_to(&client, raw, 1, vec![at(50.0, "2026-11-21T10:02:00")])
        .await
        .expect("produce");
    run_and_publish(&cfg, &db, &client).await;
    harness::produce_to(&client, raw, 0, vec![at(88.0, "2026-11-21T10:06:00")])
        .await
        .expect("produce");
    run_and_publish(&cfg, &db, &client).await;

    let expected = BTreeMap::from([
        ((0, 0), "new".to_string()),
        ((0, 1), "unchanged".to_string()),
        ((0, 2), "drop".to_string()),
        ((1, 0), "out_of_order".to_string()),
    ]);
    assert_eq!(
        kinds(&db).await,
        expected,
        "the late row is stored, as out_of_order"
    );
    assert_eq!(
        state_of_a(&db).await,
        ("88.00".into(), "88.00".into(), "10:00".into(), "10:06".into(), 4),
        "the latest observation's price; the late $50 is not the lowest"
    );
    assert_eq!(
        alerts(&db).await,
        [(0, 2, "100.00".to_string(), "88.00".to_string())],
        "one alert, measured from the latest price"
    );

    // What publish wrote says the same.
    let processed = topic_values(
        &client,
        &cfg.kafka.topics.processed_prices.name,
        cfg.kafka.topics.processed_prices.partitions,
    )
    .await;
    let late: Vec<&Value> = processed.iter().filter(|v| v["source_partition"] == 1).collect();
    assert_eq!(late.len(), 1, "{processed:?}");
    assert_eq!(late[0]["change_kind"], "out_of_order");
    assert!(late[0]["previous_price"].is_null());
    let published_alerts = topic_values(
        &client,
        &cfg.kafka.topics.price_alerts.name,
        cfg.kafka.topics.price_alerts.partitions,
    )
    .await;
    assert_eq!(published_alerts.len(), 1, "{published_alerts:?}");
    assert_eq!(published_alerts[0]["source_offset"], 2);

    // After a restart (the cache warm-started from listing_state) an even older observation
    // is out of order too.
    harness::produce_to(&client, raw, 1, vec![at(20.0, "2026-11-21T09:00:00")])
        .await
        .expect("produce");
    run_and_publish(&cfg, &db, &client).await;
    assert_eq!(kinds(&db).await[&(1, 1)], "out_of_order");
    assert_eq!(
        state_of_a(&db).await,
        ("88.00".into(), "88.00".into(), "09:00".into(), "10:06".into(), 5),
        "counted, and the first sighting moved back; the price did not"
    );
    assert_eq!(alerts(&db).await.len(), 1);
}

#[tokio::test]
async fn a_replay_of_older_history_beside_the_live_state_does_not_rewind_it() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 1);
    let client = harness::create_topics(&cfg).await.expect("topics");
    let raw = &cfg.kafka.topics.raw_prices.name;
    harness::produce_to(
        &client,
        raw,
        0,
        vec![at(100.0, "2026-11-21T12:00:00"), at(90.0, "2026-11-21T12:30:00")],
    )
    .await
    .expect("produce");
    run_and_publish(&cfg, &db, &client).await;
    let live = state_of_a(&db).await;
    assert_eq!(
        live,
        ("90.00".into(), "90.00".into(), "12:00".into(), "12:30".into(), 2)
    );
    let alerts_before = alerts(&db).await;

    // A backfill of the morning, with a deep "drop" in it.
    let dir = std::env::temp_dir().join(harness::unique("order_replay"));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("morning.jsonl");
    let lines: Vec<String> = [
        (60.0, "2026-11-21T08:00:00"),
        (20.0, "2026-11-21T09:00:00"),
        (70.0, "2026-11-21T11:00:00"),
    ]
    .iter()
    .map(|(p, t)| String::from_utf8(at(*p, t).1).expect("utf-8"))
    .collect();
    std::fs::write(&file, lines.join("\n") + "\n").expect("write file");
    let config = harness::write_config(&cfg);
    let output = harness::conscope(&config)
        .args(["replay", "--json"])
        .arg(&file)
        .output()
        .expect("run conscope replay");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures: Value = serde_json::from_slice(&output.stdout).expect("figures");
    assert_eq!(figures["rows_written"], 3);
    let replayed: Vec<String> = kinds(&db)
        .await
        .into_iter()
        .filter(|((p, _), _)| *p < 0)
        .map(|(_, k)| k)
        .collect();
    assert_eq!(replayed, ["out_of_order"; 3], "history stored, state untouched");
    assert_eq!(
        state_of_a(&db).await,
        ("90.00".into(), "90.00".into(), "08:00".into(), "12:30".into(), 5)
    );
    assert_eq!(alerts(&db).await, alerts_before, "the backfill raised no alert");

    // A replay that started before the engine saw the listing has its own, older idea of it
    // (its cache was loaded before): its listing_state upsert still does not rewind the row.
    let detector = Detector::new(
        Arc::new(PriceCache::new()),
        Rules::from_config(&DetectConfig::default()),
    );
    let mut parser = Parser::new();
    let mut pending = Vec::new();
    let processed: Vec<_> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let event = parser.parse(line.as_bytes()).expect("valid");
            let record = InRecord {
                partition: -7,
                offset: i as i64,
                kafka_ts: event.timestamp,
                event,
            };
            detector.process(record, &mut pending)
        })
        .collect();
    assert_eq!(pending.len(), 1, "alone, the morning's $60 → $20 is an alert");
    let mut states = ListingStates::default();
    states.add(&processed);
    let mut c = db.connect().await.expect("connect");
    let tx = c.transaction().await.expect("begin");
    upsert_listing_states(&tx, &states).await.expect("upsert");
    tx.commit().await.expect("commit");
    assert_eq!(
        state_of_a(&db).await,
        ("90.00".into(), "90.00".into(), "08:00".into(), "12:30".into(), 8),
        "an older state adds its observations, and moves neither price"
    );

    let _ = std::fs::remove_file(config);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_observation_fires_no_watch() {
    use conscope::alert::rules::Trigger;
    use conscope::alert::watch::{self, NewWatch};
    use conscope::config::{NotifierConfig, NotifierKind, Secret};

    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 2);
    cfg.alert.enabled = true;
    cfg.alert.poll_interval = Duration::from_millis(100);
    cfg.alert.watch_refresh = Duration::from_millis(100);
    // Deliveries are not under test: the channel points at a closed port.
    cfg.alert.notifiers.insert(
        "hook".into(),
        NotifierConfig {
            kind: NotifierKind::Webhook,
            url: Secret::new("http://127.0.0.1:9/hook"),
            headers: Default::default(),
            rate_limits: None,
        },
    );
    let c = db.connect().await.expect("connect");
    let watch_id = watch::insert(
        &c,
        &NewWatch {
            user_id: Some("tester".into()),
            event_id: Some("show1".into()),
            event_name_pattern: None,
            section: None,
            max_row: None,
            max_price: None,
            trigger: Trigger::AtOrBelow { target: 6_000 },
            channel: "hook".into(),
            notify_on_first_sight: false,
            cooldown_seconds: 0,
        },
    )
    .await
    .expect("watch");
    let client = harness::create_topics(&cfg).await.expect("topics");
    let raw = &cfg.kafka.topics.raw_prices.name;
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
    let steps = [
        (0, at(100.0, "2026-11-21T10:00:00")),
        (0, at(100.0, "2026-11-21T10:05:00")),
        // $50 would be at or below the watch's $60, but it was observed before 10:05.
        (1, at(50.0, "2026-11-21T10:02:00")),
        (0, at(55.0, "2026-11-21T10:06:00")),
    ];
    for (p, record) in steps {
        harness::produce_to(&client, raw, p, vec![record])
            .await
            .expect("produce");
        let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
        harness::wait_for_offsets(&db, &cfg, &hw, Duration::from_secs(60))
            .await
            .expect("committed");
    }
    // The alert task has evaluated every processed_prices record.
    let processed = &cfg.kafka.topics.processed_prices;
    let started = Instant::now();
    loop {
        let mut behind = 0;
        for p in 0..processed.partitions {
            let end = harness::read_all(&client, &processed.name, p)
                .await
                .expect("read")
                .last()
                .map_or(0, |r| r.offset + 1);
            let next: i64 = c
                .query_opt(
                    "SELECT next_offset FROM kafka_offsets
                      WHERE consumer = 'alert' AND topic = $1 AND \"partition\" = $2",
                    &[&processed.name, &p],
                )
                .await
                .expect("offsets")
                .map_or(0, |r| r.get(0));
            behind += (end - next).max(0);
        }
        if behind == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{behind} not evaluated"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    token.cancel();
    task.await.expect("join").expect("engine ran cleanly");
    let fired: Vec<(i32, i64, String)> = c
        .query(
            "SELECT kafka_partition, kafka_offset, new_price::text FROM price_alerts
              WHERE rule = $1 ORDER BY 1, 2",
            &[&format!("watch:{watch_id}")],
        )
        .await
        .expect("watch alerts")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        fired,
        [(0, 2, "55.00".to_string())],
        "the watch fired on the latest $55, not on the older $50"
    );
}
