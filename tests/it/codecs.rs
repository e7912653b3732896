//! Compressed record batches, both ways, against another Kafka client: what librdkafka writes
//! with snappy, lz4 (and the other codecs) in batches of every size is stored exactly once at
//! its own offset, and what ConScope produces with each `kafka.compression` librdkafka reads.
//!
//! The outside client is Python confluent-kafka (librdkafka), run from the venv that
//! `tools/bench/python/setup.sh` makes (`scripts/test.sh` runs it); `CONSCOPE_PYTHON` names
//! another interpreter.
//!
//! The broker is a private Tansu with in-memory storage, started by each test: it keeps every
//! batch as its producer compressed it. The SQLite Tansu of `scripts/local-infra.sh` stores
//! records inflated and compresses each fetch answer again, and 0.6.0 has no snappy encoder,
//! so it accepts snappy batches but answers every fetch of them with an error, to any client
//! (`UnexpectedType("Snappy")` in its log). The in-memory store has a fault of its own: after a
//! batch of n records its high watermark is the batch's first offset + 1, not + n, so every
//! partition here ends with a batch of one record, which leaves the watermark true.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use conscope::config::{Config, ProduceCompression};
use conscope::kafka::produce::TopicProducer;
use serde_json::{Value, json};

use crate::harness::{self, PrivateBroker, TestDb};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CONSCOPE_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/bench/python/.venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run tools/bench/python/setup.sh (scripts/test.sh does) or set CONSCOPE_PYTHON",
        venv.display()
    );
    venv
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/librdkafka_client.py")
}

/// `cfg` pointed at `broker`.
fn on(broker: &PrivateBroker, mut cfg: Config) -> Config {
    cfg.kafka.brokers = vec![broker.address()];
    cfg
}

fn brokers(cfg: &Config) -> String {
    cfg.kafka.brokers.join(",")
}

/// One batch for librdkafka to produce: its codec and `(key, value)` records.
struct Batch {
    codec: &'static str,
    records: Vec<(String, String)>,
}

/// Produce `batches` to `topic`/`partition` with librdkafka, one record batch each; the
/// offsets the broker acknowledged, per batch and record.
fn librdkafka_produce(cfg: &Config, topic: &str, partition: i32, batches: &[Batch]) -> Vec<Vec<i64>> {
    let mut child = Command::new(python())
        .arg(script())
        .args(["produce", &brokers(cfg), topic, &partition.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the librdkafka producer");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for b in batches {
            let line = json!({ "compression": b.codec, "records": b.records });
            writeln!(stdin, "{line}").expect("write a batch");
        }
    }
    let out = child.wait_with_output().expect("librdkafka producer");
    assert!(
        out.status.success(),
        "the librdkafka producer failed: {}",
        out.status
    );
    let answers: Vec<Vec<i64>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("an answer line");
            v["offsets"]
                .as_array()
                .expect("offsets")
                .iter()
                .map(|o| o.as_i64().expect("an offset"))
                .collect()
        })
        .collect();
    assert_eq!(answers.len(), batches.len(), "one answer per batch");
    answers
}

