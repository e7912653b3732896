//! SIGKILL helpers for the crash tests: kill `conscope run` while records are still unconsumed
//! (so every kill tests something), and check what reached the output topics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use conscope::config::Config;
use rand::Rng;
use serde_json::Value;

use crate::harness::{Running, TestDb};

/// The engine's committed raw_prices records: the sum of its stored next offsets.
pub async fn committed(db: &TestDb, cfg: &Config) -> i64 {
    let c = db.connect().await.expect("connect");
    c.query_one(
        "SELECT coalesce(sum(next_offset), 0)::int8 FROM kafka_offsets
          WHERE consumer = 'engine' AND topic = $1",
        &[&cfg.kafka.topics.raw_prices.name],
    )
    .await
    .expect("offsets")
    .get(0)
}

/// Wait until everything the engine committed was published (`published_offset` caught up).
pub async fn wait_published(db: &TestDb, within: Duration) -> anyhow::Result<()> {
    let c = db.connect().await?;
    let started = Instant::now();
    loop {
        let behind: i64 = c
            .query_one(
                "SELECT count(*) FROM kafka_offsets
                  WHERE consumer = 'engine' AND published_offset < next_offset",
                &[],
            )
            .await?
            .get(0);
        if behind == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < within,
            "{behind} partitions not published within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Start `conscope run` and SIGKILL it at a random moment mid-stream: once its commits have
/// covered a random share of what is left (at most 80% of an even split over the `kills_left`
/// kills, this one included), after a random few milliseconds more. Panics unless records
/// were still unconsumed when the kill landed. Returns the committed records at the kill.
pub async fn kill_mid_stream(
    path: &Path,
    db: &TestDb,
    cfg: &Config,
    total: i64,
    kills_left: u32,
    rng: &mut impl Rng,
) -> i64 {
    let before = committed(db, cfg).await;
    assert!(before < total, "nothing left to kill in: {before} of {total}");
    let share = rng.gen_range(0.05..0.8) / f64::from(kills_left + 1);
    let target = before + ((total - before) as f64 * share).max(1.0) as i64;
    let mut run = Running::start(path);
    let started = Instant::now();
    while committed(db, cfg).await < target {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "commits did not reach {target} (of {total}):\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(rng.gen_range(0..30))).await;
    run.kill9();
    let at_kill = committed(db, cfg).await;
    assert!(
        at_kill < total,
        "the kill landed after every record was consumed ({at_kill} of {total}): it tested nothing"
    );
    at_kill
}

/// A record's key and its value read as JSON.
type Keyed = (Vec<u8>, Value);

/// Every record of every partition of `topic`.
async fn records(client: &rskafka::client::Client, topic: &str, partitions: i32) -> Vec<Keyed> {
    let mut out = Vec::new();
    for p in 0..partitions {
        for r in crate::harness::read_all(client, topic, p)
            .await
            .expect("read topic")
        {
            let key = r.record.key.unwrap_or_default();
            let value = r.record.value.unwrap_or_default();
            let json = serde_json::from_slice(&value)
                .unwrap_or_else(|e| panic!("{topic}: a value that is not JSON ({e})"));
            out.push((key, json));
        }
    }
    out
}

/// The output topics after crashes: `processed_prices` holds every input offset, and
/// `price_alerts` every alert in the table; a record that appears more than once (a publish
/// repeated after a kill) has the same key and the same value each time.
pub async fn assert_outputs_complete(
    client: &rskafka::client::Client,
    cfg: &Config,
    inputs: &[(i32, i64)],
    alert_ids: &BTreeSet<String>,
) {
    let t = &cfg.kafka.topics;
    let mut processed: BTreeMap<(i32, i64), Vec<Keyed>> = BTreeMap::new();
    for (key, value) in records(client, &t.processed_prices.name, t.processed_prices.partitions).await {
        let source = (
            value["source_partition"].as_i64().expect("source_partition") as i32,
            value["source_offset"].as_i64().expect("source_offset"),
        );
        processed.entry(source).or_default().push((key, value));
    }
    let published: Vec<(i32, i64)> = processed.keys().copied().collect();
    assert_eq!(
        published, inputs,
        "processed_prices holds every input offset, once or more"
    );
    let mut repeated = 0;
    for (source, copies) in &processed {
        repeated += copies.len() - 1;
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "processed_prices repeats {source:?} with another key or value: {copies:?}"
        );
    }
    let mut alerts: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (key, value) in records(client, &t.price_alerts.name, t.price_alerts.partitions).await {
        let id = String::from_utf8(key).expect("alert id key");
        assert_eq!(value["alert_id"].as_str(), Some(id.as_str()), "keyed by its id");
        alerts.entry(id).or_default().push(value);
    }
    let ids: BTreeSet<String> = alerts.keys().cloned().collect();
    assert_eq!(&ids, alert_ids, "price_alerts holds every stored alert");
    for (id, copies) in &alerts {
        repeated += copies.len() - 1;
        assert!(
            copies.iter().all(|c| c == &copies[0]),
            "price_alerts repeats {id} with another value: {copies:?}"
        );
    }
    eprintln!("output topics: {repeated} repeated records, each identical to its first copy");
}
