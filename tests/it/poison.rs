//! Poison pills: records the parser once accepted but PostgreSQL refuses. Each goes to the DLQ
//! with its reason, and none holds back the other records or partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use conscope::config::Config;
use tokio_util::sync::CancellationToken;

use crate::harness::{self, TestDb};

/// A record with its key, and the raw_prices (partition, offset) it was produced to.
type Key = (i32, i64);

/// A valid record of `listing` observed at `at`.
fn good(listing: &str, price: f64, at: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "event_id": "show1", "event_name": "Show", "venue": "Arena", "source": "mock",
        "section": "112", "row": "F", "seat": "7", "price": price,
        "timestamp": at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string(), "listing_id": listing,
    })
}

/// The seven poison classes: a record, and what the DLQ `error` header must say about it.
fn poison(at: DateTime<Utc>) -> Vec<(serde_json::Value, &'static str)> {
    let with = |field: &str, value: serde_json::Value| {
        let mut v = good("P", 50.0, at);
        v[field] = value;
        v
    };
    vec![
        (
            with("section", "1\u{0}2".into()),
            "field `section` contains a NUL character",
        ),
        (
            with("timestamp", "-5000-01-01T00:00:00".into()),
            "field `timestamp` is before 2000-01-01",
        ),
        (
            with("timestamp", "+262142-12-31T00:00:00".into()),
            "field `timestamp` is more than 5m ahead",
        ),
        (
            with("timestamp", "9999-12-31T23:59:59".into()),
            "field `timestamp` is more than 5m ahead",
        ),
        (
            with("event_id", "e".repeat(3_000).into()),
            "field `event_id` is 3000 bytes, over the 256-byte limit",
        ),
        (
            with("listing_id", "l".repeat(3_000).into()),
            "field `listing_id` is 3000 bytes, over the 256-byte limit",
        ),
        // Valid to ConScope, refused by this database's own check (SQLSTATE 23514): found by
        // splitting the batch. A 90% drop of listing A0: it would raise an alert.
        (
            {
                let mut v = good("A0", 10.0, at);
                v["section"] = "poison".into();
                v
            },
            "violates check constraint \"no_poison\" (SQLSTATE 23514)",
        ),
    ]
}

