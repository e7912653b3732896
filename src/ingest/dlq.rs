//! The dead-letter queue: records that do not parse or validate go to `raw_prices_dlq` with
//! their original key and value and headers saying why (`error`) and where they came from
//! (`source_topic`, `source_partition`, `source_offset`).
//!
//! A DLQ record is produced **before** the offset that skips it is handed on, so a crash can
//! only repeat a DLQ record, never lose one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use rskafka::client::partition::PartitionClient;
use rskafka::record::Record;

use crate::config::KafkaConfig;
use crate::kafka::KafkaError;
use crate::metrics::Metrics;

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

    /// Produce `records` to the DLQ, retrying within the Kafka backoff deadline.
    pub async fn send(&self, records: Vec<DlqRecord>) -> Result<(), KafkaError> {
        if records.is_empty() {
            return Ok(());
        }
        let n = records.len() as u64;
        let batch: Vec<Record> = records
            .into_iter()
            .map(|r| Record {
                key: r.key,
                value: r.value,
                headers: BTreeMap::from([
                    ("error".to_string(), r.error.into_bytes()),
                    ("source_topic".to_string(), self.source_topic.clone().into_bytes()),
                    (
                        "source_partition".to_string(),
                        r.source_partition.to_string().into_bytes(),
                    ),
                    (
                        "source_offset".to_string(),
                        r.source_offset.to_string().into_bytes(),
                    ),
                ]),
                timestamp: r.timestamp,
            })
            .collect();
        crate::kafka::produce::produce(&self.client, batch, &self.cfg).await?;
        self.metrics.counters.dlq_records.fetch_add(n, Relaxed);
        Ok(())
    }
}
