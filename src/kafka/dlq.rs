//! The dead-letter queue: records that do not parse or validate go to `raw_prices_dlq` with
//! their original key and value and headers saying why (`error`) and where they came from
//! (`source_topic`, `source_partition`, `source_offset`).
//!
//! A DLQ record is produced **before** the offset that skips it is handed on, so a crash can
//! only repeat a DLQ record, never lose one.
//!
//! A key or value longer than `kafka.dlq_max_value_bytes` keeps only that prefix, and its
//! original size goes in a header (`original_key_bytes`, `original_value_bytes`), so one
//! oversize record never makes a produce request the broker refuses. The `error` header keeps
//! at most [`MAX_ERROR_BYTES`].

use std::collections::BTreeMap;
use std::sync::Arc;

use rskafka::client::partition::PartitionClient;
use rskafka::record::Record;

use crate::backoff::Backoff;
use crate::config::KafkaConfig;
use crate::kafka::KafkaError;
use crate::metrics::Metrics;

/// The longest `error` header kept (a database's message can be long).
pub const MAX_ERROR_BYTES: usize = 2048;

/// `bytes`, cut to `cap` with its original length recorded under `header` when longer.
fn capped(mut bytes: Vec<u8>, cap: usize, header: &str, headers: &mut BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    if bytes.len() > cap {
        headers.insert(header.to_string(), bytes.len().to_string().into_bytes());
        bytes.truncate(cap);
    }
    bytes
}

/// `text` cut to at most `max` bytes at a character boundary.
fn cut_text(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// One refused record.
#[derive(Debug, Clone)]
pub struct DlqRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub error: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug)]
pub struct Dlq {
    client: PartitionClient,
    source_topic: String,
    cfg: KafkaConfig,
    metrics: Arc<Metrics>,
}

impl Dlq {
    pub fn new(client: PartitionClient, cfg: &KafkaConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            source_topic: cfg.topics.raw_prices.name.clone(),
            cfg: cfg.clone(),
            metrics,
        }
    }

    /// Produce `records` to the DLQ, retrying with the Kafka backoff (no deadline by default).
    pub async fn send(&self, records: Vec<DlqRecord>) -> Result<(), KafkaError> {
        if records.is_empty() {
            return Ok(());
        }
        let n = records.len() as u64;
        let cap = self.cfg.dlq_max_value_bytes;
        let batch: Vec<Record> = records
            .into_iter()
            .map(|r| {
                let mut headers = BTreeMap::new();
                let key = r.key.map(|k| capped(k, cap, "original_key_bytes", &mut headers));
                let value = r
                    .value
                    .map(|v| capped(v, cap, "original_value_bytes", &mut headers));
                headers.extend([
                    (
                        "error".to_string(),
                        cut_text(r.error, MAX_ERROR_BYTES).into_bytes(),
                    ),
                    ("source_topic".to_string(), self.source_topic.clone().into_bytes()),
                    (
                        "source_partition".to_string(),
                        r.source_partition.to_string().into_bytes(),
                    ),
                    (
                        "source_offset".to_string(),
                        r.source_offset.to_string().into_bytes(),
                    ),
                ]);
                Record {
                    key,
                    value,
                    headers,
                    timestamp: r.timestamp,
                }
            })
            .collect();
        let mut backoff = Backoff::tracked(&self.cfg.backoff, &self.metrics.kafka_outage, "dlq");
        crate::kafka::produce::produce_with(&self.client, batch, &self.cfg, &mut backoff).await?;
        self.metrics.counters.dlq_records.inc_by(n);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversize_value_keeps_its_prefix_and_says_its_size() {
        let mut headers = BTreeMap::new();
        let kept = capped(vec![7; 1000], 100, "original_value_bytes", &mut headers);
        assert_eq!(kept, vec![7; 100]);
        assert_eq!(headers["original_value_bytes"], b"1000");
        let mut headers = BTreeMap::new();
        assert_eq!(
            capped(vec![7; 100], 100, "original_value_bytes", &mut headers).len(),
            100
        );
        assert!(
            headers.is_empty(),
            "a value within the cap is kept whole, without the header"
        );
    }

    #[test]
    fn a_long_error_is_cut_at_a_character_boundary() {
        assert_eq!(cut_text("é".repeat(10), 5), "éé");
        assert_eq!(cut_text("short".into(), 5), "short");
    }
}
