//! Test harness: each test gets its own freshly migrated database and its own topics on the
//! real broker, and a way to run `conscope` in-process or as a child process.
//!
//! The broker and Postgres come from `scripts/local-infra.sh start` (which `scripts/test.sh`
//! runs): their addresses are read from the environment (`CONSCOPE_KAFKA__BROKERS`,
//! `CONSCOPE_TEST_ADMIN_URL`) or, failing that, from `.local/env`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use conscope::config::{Config, Secret};
use conscope::kafka::{self, topics};
use conscope::store::{self, migrate};
use rand::Rng;
use tokio_postgres::NoTls;

/// Addresses of the shared local infrastructure.
#[derive(Debug, Clone)]
pub struct Infra {
    pub brokers: String,
    pub admin_url: String,
}

fn env_file() -> HashMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".local/env");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl Infra {
    pub fn get() -> Self {
        let file = env_file();
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .or_else(|| file.get(k).cloned())
                .unwrap_or_else(|| {
                    panic!("{k} is not set: run scripts/local-infra.sh start (or scripts/test.sh)")
                })
        };
        Self {
            brokers: var("CONSCOPE_KAFKA__BROKERS"),
            admin_url: var("CONSCOPE_TEST_ADMIN_URL"),
        }
    }
}

pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::thread_rng().r#gen();
    format!("{prefix}_{:012x}", n & 0xffff_ffff_ffff)
}

/// A database of its own, dropped when the test ends.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// Create an empty database (not migrated).
    pub async fn empty() -> Result<Self> {
        let infra = Infra::get();
        let name = unique("t");
        let (admin, conn) = tokio_postgres::connect(&infra.admin_url, NoTls)
            .await
            .context("connect to the test Postgres admin database")?;
        tokio::spawn(conn);
        admin.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        let url = replace_db(&infra.admin_url, &name);
        Ok(Self {
            name,
            url,
            admin_url: infra.admin_url,
        })
    }

    /// Create a database and apply ConScope's migrations.
    pub async fn migrated() -> Result<Self> {
        let db = Self::empty().await?;
        let mut c = db.connect().await?;
        migrate::apply(&mut c, migrate::MIGRATIONS).await?;
        Ok(db)
    }

    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (c, conn) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(conn);
        Ok(c)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let c = self.connect().await.expect("connect");
        c.query_one(sql, &[]).await.expect(sql).get(0)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Async drop is not possible; a short-lived thread with its own runtime does it.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::connect(&admin, NoTls).await {
                    tokio::spawn(conn);
                    let _ = c
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("url has a database");
    format!("{base}/{db}")
}

/// A configuration pointing at `db` and topics of their own (`<name>_<suffix>`).
pub fn config(db: &TestDb, raw_partitions: i32) -> Config {
    let infra = Infra::get();
    let suffix = unique("x");
    let mut cfg = Config::default();
    cfg.kafka.brokers = infra.brokers.split(',').map(str::to_string).collect();
    cfg.postgres.url = Secret::new(db.url.clone());
    cfg.postgres.pool_size = 4;
    let t = &mut cfg.kafka.topics;
    t.raw_prices.name = format!("raw_prices_{suffix}");
    t.raw_prices.partitions = raw_partitions;
    t.processed_prices.name = format!("processed_prices_{suffix}");
    t.processed_prices.partitions = 2;
    t.price_alerts.name = format!("price_alerts_{suffix}");
    t.dlq.name = format!("raw_prices_dlq_{suffix}");
    t.system_metrics.name = format!("system_metrics_{suffix}");
    cfg.pipeline.metrics_interval = Duration::from_secs(1);
    cfg.pipeline.flush_interval = Duration::from_millis(50);
    cfg.sources.simulated.enabled = false;
    // Tests run many `conscope run`s at once: each serves the web layer on a port of its own.
    cfg.web.listen = "127.0.0.1:0".into();
    cfg
}

/// Create the configured topics.
pub async fn create_topics(cfg: &Config) -> Result<Arc<rskafka::client::Client>> {
    let client = kafka::connect(&cfg.kafka).await?;
    topics::ensure(&client, &cfg.kafka).await?;
    Ok(client)
}

