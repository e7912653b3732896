//! Outages, request sizes and partition counts: the broker or Postgres down for minutes under a
//! running engine (waited out, readiness 503 meanwhile, every record stored once after), produce
//! requests measured by a proxy in front of a private broker (an outbox recovery of 200k records
//! and an oversize DLQ value stay under `kafka.max_request_bytes`), and partitions the broker
//! has beyond config.toml's, at start and added mid-run.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conscope::config::{Config, LogFormat, Secret};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{self, PrivateBroker, PrivatePg, Running, TestDb};

/// How long each outage lasts.
const OUTAGE: Duration = Duration::from_secs(180);

/// Every (partition, offset) below the high watermarks, once each, in order.
fn every_offset(hw: &[i64]) -> Vec<(i32, i64)> {
    hw.iter()
        .enumerate()
        .flat_map(|(p, n)| (0..*n).map(move |o| (p as i32, o)))
        .collect()
}

/// Stored `(partition, offset)` of price_history, duplicates kept.
async fn history_keys(url: &str) -> Vec<(i32, i64)> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
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

/// A count from a database that may be down (0 then).
async fn count_at(url: &str, sql: &str) -> i64 {
    match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        Ok((c, conn)) => {
            tokio::spawn(conn);
            c.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or(0)
        }
        Err(_) => 0,
    }
}