struct Produced {
    good: BTreeSet<Key>,
    /// Poison record → (key, value, expected reason).
    poison: BTreeMap<Key, (Vec<u8>, Vec<u8>, &'static str)>,
    last_good_ms: i64,
}

/// `per_partition` good records on each of `partitions` partitions (listings `A0`..`A49`,
/// event time from ten minutes ago, 60 ms apart), with the poison records among them.
async fn produce(client: &rskafka::client::Client, cfg: &Config, per_partition: usize) -> Produced {
    let partitions = cfg.kafka.topics.raw_prices.partitions;
    let start = Utc::now() - TimeDelta::minutes(10);
    let mut out = Produced {
        good: BTreeSet::new(),
        poison: BTreeMap::new(),
        last_good_ms: 0,
    };
    // Poison record k sits on partition k % partitions, a little further on each time.
    let mut poison: BTreeMap<(i32, usize), (usize, serde_json::Value, &'static str)> =
        poison(start + TimeDelta::minutes(1))
            .into_iter()
            .enumerate()
            .map(|(k, (value, reason))| {
                let at = (k as i32 % partitions, 1_000 + 300 * (k / partitions as usize));
                (at, (k, value, reason))
            })
            .collect();
    for p in 0..partitions {
        let mut records = Vec::with_capacity(per_partition + 2);
        for i in 0..per_partition {
            if let Some((k, value, reason)) = poison.remove(&(p, i)) {
                let key = format!("poison{k}").into_bytes();
                let value = serde_json::to_vec(&value).expect("json");
                out.poison
                    .insert((p, records.len() as i64), (key.clone(), value.clone(), reason));
                records.push((key, value));
            }
            let listing = format!("A{}", i % 50);
            let at = start + TimeDelta::milliseconds(60 * i as i64);
            out.last_good_ms = out.last_good_ms.max(at.timestamp_millis());
            let value = good(&listing, 100.0 + (i % 7) as f64, at);
            out.good.insert((p, records.len() as i64));
            records.push((
                format!("mock:{listing}").into_bytes(),
                serde_json::to_vec(&value).expect("json"),
            ));
        }
        harness::produce_to(client, &cfg.kafka.topics.raw_prices.name, p, records)
            .await
            .expect("produce");
    }
    assert_eq!(out.poison.len(), 7, "every poison record was placed");
    out
}

async fn history_keys(db: &TestDb) -> BTreeSet<Key> {
    let c = db.connect().await.expect("connect");
    c.query("SELECT kafka_partition, kafka_offset FROM price_history", &[])
        .await
        .expect("history")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// The DLQ's records by source (partition, offset): (key, value, error header).
async fn dlq(client: &rskafka::client::Client, cfg: &Config) -> BTreeMap<Key, (Vec<u8>, Vec<u8>, String)> {
    let mut out = BTreeMap::new();
    for r in harness::read_all(client, &cfg.kafka.topics.dlq.name, 0)
        .await
        .expect("dlq")
    {
        let h = &r.record.headers;
        let text = |k: &str| String::from_utf8_lossy(&h[k]).to_string();
        assert_eq!(text("source_topic"), cfg.kafka.topics.raw_prices.name);
        let source: Key = (
            text("source_partition").parse().expect("partition"),
            text("source_offset").parse().expect("offset"),
        );
        let previous = out.insert(
            source,
            (
                r.record.key.unwrap_or_default(),
                r.record.value.unwrap_or_default(),
                text("error"),
            ),
        );
        assert!(previous.is_none(), "{source:?} is in the DLQ once");
    }
    out
}

#[tokio::test]
async fn poison_records_go_to_the_dlq_with_their_reason_and_hold_back_nothing() {
    let db = TestDb::migrated().await.expect("db");
    db.connect()
        .await
        .expect("connect")
        .batch_execute("ALTER TABLE price_history ADD CONSTRAINT no_poison CHECK (section <> 'poison')")
        .await
        .expect("constraint");
    let mut cfg = harness::config(&db, 4);
    cfg.windows.widths = vec!["1m".into()];
    cfg.windows.allowed_lateness = Duration::from_secs(1);
    let client = harness::create_topics(&cfg).await.expect("topics");
    let produced = produce(&client, &cfg, 5_000).await;
    let targets = harness::high_watermarks(&client, &cfg).await.expect("watermarks");
    assert_eq!(targets, vec![5_002, 5_002, 5_002, 5_001]);

    if std::env::var("CONSCOPE_TEST_LOG").is_ok() {
        conscope::logging::init(conscope::config::LogFormat::Human, "info,conscope=debug");
    }
    let started = Instant::now();
    let token = CancellationToken::new();
    let engine = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
    let reached = harness::wait_for_offsets(&db, &cfg, &targets, Duration::from_secs(60)).await;
    let took = started.elapsed();
    token.cancel();
    engine.await.expect("join").expect("engine");
    reached.expect("offsets reach the end of every partition");
    assert!(took < Duration::from_secs(30), "took {took:?}");

    assert_eq!(
        history_keys(&db).await,
        produced.good,
        "every good record is stored, once"
    );
    let dlq = dlq(&client, &cfg).await;
    assert_eq!(
        dlq.keys().collect::<Vec<_>>(),
        produced.poison.keys().collect::<Vec<_>>(),
        "the DLQ holds exactly the poison records"
    );
    for (source, (key, value, reason)) in &produced.poison {
        let (dlq_key, dlq_value, error) = &dlq[source];
        assert_eq!(
            (dlq_key, dlq_value),
            (key, value),
            "{source:?}: the original bytes"
        );
        assert!(
            error.contains(reason),
            "{source:?}: {error:?} should say {reason:?}"
        );
    }
    let (refused, _) = produced
        .poison
        .iter()
        .find(|(_, (_, _, r))| r.contains("23514"))
        .expect("the database-refused record");
    let c = db.connect().await.expect("connect");
    let alerts: i64 = c
        .query_one(
            "SELECT count(*) FROM price_alerts WHERE kafka_partition = $1 AND kafka_offset = $2",
            &[&refused.0, &refused.1],
        )
        .await
        .expect("alerts")
        .get(0);
    assert_eq!(alerts, 0, "the refused record's alert is dropped with it");
    // No written window counts the refused record: each equals its recomputation from the
    // stored history.
    let mismatched: i64 = c
        .query_one(
            "SELECT count(*) FROM price_windows w
              WHERE w.observations <> (SELECT count(*) FROM price_history h
                                        WHERE h.event_id = w.event_id AND h.source = w.source
                                          AND h.\"timestamp\" >= w.window_start AND h.\"timestamp\" < w.window_end)",
            &[],
        )
        .await
        .expect("windows")
        .get(0);
    let written: i64 = c
        .query_one("SELECT count(*) FROM price_windows", &[])
        .await
        .expect("windows")
        .get(0);
    assert!(written >= 3, "windows closed as records came: {written}");
    assert_eq!(mismatched, 0, "every window agrees with the stored history");
    let watermark: DateTime<Utc> = c
        .query_one("SELECT watermark FROM window_progress", &[])
        .await
        .expect("watermark")
        .get(0);
    assert!(
        watermark.timestamp_millis() <= produced.last_good_ms,
        "the far-future records did not move the watermark: {watermark}"
    );
}

/// A TCP proxy in front of Postgres that, once, lets the engine's COMMIT of a batch (a COMMIT
/// on a connection that ran `COPY price_history`) reach the server, waits for the server's
/// answer, and then cuts the connection instead of passing the answer on: the commit happened,
/// the engine cannot know.
struct CommitCutter {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl CommitCutter {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let done = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let done = done.clone();
                tokio::spawn(async move {
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let armed = Arc::new(AtomicBool::new(false));
                    let cutting = armed.clone();
                    let up = tokio::spawn(async move {
                        let mut copied = false;
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n) = cr.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            let chunk = &buf[..n];
                            copied |= chunk.windows(18).any(|w| w == b"COPY price_history");
                            if copied && chunk.windows(7).any(|w| w == b"COMMIT\0") {
                                armed.store(true, Ordering::SeqCst);
                            }
                            if sw.write_all(chunk).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if cutting.load(Ordering::SeqCst) && !done.swap(true, Ordering::SeqCst) {
                            // The server answered the COMMIT: drop the answer and the connection.
                            break;
                        }
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    up.abort();
                });
            }
        });
        Self { port, cut }
    }
}

#[tokio::test]
async fn a_commit_whose_answer_was_lost_is_found_in_the_stored_offsets_not_retried() {
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 2);
    // Many batches: the ones after the cut one must follow it.
    cfg.pipeline.batch_max_records = 500;
    let client = harness::create_topics(&cfg).await.expect("topics");
    let at = Utc::now() - TimeDelta::minutes(5);
    let mut produced = BTreeSet::new();
    for p in 0..2 {
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..2_000)
            .map(|i| {
                let listing = format!("L{p}_{}", i % 40);
                let value = good(&listing, 50.0 + (i % 9) as f64, at + TimeDelta::milliseconds(i));
                produced.insert((p, i));
                (listing.into_bytes(), serde_json::to_vec(&value).expect("json"))
            })
            .collect();
        harness::produce_to(&client, &cfg.kafka.topics.raw_prices.name, p, records)
            .await
            .expect("produce");
    }
    // Point the engine at the proxy instead of Postgres itself.
    let url: tokio_postgres::Config = db.url.parse().expect("url");
    let host = match &url.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("a TCP host expected, got {other:?}"),
    };
    let upstream = tokio::net::lookup_host((host.as_str(), url.get_ports()[0]))
        .await
        .expect("resolve")
        .next()
        .expect("address");
    let cutter = CommitCutter::start(upstream).await;
    let proxied = db.url.replacen(
        &format!(":{}/", url.get_ports()[0]),
        &format!(":{}/", cutter.port),
        1,
    );
    assert_ne!(proxied, db.url);
    cfg.postgres.url = conscope::config::Secret::new(proxied);

    let targets = harness::high_watermarks(&client, &cfg).await.expect("watermarks");
    let token = CancellationToken::new();
    let engine = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
    let reached = harness::wait_for_offsets(&db, &cfg, &targets, Duration::from_secs(30)).await;
    token.cancel();
    engine.await.expect("join").expect("engine");
    assert!(
        cutter.cut.load(std::sync::atomic::Ordering::SeqCst),
        "a batch's COMMIT lost its answer"
    );
    reached.expect("the engine went on past the unanswered COMMIT");
    assert_eq!(history_keys(&db).await, produced, "every record stored, once");
    let c = db.connect().await.expect("connect");
    let published: Vec<i64> = c
        .query(
            "SELECT published_offset FROM kafka_offsets WHERE consumer = 'engine' ORDER BY \"partition\"",
            &[],
        )
        .await
        .expect("offsets")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        published, targets,
        "the batch behind the lost answer was published too"
    );
}