/// Produce `(key, value)` records to raw_prices partition `p`.
pub async fn produce_to(
    client: &rskafka::client::Client,
    topic: &str,
    p: i32,
    records: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<()> {
    let pc = client
        .partition_client(topic, p, rskafka::client::partition::UnknownTopicHandling::Error)
        .await?;
    for chunk in records.chunks(2_000) {
        let recs = chunk
            .iter()
            .map(|(k, v)| rskafka::record::Record {
                key: Some(k.clone()),
                value: Some(v.clone()),
                headers: Default::default(),
                timestamp: chrono::Utc::now(),
            })
            .collect();
        pc.produce(recs, rskafka::client::partition::Compression::NoCompression)
            .await?;
    }
    Ok(())
}

/// Read every record of one partition (key, value, headers).
pub async fn read_all(
    client: &rskafka::client::Client,
    topic: &str,
    p: i32,
) -> Result<Vec<rskafka::record::RecordAndOffset>> {
    let pc = client
        .partition_client(topic, p, rskafka::client::partition::UnknownTopicHandling::Error)
        .await?;
    let hw = pc
        .get_offset(rskafka::client::partition::OffsetAt::Latest)
        .await?;
    let mut out = Vec::new();
    let mut next = 0;
    while next < hw {
        let (recs, _) = pc.fetch_records(next, 1..4_000_000, 50).await?;
        let from = next;
        for r in recs.into_iter().filter(|r| r.offset >= from) {
            next = r.offset + 1;
            out.push(r);
        }
    }
    Ok(out)
}

/// High watermark of every raw_prices partition.
pub async fn high_watermarks(client: &rskafka::client::Client, cfg: &Config) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for p in 0..cfg.kafka.topics.raw_prices.partitions {
        let pc = client
            .partition_client(
                &cfg.kafka.topics.raw_prices.name,
                p,
                rskafka::client::partition::UnknownTopicHandling::Error,
            )
            .await?;
        out.push(
            pc.get_offset(rskafka::client::partition::OffsetAt::Latest)
                .await?,
        );
    }
    Ok(out)
}

/// Wait until the engine's stored offsets reach `targets` (one per partition).
pub async fn wait_for_offsets(db: &TestDb, cfg: &Config, targets: &[i64], within: Duration) -> Result<()> {
    let started = Instant::now();
    let c = db.connect().await?;
    loop {
        let rows = c
            .query(
                "SELECT \"partition\", next_offset FROM kafka_offsets WHERE consumer = 'engine' AND topic = $1",
                &[&cfg.kafka.topics.raw_prices.name],
            )
            .await?;
        let stored: HashMap<i32, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let done = targets
            .iter()
            .enumerate()
            .all(|(p, t)| *t == 0 || stored.get(&(p as i32)).is_some_and(|n| n >= t));
        if done {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "offsets did not reach {targets:?} within {within:?}: stored {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Write `cfg` to a temporary file for a child process.
pub fn write_config(cfg: &Config) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("conscope_cfg")));
    std::fs::write(&path, toml::to_string(cfg).expect("config serializes")).expect("write config");
    path
}

/// The `conscope` binary under test, with no CONSCOPE_ overrides inherited.
pub fn conscope(config: &Path) -> Command {
    // `option_env!`: tools/bench's tests share this file and have no `conscope` binary.
    let Some(bin) = option_env!("CARGO_BIN_EXE_conscope") else {
        panic!("the conscope binary is built for tests/it only")
    };
    command(bin, config)
}