/// Every record of `topic`'s partitions as librdkafka reads them: (partition, offset) → value.
fn librdkafka_consume(cfg: &Config, topic: &str, partitions: i32) -> BTreeMap<(i32, i64), String> {
    let out = Command::new(python())
        .arg(script())
        .args(["consume", &brokers(cfg), topic, &partitions.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the librdkafka consumer");
    assert!(
        out.status.success(),
        "the librdkafka consumer failed: {}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("a record line");
            let key = (
                v["partition"].as_i64().expect("partition") as i32,
                v["offset"].as_i64().expect("offset"),
            );
            (key, v["value"].as_str().expect("value").to_string())
        })
        .collect()
}

/// The price every good record of the feed carries: distinct per record, two decimals.
fn price(partition: i32, i: usize) -> String {
    format!("{}.{:02}", 10 + (i * 7 + partition as usize * 3) % 900, i % 100)
}

fn good(partition: i32, i: usize) -> (String, String) {
    let listing = format!("P{partition}-{i}");
    let value = harness::event_json("show1", &listing, price(partition, i).parse().expect("price"));
    (
        format!("mock:{listing}"),
        String::from_utf8(value).expect("utf-8"),
    )
}

#[tokio::test]
async fn snappy_and_lz4_batches_of_every_size_from_librdkafka_are_stored_exactly() {
    let broker = PrivateBroker::in_memory().expect("an in-memory broker");
    let db = TestDb::migrated().await.expect("db");
    let cfg = on(&broker, harness::config(&db, 2));
    let client = harness::create_topics(&cfg).await.expect("topics");
    let raw = cfg.kafka.topics.raw_prices.name.clone();

    // Per partition, batches of mixed codecs and sizes; one record that is not a price event
    // sits inside a snappy batch.
    let plan: [(i32, &[(&'static str, usize)]); 2] = [
        (
            0,
            &[
                ("snappy", 1),
                ("snappy", 600),
                ("none", 3),
                ("snappy", 3_000),
                ("gzip", 5),
                ("snappy", 1),
            ],
        ),
        (
            1,
            &[("lz4", 2), ("lz4", 37), ("zstd", 10), ("lz4", 2_500), ("lz4", 1)],
        ),
    ];
    let bad_at = (0, 1, 250); // partition, batch, record
    // (partition, offset) → (listing_id, price), from librdkafka's delivery reports.
    let mut expected = BTreeMap::new();
    let mut bad_offset = None;
    let mut ends = BTreeMap::new();
    for (p, sizes) in plan {
        let mut n = 0;
        let mut batches = Vec::new();
        for (b, &(codec, size)) in sizes.iter().enumerate() {
            let records = (0..size)
                .map(|r| {
                    if (p, b, r) == bad_at {
                        ("mock:bad".into(), "not a price event".into())
                    } else {
                        good(p, n + r)
                    }
                })
                .collect();
            batches.push(Batch { codec, records });
            n += size;
        }
        let answers = librdkafka_produce(&cfg, &raw, p, &batches);
        let mut i = 0;
        for (b, offsets) in answers.iter().enumerate() {
            for (r, &offset) in offsets.iter().enumerate() {
                if (p, b, r) == bad_at {
                    bad_offset = Some(offset);
                } else {
                    expected.insert((p, offset), (format!("P{p}-{i}"), price(p, i)));
                }
                i += 1;
            }
        }
        ends.insert(p, i as i64);
    }
    let hw = harness::high_watermarks(&client, &cfg).await.expect("hw");
    assert_eq!(
        hw,
        ends.values().copied().collect::<Vec<_>>(),
        "the broker holds every record"
    );

    harness::run_to_end(&cfg, &db, &client).await.expect("engine");

    let c = db.connect().await.expect("connect");
    let stored: BTreeMap<(i32, i64), (String, String)> = c
        .query(
            "SELECT kafka_partition, kafka_offset, listing_id, price::text FROM price_history",
            &[],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect();
    assert_eq!(stored.len(), expected.len(), "rows stored");
    assert!(
        stored == expected,
        "every record stored once, at its offset, with its price"
    );
    let offsets: Vec<(i32, i64)> = c
        .query(
            "SELECT \"partition\", next_offset FROM kafka_offsets WHERE consumer = 'engine' AND topic = $1 ORDER BY 1",
            &[&raw],
        )
        .await
        .expect("offsets")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        offsets,
        ends.into_iter().collect::<Vec<_>>(),
        "the stored offsets"
    );

    let dlq = harness::read_all(&client, &cfg.kafka.topics.dlq.name, 0)
        .await
        .expect("read the DLQ");
    let dlq: Vec<_> = dlq
        .iter()
        .map(|r| String::from_utf8_lossy(&r.record.headers["source_offset"]).into_owned())
        .collect();
    let bad_offset = bad_offset.expect("the bad record was produced");
    assert_eq!(dlq, [bad_offset.to_string()], "the one bad record, in the DLQ");
}

#[tokio::test]
async fn librdkafka_reads_what_conscope_produces_with_every_codec() {
    let broker = PrivateBroker::in_memory().expect("an in-memory broker");
    let db = TestDb::migrated().await.expect("db");
    let base = on(&broker, harness::config(&db, 1));
    harness::create_topics(&base).await.expect("topics");
    let codecs = [
        ProduceCompression::None,
        ProduceCompression::Gzip,
        ProduceCompression::Lz4,
        ProduceCompression::Snappy,
        ProduceCompression::Zstd,
    ];
    for codec in codecs {
        let mut cfg = base.clone();
        cfg.kafka.compression = codec;
        cfg.kafka.topics.processed_prices.name = harness::unique("codec");
        let topic = cfg.kafka.topics.processed_prices.name.clone();
        let client = harness::create_topics(&cfg).await.expect("the topic");
        let producer = TopicProducer::connect(&client, &topic, 2, &cfg.kafka)
            .await
            .expect("producer");
        let sent: Vec<(Vec<u8>, Vec<u8>)> = (0..1_500)
            .map(|i| {
                let (k, v) = good(0, i);
                (k.into_bytes(), v.into_bytes())
            })
            .collect();
        let now = chrono::Utc::now();
        producer
            .send(sent.iter().map(|(k, v)| (k.clone(), v.clone(), now)).collect())
            .await
            .unwrap_or_else(|e| panic!("produce with {codec:?}: {e}"));
        // A batch of one record closes each partition (see the module's note).
        for p in 0..2 {
            let end = Batch {
                codec: "none",
                records: vec![("end".into(), format!("end {p}"))],
            };
            librdkafka_produce(&cfg, &topic, p, &[end]);
        }
        let read = librdkafka_consume(&cfg, &topic, 2);
        let mut values: Vec<&str> = read.values().map(String::as_str).collect();
        let mut expected: Vec<&str> = sent
            .iter()
            .map(|(_, v)| std::str::from_utf8(v).expect("utf-8"))
            .collect();
        expected.extend(["end 0", "end 1"]);
        values.sort_unstable();
        expected.sort_unstable();
        assert_eq!(values.len(), expected.len(), "{codec:?}: records read");
        assert!(values == expected, "{codec:?}: every value read back as sent");
    }
}