/// `GET http://127.0.0.1:port/path`: status and body (status 0 when nothing answers).
async fn get(port: u16, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    match client.get(format!("http://127.0.0.1:{port}{path}")).send().await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Wait until `/health/ready` answers `status`; its body.
async fn wait_ready(run: &mut Running, port: u16, status: u16, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let (code, body) = get(port, "/health/ready").await;
        if code == status {
            return body;
        }
        assert!(
            run.child.try_wait().expect("status").is_none(),
            "conscope exited:\n{}",
            run.logs()
        );
        assert!(
            started.elapsed() < within,
            "/health/ready did not answer {status} within {within:?} (last {code}: {body})\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keep checking that the child is alive until `until`.
async fn stays_up(run: &mut Running, until: Instant) {
    while Instant::now() < until {
        assert!(
            run.child.try_wait().expect("status").is_none(),
            "conscope exited during the outage:\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The value of one sample of the Prometheus text.
fn sample(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {line_start} in:\n{metrics}"))
}

/// The messages of the WARN lines of a JSON log.
fn warnings(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "WARN")
        .map(|v| v["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn json_logs(cfg: &mut Config) -> u16 {
    cfg.log.format = LogFormat::Json;
    let port = harness::free_port();
    cfg.web.listen = format!("127.0.0.1:{port}");
    port
}

#[tokio::test]
async fn a_three_minute_broker_outage_is_waited_out_and_every_record_lands_once() {
    let mut broker = PrivateBroker::start().expect("private broker");
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 2);
    cfg.kafka.brokers = vec![broker.address()];
    let web = json_logs(&mut cfg);
    assert_eq!(cfg.kafka.backoff.deadline(), None, "the default deadline");
    let client = harness::create_topics(&cfg).await.expect("topics");
    harness::produce_feed(&client, &cfg, 5_000, 41, 500)
        .await
        .expect("feed");
    let mut run = Running::start(&harness::write_config(&cfg));
    let started = Instant::now();
    while db.count("SELECT count(*) FROM price_history").await < 5_000 {
        assert!(started.elapsed() < Duration::from_secs(90), "{}", run.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_ready(&mut run, web, 200, Duration::from_secs(30)).await;

    broker.pause();
    let down = Instant::now();
    let body = wait_ready(&mut run, web, 503, Duration::from_secs(60)).await;
    assert!(body.contains("the Kafka broker is unreachable"), "{body}");
    // The engine's own view: a stage is waiting for the broker.
    let waited = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = get(web, "/metrics").await;
        if sample(
            &metrics,
            "conscope_pipeline_outage_in_progress{dependency=\"kafka\"}",
        ) == 1.0
        {
            break;
        }
        assert!(Instant::now() < waited, "no outage in progress:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (code, body) = get(web, "/health/ready").await;
    let ready: serde_json::Value = serde_json::from_str(&body).expect("readiness JSON");
    assert_eq!(code, 503, "{body}");
    assert!(ready["kafka"]["outage"]["stage"].is_string(), "{body}");
    stays_up(&mut run, down + OUTAGE).await;

    broker.resume().expect("restart broker");
    let mut producer_cfg = cfg.clone();
    producer_cfg.kafka.client_id = "test-producer".into();
    let client = conscope::kafka::connect(&producer_cfg.kafka)
        .await
        .expect("reconnect");
    harness::produce_feed(&client, &cfg, 5_000, 42, 500)
        .await
        .expect("feed after the outage");
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    harness::wait_for_offsets(&db, &cfg, &hw, Duration::from_secs(180))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", run.logs()));
    wait_ready(&mut run, web, 200, Duration::from_secs(60)).await;
    let (_, metrics) = get(web, "/metrics").await;
    run.sigterm();
    let status = run.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{}", run.logs());

    assert_eq!(history_keys(&db.url).await, every_offset(&hw), "each record once");
    assert!(sample(&metrics, "conscope_pipeline_outages_total{dependency=\"kafka\"}") >= 1.0);
    assert_eq!(
        sample(
            &metrics,
            "conscope_pipeline_outage_in_progress{dependency=\"kafka\"}"
        ),
        0.0
    );
    let seconds = sample(
        &metrics,
        "conscope_pipeline_outage_seconds_total{dependency=\"kafka\"}",
    );
    assert!(seconds >= OUTAGE.as_secs_f64() - 30.0, "{seconds}");
    // One WARN when the outage begins and one when it ends — not one per retry (three
    // minutes of retries by two readers and the metrics task would be well over a hundred).
    let warned = warnings(&run.logs());
    eprintln!("WARN lines: {warned:#?}");
    let began = warned
        .iter()
        .filter(|m| m.starts_with("the Kafka broker is unavailable"))
        .count();
    let ended = warned
        .iter()
        .filter(|m| m.starts_with("the Kafka broker is available again"))
        .count();
    assert!(began >= 1 && began == ended, "{warned:#?}");
    assert!(warned.len() <= 6, "{} WARN lines: {warned:#?}", warned.len());
}

#[tokio::test]
async fn a_three_minute_postgres_outage_is_waited_out_and_every_record_lands_once() {
    let pg = PrivatePg::start().expect("private postgres");
    let url = pg.create_db("conscope").await.expect("db");
    let scratch = TestDb::migrated().await.expect("scratch db for the config");
    let mut cfg = harness::config(&scratch, 2);
    cfg.postgres.url = Secret::new(url.clone());
    let web = json_logs(&mut cfg);
    assert_eq!(cfg.postgres.backoff.deadline(), None, "the default deadline");
    let client = harness::create_topics(&cfg).await.expect("topics");
    harness::produce_feed(&client, &cfg, 5_000, 43, 500)
        .await
        .expect("feed");
    let mut run = Running::start(&harness::write_config(&cfg));
    let started = Instant::now();
    while count_at(&url, "SELECT count(*) FROM price_history").await < 5_000 {
        assert!(started.elapsed() < Duration::from_secs(90), "{}", run.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_ready(&mut run, web, 200, Duration::from_secs(30)).await;

    pg.pause().expect("stop postgres");
    let down = Instant::now();
    // Records keep arriving while Postgres is down.
    harness::produce_feed(&client, &cfg, 5_000, 44, 500)
        .await
        .expect("feed during the outage");
    let body = wait_ready(&mut run, web, 503, Duration::from_secs(60)).await;
    assert!(body.contains("PostgreSQL is unreachable"), "{body}");
    stays_up(&mut run, down + OUTAGE).await;
    let (_, metrics) = get(web, "/metrics").await;
    assert_eq!(
        sample(
            &metrics,
            "conscope_pipeline_outage_in_progress{dependency=\"postgres\"}"
        ),
        1.0,
        "{metrics}"
    );

    pg.resume().expect("start postgres");
    harness::produce_feed(&client, &cfg, 5_000, 45, 500)
        .await
        .expect("feed after the outage");
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    let total: i64 = hw.iter().sum();
    let started = Instant::now();
    while count_at(&url, "SELECT count(*) FROM price_history").await < total {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "not caught up\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_ready(&mut run, web, 200, Duration::from_secs(60)).await;
    let (_, metrics) = get(web, "/metrics").await;
    run.sigterm();
    let status = run.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{}", run.logs());

    assert_eq!(history_keys(&url).await, every_offset(&hw), "each record once");
    assert!(
        sample(
            &metrics,
            "conscope_pipeline_outages_total{dependency=\"postgres\"}"
        ) >= 1.0
    );
    let warned = warnings(&run.logs());
    let began = warned
        .iter()
        .filter(|m| m.starts_with("PostgreSQL is unavailable"))
        .count();
    let ended = warned
        .iter()
        .filter(|m| m.starts_with("PostgreSQL is available again"))
        .count();
    assert!(began >= 1 && began == ended, "{warned:#?}");
    // The outage is a few lines, not one per retry (three minutes of backoff are dozens).
    assert!(warned.len() <= 6, "{} WARN lines: {warned:#?}", warned.len());
}

/// A proxy in front of a broker that forwards every byte and records the size of each produce
/// request (Kafka's frame: i32 length, then api key 0 for Produce, version, correlation id and
/// the client id) by client id.
struct SizingProxy {
    port: u16,
    sizes: Arc<Mutex<Vec<(String, usize)>>>,
}

impl SizingProxy {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sizes: Arc<Mutex<Vec<(String, usize)>>> = Arc::default();
        let s = sizes.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(Self::forward(sock, target, s.clone()));
            }
        });
        Self { port, sizes }
    }

    async fn forward(client: tokio::net::TcpStream, target: u16, sizes: Arc<Mutex<Vec<(String, usize)>>>) {
        let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
            return;
        };
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_broker, mut to_broker) = broker.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_broker, &mut to_client).await;
        });
        loop {
            let Ok(len) = from_client.read_i32().await else {
                return;
            };
            let mut frame = vec![0u8; len.max(0) as usize];
            if from_client.read_exact(&mut frame).await.is_err() {
                return;
            }
            if frame.len() >= 10 && i16::from_be_bytes([frame[0], frame[1]]) == 0 {
                let id_len = i16::from_be_bytes([frame[8], frame[9]]).max(0) as usize;
                let id = frame
                    .get(10..10 + id_len)
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default();
                sizes.lock().expect("sizes").push((id, 4 + frame.len()));
            }
            if to_broker.write_all(&len.to_be_bytes()).await.is_err()
                || to_broker.write_all(&frame).await.is_err()
            {
                return;
            }
        }
    }

    /// Sizes of the produce requests `client_id` sent so far.
    fn produced_by(&self, client_id: &str) -> Vec<usize> {
        let sizes = self.sizes.lock().expect("sizes");
        sizes
            .iter()
            .filter(|(id, _)| id == client_id)
            .map(|(_, n)| *n)
            .collect()
    }

    fn clear(&self) {
        self.sizes.lock().expect("sizes").clear();
    }
}

/// A private Tansu broker advertising the proxy's address, so every client goes through it.
struct ProxiedBroker {
    dir: PathBuf,
    child: Child,
    proxy: SizingProxy,
}

impl ProxiedBroker {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(harness::unique("conscope_broker"));
        std::fs::create_dir_all(&dir).expect("dir");
        let port = harness::free_port();
        let proxy = SizingProxy::start(port).await;
        let tansu = std::env::var("HOME")
            .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
            .ok()
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("tansu"));
        let log = std::fs::File::create(dir.join("broker.log")).expect("log");
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &format!("tcp://127.0.0.1:{port}")])
            .args([
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{}", proxy.port),
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "tansu did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { dir, child, proxy }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.proxy.port)
    }
}

impl Drop for ProxiedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client of the test's own (client id `test`), so its requests are told apart from ConScope's.
async fn test_client(cfg: &Config) -> Arc<rskafka::client::Client> {
    let mut own = cfg.kafka.clone();
    own.client_id = "test".into();
    conscope::kafka::connect(&own).await.expect("connect")
}

/// Run the engine in-process until every stored offset is also published.
async fn run_until_published(cfg: &Config, url: &str, within: Duration) {
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
    let started = Instant::now();
    let sql =
        "SELECT count(*) FROM kafka_offsets WHERE consumer = 'engine' AND published_offset < next_offset";
    tokio::time::sleep(Duration::from_secs(1)).await;
    while count_at(url, sql).await > 0 {
        assert!(started.elapsed() < within, "not published within {within:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    token.cancel();
    task.await.expect("join").expect("engine run");
}

#[tokio::test]
async fn an_outbox_recovery_of_200k_records_is_produced_in_requests_under_the_limit() {
    let broker = ProxiedBroker::start().await;
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 2);
    cfg.kafka.brokers = vec![broker.address()];
    let limit = cfg.kafka.max_request_bytes;
    assert_eq!(limit, 1024 * 1024, "the default");
    harness::create_topics(&cfg).await.expect("topics");
    let client = test_client(&cfg).await;
    harness::produce_feed(&client, &cfg, 200_000, 51, 20_000)
        .await
        .expect("feed");
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    // First run: store everything without producing processed_prices.
    let mut first = cfg.clone();
    first.pipeline.publish_processed = false;
    harness::run_to_end(&first, &db, &client)
        .await
        .expect("first run");
    // processed_prices fell 200k records behind: the outbox mark says nothing was published.
    let c = db.connect().await.expect("connect");
    let behind = c
        .execute(
            "UPDATE kafka_offsets SET published_offset = 0 WHERE consumer = 'engine'",
            &[],
        )
        .await
        .expect("reset the mark");
    assert_eq!(behind, 2);
    broker.proxy.clear();

    run_until_published(&cfg, &db.url, Duration::from_secs(300)).await;

    let sizes = broker.proxy.produced_by("conscope");
    let total: usize = sizes.iter().sum();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    eprintln!(
        "{} produce requests, {total} bytes, the largest {largest}",
        sizes.len()
    );
    assert!(total > 200_000 * 200, "the recovery produced {total} bytes");
    assert!(largest <= limit, "a produce request of {largest} bytes > {limit}");
    let mut seen = BTreeSet::new();
    for p in 0..cfg.kafka.topics.processed_prices.partitions {
        for r in harness::read_all(&client, &cfg.kafka.topics.processed_prices.name, p)
            .await
            .expect("read processed_prices")
        {
            let v: serde_json::Value =
                serde_json::from_slice(r.record.value.as_deref().unwrap_or_default()).expect("json");
            seen.insert((
                v["source_partition"].as_i64().expect("partition") as i32,
                v["source_offset"].as_i64().expect("offset"),
            ));
        }
    }
    let expected: BTreeSet<_> = every_offset(&hw).into_iter().collect();
    assert_eq!(seen.len(), expected.len());
    assert!(
        seen == expected,
        "every committed record reached processed_prices"
    );
}

#[tokio::test]
async fn an_oversize_dlq_value_keeps_its_prefix_and_its_size_within_one_request() {
    let broker = ProxiedBroker::start().await;
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 1);
    cfg.kafka.brokers = vec![broker.address()];
    let cap = cfg.kafka.dlq_max_value_bytes;
    harness::create_topics(&cfg).await.expect("topics");
    let client = test_client(&cfg).await;
    let raw = &cfg.kafka.topics.raw_prices.name;
    // 3 MiB that is not a price event, between two valid records.
    let huge: Vec<u8> = (0..3 * 1024 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    harness::produce_to(
        &client,
        raw,
        0,
        vec![
            (b"mock:A".to_vec(), harness::event_json("show1", "A", 100.0)),
            (b"mock:huge".to_vec(), huge.clone()),
            (b"mock:B".to_vec(), harness::event_json("show1", "B", 90.0)),
        ],
    )
    .await
    .expect("produce");
    broker.proxy.clear();
    harness::run_to_end(&cfg, &db, &client).await.expect("run");

    let dlq = harness::read_all(&client, &cfg.kafka.topics.dlq.name, 0)
        .await
        .expect("read the DLQ");
    assert_eq!(dlq.len(), 1, "one refused record");
    let r = &dlq[0].record;
    assert_eq!(
        r.value.as_deref(),
        Some(&huge[..cap]),
        "the value's first {cap} bytes"
    );
    assert_eq!(
        r.headers["original_value_bytes"],
        huge.len().to_string().into_bytes()
    );
    assert_eq!(r.headers["source_offset"], b"1");
    let largest = broker
        .proxy
        .produced_by("conscope")
        .into_iter()
        .max()
        .unwrap_or(0);
    assert!(
        largest > cap,
        "the DLQ record was produced through the proxy ({largest})"
    );
    assert!(largest <= cfg.kafka.max_request_bytes, "{largest}");
    assert_eq!(
        db.count("SELECT count(*) FROM price_history").await,
        2,
        "the records around it are stored"
    );
}

/// Give `topic` on the stopped broker in `dir` `to` partitions, as Kafka's CreatePartitions
/// would (Tansu 0.6 does not implement it, so its SQLite catalogue is edited directly).
fn add_partitions(dir: &std::path::Path, topic: &str, from: i32, to: i32) {
    let script = format!(
        "import sqlite3, sys\n\
         db = sqlite3.connect(sys.argv[1])\n\
         t = db.execute('SELECT id FROM topic WHERE name = ?', (sys.argv[2],)).fetchone()[0]\n\
         db.execute('UPDATE topic SET partitions = ? WHERE id = ?', ({to}, t))\n\
         for p in range({from}, {to}):\n\
         \x20   tp = db.execute('INSERT INTO topition (topic, partition) VALUES (?, ?) RETURNING id', (t, p)).fetchone()[0]\n\
         \x20   db.execute('INSERT INTO watermark (topition) VALUES (?)', (tp,))\n\
         db.commit()\n"
    );
    let status = Command::new("python3")
        .args(["-c", &script])
        .arg(dir.join("tansu.db"))
        .arg(topic)
        .status()
        .expect("python3 (with its sqlite3 module) edits the broker's catalogue");
    assert!(status.success(), "adding partitions failed");
}

/// The raw_prices partitions the engine stored offsets for.
async fn stored_partitions(db: &TestDb) -> Vec<i32> {
    let c = db.connect().await.expect("connect");
    c.query(
        "SELECT \"partition\" FROM kafka_offsets WHERE consumer = 'engine' ORDER BY 1",
        &[],
    )
    .await
    .expect("offsets")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Run `cfg`'s engine in-process until the offsets of `topics` reach `targets` (0: not waited for).
async fn run_until(cfg: &Config, db: &TestDb, topics: &Config, targets: &[i64]) {
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
    let reached = harness::wait_for_offsets(db, topics, targets, Duration::from_secs(90)).await;
    token.cancel();
    task.await.expect("join").expect("engine run");
    reached.expect("offsets reached");
}

#[tokio::test]
async fn partitions_the_broker_has_beyond_the_config_are_read_and_split_between_instances() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 2);
    // The topic exists with 5 partitions although config.toml says 2.
    let mut five = cfg.clone();
    five.kafka.topics.raw_prices.partitions = 5;
    let client = harness::create_topics(&five).await.expect("topics");
    let raw = &cfg.kafka.topics.raw_prices.name;
    for p in 0..5 {
        let records = (0..200)
            .map(|i| {
                let listing = format!("L{p}-{i}");
                (
                    format!("mock:{listing}").into_bytes(),
                    harness::event_json("show1", &listing, 50.0),
                )
            })
            .collect();
        harness::produce_to(&client, raw, p, records)
            .await
            .expect("produce");
    }
    let hw = harness::high_watermarks(&client, &five).await.expect("hw");
    // Instance 1 of 2 owns 1 and 3 of the broker's 5.
    let mut one = cfg.clone();
    (one.instance, one.instances) = (1, 2);
    run_until(&one, &db, &five, &[0, 200, 0, 200, 0]).await;
    assert_eq!(
        stored_partitions(&db).await,
        vec![1, 3],
        "instance 1 read only its own"
    );
    // Instance 0 owns 0, 2 and 4.
    let mut zero = cfg.clone();
    (zero.instance, zero.instances) = (0, 2);
    run_until(&zero, &db, &five, &[200, 0, 200, 0, 200]).await;
    assert_eq!(stored_partitions(&db).await, vec![0, 1, 2, 3, 4]);
    assert_eq!(history_keys(&db.url).await, every_offset(&hw));
}

#[tokio::test]
async fn partitions_added_while_running_are_picked_up() {
    let mut broker = PrivateBroker::start().expect("private broker");
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 2);
    cfg.kafka.brokers = vec![broker.address()];
    cfg.kafka.partition_poll_interval = Duration::from_secs(2);
    let client = harness::create_topics(&cfg).await.expect("topics");
    harness::produce_feed(&client, &cfg, 2_000, 61, 200)
        .await
        .expect("feed");
    let first = harness::high_watermarks(&client, &cfg).await.expect("hw");
    let mut run = Running::start(&harness::write_config(&cfg));
    harness::wait_for_offsets(&db, &cfg, &first, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", run.logs()));

    // raw_prices grows from 2 to 4 partitions under the running engine.
    broker.pause();
    add_partitions(&broker.dir, &cfg.kafka.topics.raw_prices.name, 2, 4);
    broker.resume().expect("restart broker");
    let client = conscope::kafka::connect(&cfg.kafka).await.expect("reconnect");
    let mut four = cfg.clone();
    four.kafka.topics.raw_prices.partitions = 4;
    for p in 2..4 {
        let records = (0..300)
            .map(|i| {
                let listing = format!("N{p}-{i}");
                (
                    format!("mock:{listing}").into_bytes(),
                    harness::event_json("show2", &listing, 70.0),
                )
            })
            .collect();
        harness::produce_to(&client, &four.kafka.topics.raw_prices.name, p, records)
            .await
            .expect("produce to a new partition");
    }
    let hw = harness::high_watermarks(&client, &four).await.expect("hw");
    assert_eq!(hw.len(), 4);
    harness::wait_for_offsets(&db, &four, &hw, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", run.logs()));
    run.sigterm();
    let status = run.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{}", run.logs());
    assert!(run.logs().contains("changed on the broker"), "{}", run.logs());
    assert_eq!(history_keys(&db.url).await, every_offset(&hw));
}

#[tokio::test]
async fn stored_offsets_beyond_the_brokers_partitions_are_a_clear_error() {
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 2);
    cfg.pipeline.restart_budget = 0;
    harness::create_topics(&cfg).await.expect("topics");
    let c = db.connect().await.expect("connect");
    c.execute(
        "INSERT INTO kafka_offsets (consumer, topic, \"partition\", next_offset, published_offset)
         VALUES ('engine', $1, 5, 10, 10)",
        &[&cfg.kafka.topics.raw_prices.name],
    )
    .await
    .expect("an offset of partition 5");
    let token = tokio_util::sync::CancellationToken::new();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        conscope::runtime::run(cfg.clone(), token),
    )
    .await
    .expect("the engine stops")
    .expect_err("the engine refuses");
    let text = format!("{:#}", anyhow::Error::from(err));
    assert!(text.contains("partitions [5]"), "{text}");
    assert!(text.contains("the broker has only 2 partition(s)"), "{text}");
}