/// The binary `bin` with `--config CONFIG`, with no CONSCOPE_ overrides or RUST_LOG inherited.
pub fn command(bin: &str, config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    for (k, _) in std::env::vars() {
        if k.starts_with("CONSCOPE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.arg("--config").arg(config);
    cmd
}

/// The JSON a command printed on stdout; fails the test (with its stderr) if it failed.
pub fn json_ok(output: std::process::Output, what: &str) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// The number at the dotted `path` of `v`; fails the test if it is missing.
pub fn json_num(v: &serde_json::Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or_else(|| panic!("`{path}` is missing or not a number in {v}"))
}

/// `conscope run` as a child process, its logs in a file.
pub struct Running {
    pub child: Child,
    pub log: PathBuf,
}

impl Running {
    pub fn start(config: &Path) -> Self {
        let log = std::env::temp_dir().join(format!("{}.log", unique("conscope_run")));
        let file = std::fs::File::create(&log).expect("log file");
        let child = conscope(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn conscope run");
        Self { child, log }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn sigterm(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A valid first-ConScope PriceEvent JSON.
pub fn event_json(event_id: &str, listing: &str, price: f64) -> Vec<u8> {
    serde_json::json!({
        "event_id": event_id, "event_name": format!("Show {event_id}"), "venue": "Test Arena",
        "event_date": "2027-05-01T20:00:00", "source": "mock", "section": "112", "row": "F",
        "seat": "7", "price": price, "fees": null, "total_price": price,
        "timestamp": "2026-11-21T10:00:00.000001", "listing_id": listing,
        "listing_url": format!("https://tickets.example/{listing}"), "quantity": 1,
    })
    .to_string()
    .into_bytes()
}

/// Apply migrations through the library, for tests that need the pool.
pub async fn pool(cfg: &Config) -> deadpool_postgres::Pool {
    store::pool(&cfg.postgres).expect("pool")
}

/// A free TCP port on loopback (best effort: bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn wait_port(port: u16, within: Duration) -> Result<()> {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            started.elapsed() < within,
            "port {port} did not open within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A private PostgreSQL cluster a test may stop and start (outage tests).
pub struct PrivatePg {
    pub dir: PathBuf,
    pub port: u16,
}

impl PrivatePg {
    pub fn start() -> Result<Self> {
        let dir = std::env::temp_dir().join(unique("conscope_pg"));
        std::fs::create_dir_all(&dir)?;
        let as_postgres = |args: &[&str]| -> Result<()> {
            let status = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?;
            anyhow::ensure!(status.success(), "{args:?} failed");
            Ok(())
        };
        Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()?;
        let d = dir.to_string_lossy().to_string();
        as_postgres(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            &d,
            "-A",
            "trust",
            "-U",
            "postgres",
        ])?;
        let pg = Self {
            dir,
            port: free_port(),
        };
        pg.resume()?;
        Ok(pg)
    }

    fn ctl(&self, args: &[&str]) -> Result<()> {
        let d = self.dir.to_string_lossy().to_string();
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--", &format!("{PG_BIN}/pg_ctl"), "-D", &d])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "pg_ctl {args:?} failed");
        Ok(())
    }

    pub fn resume(&self) -> Result<()> {
        let d = self.dir.to_string_lossy().to_string();
        let log = format!("{d}/log");
        let opts = format!("-p {} -k {d} -c listen_addresses=127.0.0.1", self.port);
        self.ctl(&["-l", &log, "-o", &opts, "-w", "start"])
    }

    pub fn pause(&self) -> Result<()> {
        self.ctl(&["-m", "fast", "-w", "stop"])
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub async fn create_db(&self, name: &str) -> Result<String> {
        let (c, conn) = tokio_postgres::connect(&self.admin_url(), NoTls).await?;
        tokio::spawn(conn);
        c.batch_execute(&format!("CREATE DATABASE {name}")).await?;
        Ok(format!("postgres://postgres@127.0.0.1:{}/{name}", self.port))
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.ctl(&["-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Tansu broker a test may stop and start (outage tests).
pub struct PrivateBroker {
    pub dir: PathBuf,
    pub port: u16,
    storage: &'static str,
    child: Option<Child>,
}

impl PrivateBroker {
    /// SQLite storage, as `scripts/local-infra.sh` runs it: it survives `pause`/`resume`.
    pub fn start() -> Result<Self> {
        Self::with_storage("sqlite://tansu.db")
    }

    /// In-memory storage, which keeps each batch as its producer compressed it (the codec
    /// tests); `pause` loses its records.
    pub fn in_memory() -> Result<Self> {
        Self::with_storage("memory://tansu/")
    }

    fn with_storage(storage: &'static str) -> Result<Self> {
        let dir = std::env::temp_dir().join(unique("conscope_broker"));
        std::fs::create_dir_all(&dir)?;
        let mut b = Self {
            dir,
            port: free_port(),
            storage,
            child: None,
        };
        b.resume()?;
        Ok(b)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn resume(&mut self) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::File::create(self.dir.join("broker.log"))?;
        let tansu = std::env::var("HOME")
            .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
            .ok()
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("tansu"));
        let child = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", self.storage])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        wait_port(self.port, Duration::from_secs(30))
    }

    pub fn pause(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.pause();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Produce `n` simulated observations (deterministic for `seed`) to raw_prices.
pub async fn produce_feed(
    client: &rskafka::client::Client,
    cfg: &Config,
    n: u64,
    seed: u64,
    listings: u32,
) -> Result<()> {
    let mut sim = cfg.sources.simulated.clone();
    sim.seed = seed;
    sim.listings = listings;
    let token = tokio_util::sync::CancellationToken::new();
    conscope::sources::simulated::produce(client, cfg, &sim, Some(n), None, &token, |_| {}).await?;
    Ok(())
}

/// Run the engine in-process until its offsets reach the high watermarks, then shut it down.
pub async fn run_to_end(cfg: &Config, db: &TestDb, client: &rskafka::client::Client) -> Result<()> {
    let targets = high_watermarks(client, cfg).await?;
    let token = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
    let waited = wait_for_offsets(db, cfg, &targets, Duration::from_secs(120)).await;
    token.cancel();
    task.await??;
    waited
}

/// A valid PriceEvent JSON observed at `timestamp` (ISO-8601).
pub fn event_json_at(event_id: &str, listing: &str, price: f64, timestamp: &str) -> Vec<u8> {
    serde_json::json!({
        "event_id": event_id, "event_name": format!("Show {event_id}"), "venue": "Test Arena",
        "source": "mock", "section": "112", "row": "F", "seat": "7", "price": price,
        "timestamp": timestamp, "listing_id": listing,
    })
    .to_string()
    .into_bytes()
}
