//! The one partition reader (`kafka::reader`, used by ingest and the alert consumer) against
//! the real broker: records produced to a fresh topic come back from a start offset, in order
//! and contiguous; a batch not handed on before shutdown is not passed. (The out-of-range
//! policy is decided by a pure function unit-tested in `kafka::reader`: Tansu, the local broker,
//! never answers OFFSET_OUT_OF_RANGE.)

use std::sync::Arc;
use std::time::Duration;

use conscope::config::Config;
use conscope::kafka::reader::{OutOfRange, PartitionReader, Read, ReadError, Start};
use conscope::kafka::{self, topics};
use rskafka::client::Client;
use tokio_util::sync::CancellationToken;

use crate::harness::{self, Infra};

const KEY: &str = "kafka.offset_out_of_range";

/// A topic of its own (one partition) holding `n` records valued `v0`, `v1`, …
async fn topic_with(n: usize) -> (Arc<Client>, Config, String) {
    let mut cfg = Config::default();
    cfg.kafka.brokers = Infra::get().brokers.split(',').map(str::to_string).collect();
    let suffix = harness::unique("reader");
    let t = &mut cfg.kafka.topics;
    t.raw_prices.name = format!("raw_prices_{suffix}");
    t.raw_prices.partitions = 1;
    t.processed_prices.name = format!("processed_prices_{suffix}");
    t.price_alerts.name = format!("price_alerts_{suffix}");
    t.dlq.name = format!("raw_prices_dlq_{suffix}");
    t.system_metrics.name = format!("system_metrics_{suffix}");
    let client = kafka::connect(&cfg.kafka).await.expect("broker");
    topics::ensure(&client, &cfg.kafka).await.expect("topics");
    let topic = cfg.kafka.topics.raw_prices.name.clone();
    let records = (0..n)
        .map(|i| (format!("k{i}").into_bytes(), format!("v{i}").into_bytes()))
        .collect();
    harness::produce_to(&client, &topic, 0, records)
        .await
        .expect("produce");
    (client, cfg, topic)
}

fn reader(client: &Arc<Client>, cfg: &Config, topic: &str, policy: OutOfRange) -> PartitionReader {
    PartitionReader::new("reader test", client.clone(), &cfg.kafka, topic, 0).out_of_range(policy)
}

/// Read until `until` (exclusive): every record's offset and value.
async fn read_to(reader: &mut PartitionReader, until: i64) -> Result<Vec<(i64, String)>, ReadError> {
    let mut out = Vec::new();
    while out.last().is_none_or(|(o, _)| o + 1 < until) {
        let read = tokio::time::timeout(Duration::from_secs(30), reader.read())
            .await
            .expect("read within 30 s")?
            .expect("not cancelled");
        let Read::Records(batch) = read else {
            panic!("unexpected {read:?}")
        };
        if let Some(last) = batch.records.last() {
            assert_eq!(batch.next_offset, last.offset + 1);
        }
        for r in batch.records {
            let value = String::from_utf8(r.record.value.unwrap_or_default()).expect("utf-8");
            out.push((r.offset, value));
        }
    }
    Ok(out)
}

fn produced(offsets: std::ops::Range<i64>) -> Vec<(i64, String)> {
    offsets.map(|o| (o, format!("v{o}"))).collect()
}

#[tokio::test]
async fn the_partition_reader_reads_back_what_was_produced_from_a_start_offset() {
    let (client, mut cfg, topic) = topic_with(40).await;
    // Small fetches: the records come in several batches, which must join up exactly.
    cfg.kafka.fetch_max_bytes = 256;
    let fail = OutOfRange::Fail { key: KEY };
    let cancel = CancellationToken::new();
    let mut from_7 = reader(&client, &cfg, &topic, fail)
        .start(Start::At(7), &cancel)
        .await
        .expect("start")
        .expect("not cancelled");
    assert_eq!(from_7.next_offset(), 7);
    assert_eq!(read_to(&mut from_7, 40).await.expect("read"), produced(7..40));

    let earliest = reader(&client, &cfg, &topic, fail).start(Start::Earliest, &cancel);
    let mut earliest = earliest.await.expect("start").expect("not cancelled");
    assert_eq!(earliest.next_offset(), 0);
    assert_eq!(read_to(&mut earliest, 40).await.expect("read"), produced(0..40));

    let latest = reader(&client, &cfg, &topic, fail).start(Start::Latest, &cancel);
    assert_eq!(
        latest.await.expect("start").expect("not cancelled").next_offset(),
        40
    );
}

#[tokio::test]
async fn a_batch_not_handed_on_before_cancellation_is_not_passed() {
    let (client, cfg, topic) = topic_with(5).await;
    let cancel = CancellationToken::new();
    let mut r = reader(&client, &cfg, &topic, OutOfRange::Fail { key: KEY })
        .start(Start::At(2), &cancel)
        .await
        .expect("start")
        .expect("not cancelled");
    let Some(Read::Records(batch)) = r.read().await.expect("read") else {
        panic!("no records")
    };
    assert_eq!(batch.records.first().map(|r| r.offset), Some(2));
    // The owner stops before handing the batch on: the position has not passed it.
    assert_eq!(r.next_offset(), 2);
    cancel.cancel();
    // Asking for the next read is what hands a batch on; cancelled, it reads nothing.
    assert!(r.read().await.expect("no error").is_none(), "cancelled");
    assert_eq!(r.next_offset(), 5);

    let stopped = reader(&client, &cfg, &topic, OutOfRange::Fail { key: KEY });
    assert!(
        stopped
            .start(Start::Earliest, &cancel)
            .await
            .expect("no error")
            .is_none()
    );
}
