//! Producing with the shared retry policy, and a keyed producer for whole topics.

use std::collections::BTreeMap;

use rskafka::client::Client;
use rskafka::client::partition::{Compression, PartitionClient};
use rskafka::record::Record;

use super::KafkaError;
use crate::backoff::Backoff;
use crate::config::KafkaConfig;

/// A stable partitioner (FNV-1a) so one key always lands on one partition.
pub fn partition_for(key: &[u8], partitions: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as usize
}

/// Produce `records` to one partition, each call bounded by `request_timeout`, retried with
/// the Kafka backoff until its deadline. A retry after a lost acknowledgement may duplicate.
pub async fn produce(
    pc: &PartitionClient,
    records: Vec<Record>,
    cfg: &KafkaConfig,
) -> Result<(), KafkaError> {
    let mut backoff = Backoff::new(&cfg.backoff);
    loop {
        let call = pc.produce(records.clone(), Compression::NoCompression);
        let error = match tokio::time::timeout(cfg.request_timeout, call).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(source)) => KafkaError::Partition {
                operation: "produce",
                topic: pc.topic().into(),
                partition: pc.partition(),
                source,
            },
            Err(_) => KafkaError::Timeout {
                operation: "produce",
                topic: pc.topic().into(),
                partition: pc.partition(),
                timeout: cfg.request_timeout,
            },
        };
        let Some(delay) = backoff.next_delay() else {
            return Err(error);
        };
        tracing::warn!(error = %error, retry_in = ?delay, "produce failed, retrying");
        tokio::time::sleep(delay).await;
    }
}

/// Produces keyed records to every partition of one topic.
#[derive(Debug)]
pub struct TopicProducer {
    partitions: Vec<PartitionClient>,
    cfg: KafkaConfig,
}

impl TopicProducer {
    pub async fn connect(
        client: &Client,
        topic: &str,
        partitions: i32,
        cfg: &KafkaConfig,
    ) -> Result<Self, KafkaError> {
        let mut clients = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            clients.push(super::partition_client(client, topic, p, cfg.request_timeout).await?);
        }
        Ok(Self {
            partitions: clients,
            cfg: cfg.clone(),
        })
    }

    /// Produce `(key, value, timestamp)` records, each to the partition of its key; the
    /// partitions are written concurrently.
    pub async fn send(
        &self,
        records: Vec<(Vec<u8>, Vec<u8>, chrono::DateTime<chrono::Utc>)>,
    ) -> Result<(), KafkaError> {
        let mut shares: BTreeMap<usize, Vec<Record>> = BTreeMap::new();
        for (key, value, timestamp) in records {
            let p = partition_for(&key, self.partitions.len());
            shares.entry(p).or_default().push(Record {
                key: Some(key),
                value: Some(value),
                headers: BTreeMap::new(),
                timestamp,
            });
        }
        let calls = shares
            .into_iter()
            .map(|(p, recs)| produce(&self.partitions[p], recs, &self.cfg));
        futures::future::try_join_all(calls).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_lands_on_the_same_partition() {
        let p = partition_for(b"mock:L1", 4);
        assert!(p < 4);
        assert_eq!(p, partition_for(b"mock:L1", 4));
        let spread: std::collections::BTreeSet<_> = (0..100)
            .map(|i| partition_for(format!("k{i}").as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