#[tokio::test]
async fn a_far_future_record_does_not_move_the_window_watermark() {
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 1);
    cfg.windows.widths = vec!["1m".into()];
    cfg.windows.allowed_lateness = Duration::from_secs(1);
    let client = harness::create_topics(&cfg).await.expect("topics");
    // Four minutes of observations from a minute boundary, with one dated 9999 a minute in.
    let now = Utc::now();
    let start = DateTime::from_timestamp((now.timestamp() / 60 - 10) * 60, 0).expect("time");
    let mut records = Vec::new();
    let mut last_good = start;
    for i in 0..2_400 {
        if i == 600 {
            let mut v = good("A1", 80.0, start);
            v["timestamp"] = "9999-12-31T23:59:59".into();
            records.push((b"mock:A1".to_vec(), serde_json::to_vec(&v).expect("json")));
        }
        let at = start + TimeDelta::milliseconds(100 * i);
        last_good = at;
        let listing = format!("A{}", i % 20);
        let v = good(&listing, 100.0 + (i % 3) as f64, at);
        records.push((listing.into_bytes(), serde_json::to_vec(&v).expect("json")));
    }
    harness::produce_to(&client, &cfg.kafka.topics.raw_prices.name, 0, records)
        .await
        .expect("produce");
    harness::run_to_end(&cfg, &db, &client).await.expect("engine");

    let dlq = dlq(&client, &cfg).await;
    let (_, _, error) = &dlq[&(0, 600)];
    assert!(error.contains("more than 5m ahead of the clock"), "{error}");
    let c = db.connect().await.expect("connect");
    let watermark: DateTime<Utc> = c
        .query_one("SELECT watermark FROM window_progress", &[])
        .await
        .expect("watermark")
        .get(0);
    assert!(
        watermark <= last_good,
        "watermark {watermark} is past the records"
    );
    // The windows after the far-future record closed on time: none of their records was late.
    let windows: Vec<(i64, i64, i32)> = c
        .query(
            "SELECT extract(epoch FROM window_start - $1)::int8 / 60, observations, late_records
               FROM price_windows ORDER BY window_start",
            &[&start],
        )
        .await
        .expect("windows")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(windows, vec![(0, 600, 0), (1, 600, 0), (2, 600, 0)]);
}

/// Log lines of the engine run in this (current-thread) test, as text.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|v| String::from_utf8_lossy(&v).to_string())
            .unwrap_or_default()
    }

    fn lines(&self, level: &str, message: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(level) && l.contains(message))
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test]
async fn a_failing_write_says_what_the_database_said_once_and_once_more_when_it_succeeds() {
    let db = TestDb::migrated().await.expect("db");
    let admin = db.connect().await.expect("connect");
    let cfg = harness::config(&db, 1);
    let client = harness::create_topics(&cfg).await.expect("topics");

    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("conscope=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let token = CancellationToken::new();
    let engine = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
    let started = Instant::now();
    while logs.lines("INFO", "ingest started").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the engine did not start:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Writes fail (SQLSTATE 42P01) until the table is back.
    admin
        .batch_execute("ALTER TABLE price_history RENAME TO price_history_away")
        .await
        .expect("rename");
    let at = Utc::now() - TimeDelta::minutes(1);
    let records = (0..100)
        .map(|i| {
            let v = good(&format!("L{i}"), 20.0, at + TimeDelta::milliseconds(i));
            (
                format!("mock:L{i}").into_bytes(),
                serde_json::to_vec(&v).expect("json"),
            )
        })
        .collect();
    harness::produce_to(&client, &cfg.kafka.topics.raw_prices.name, 0, records)
        .await
        .expect("produce");
    while logs.lines("DEBUG", "batch write failed again").len() < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no retries seen:\n{}",
            logs.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin
        .batch_execute("ALTER TABLE price_history_away RENAME TO price_history")
        .await
        .expect("rename back");
    let reached = harness::wait_for_offsets(&db, &cfg, &[100], Duration::from_secs(30)).await;
    token.cancel();
    engine.await.expect("join").expect("engine");
    reached.expect("the batch is written once the table is back");

    let warns = logs.lines("WARN", "batch write failed");
    assert_eq!(warns.len(), 1, "one WARN for the whole outage: {warns:#?}");
    assert!(
        warns[0].contains("relation \"price_history\" does not exist (SQLSTATE 42P01)"),
        "the database's message and SQLSTATE: {}",
        warns[0]
    );
    assert!(!warns[0].contains(&db.url), "never the connection string");
    let infos = logs.lines("INFO", "batch write succeeded again");
    assert_eq!(infos.len(), 1, "one INFO when it recovers: {infos:#?}");
}
