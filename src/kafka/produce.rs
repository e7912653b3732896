//! Producing with the shared retry policy, and a keyed producer for whole topics.
//!
//! Every send is cut into requests of at most `kafka.max_request_bytes` ([`split_requests`]),
//! so a large batch — an outbox recovery of hundreds of thousands of records — never meets the
//! broker's `message.max.bytes`.

use std::collections::BTreeMap;

use rskafka::client::Client;
use rskafka::client::partition::PartitionClient;
use rskafka::record::Record;

use std::sync::Arc;

use super::{ClientError, KafkaError};
use crate::backoff::{Backoff, Outage, Verdict};
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

/// Produce `records` to one partition, in requests of at most `kafka.max_request_bytes`, each
/// call bounded by `request_timeout` and retried with the Kafka backoff (no deadline by
/// default: an outage is waited out). A retry after a lost acknowledgement may duplicate.
/// Errors a retry cannot mend (a record the broker refuses as too large or invalid) return at
/// once.
pub async fn produce(
    pc: &PartitionClient,
    records: Vec<Record>,
    cfg: &KafkaConfig,
) -> Result<(), KafkaError> {
    produce_with(pc, records, cfg, &mut Backoff::new(&cfg.backoff)).await
}

/// [`produce`] with the caller's retry sequence (a tracked one reports the outage).
pub async fn produce_with(
    pc: &PartitionClient,
    records: Vec<Record>,
    cfg: &KafkaConfig,
    backoff: &mut Backoff,
) -> Result<(), KafkaError> {
    let compression = cfg.compression.rskafka();
    for request in split_requests(records, cfg.max_request_bytes) {
        let call = || async {
            let call = pc.produce(request.clone(), compression);
            match tokio::time::timeout(cfg.request_timeout, call).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(source)) => Err(KafkaError::Partition {
                    operation: "produce",
                    topic: pc.topic().into(),
                    partition: pc.partition(),
                    source: source.into(),
                }),
                Err(_) => Err(KafkaError::Timeout {
                    operation: "produce",
                    topic: pc.topic().into(),
                    partition: pc.partition(),
                    timeout: cfg.request_timeout,
                }),
            }
        };
        let verdict = |e: &KafkaError| {
            if is_permanent(e) {
                Verdict::Fail
            } else {
                Verdict::Outage
            }
        };
        backoff.retry("produce", verdict, call).await?;
    }
    Ok(())
}

/// Whether retrying cannot help: the broker refused what was sent, not the moment it was sent.
pub fn is_permanent(error: &KafkaError) -> bool {
    use rskafka::client::error::{Error as RsError, ProtocolError as P};
    let KafkaError::Partition {
        source: ClientError(RsError::ServerError { protocol_error, .. }),
        ..
    } = error
    else {
        return false;
    };
    matches!(
        protocol_error,
        P::MessageTooLarge
            | P::RecordListTooLarge
            | P::InvalidRecord
            | P::InvalidTimestamp
            | P::InvalidTopicException
            | P::InvalidRequiredAcks
            | P::TopicAuthorizationFailed
            | P::ClusterAuthorizationFailed
            | P::UnsupportedVersion
            | P::UnsupportedCompressionType
    )
}

/// Bytes of a produce request besides its records: request and batch headers, topic name.
const REQUEST_OVERHEAD: usize = 1024;

/// An upper bound on the bytes `record` takes in a record batch (Kafka's v2 format: varint
/// lengths and deltas, at most 5 or 10 bytes each).
pub fn record_bytes(record: &Record) -> usize {
    let key = record.key.as_ref().map_or(0, Vec::len);
    let value = record.value.as_ref().map_or(0, Vec::len);
    let headers: usize = record.headers.iter().map(|(k, v)| 10 + k.len() + v.len()).sum();
    32 + key + value + headers
}

/// Cut `records` into requests of at most `max_bytes` each, in order. A record larger than
/// that on its own goes alone (the broker decides; the DLQ caps what it sends).
pub fn split_requests(records: Vec<Record>, max_bytes: usize) -> Vec<Vec<Record>> {
    let budget = max_bytes.saturating_sub(REQUEST_OVERHEAD).max(1);
    let mut requests = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for record in records {
        let bytes = record_bytes(&record);
        if !current.is_empty() && size + bytes > budget {
            requests.push(std::mem::take(&mut current));
            size = 0;
        }
        size += bytes;
        current.push(record);
    }
    if !current.is_empty() {
        requests.push(current);
    }
    requests
}

/// Produces keyed records to every partition of one topic.
#[derive(Debug)]
pub struct TopicProducer {
    partitions: Vec<PartitionClient>,
    cfg: KafkaConfig,
    /// Where failed produces report (see [`TopicProducer::reporting_to`]).
    outage: Option<(Arc<Outage>, &'static str)>,
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
            outage: None,
        })
    }

    /// Report failed produces to `outage` as `stage` (one WARN per outage, not per retry).
    pub fn reporting_to(mut self, outage: &Arc<Outage>, stage: &'static str) -> Self {
        self.outage = Some((outage.clone(), stage));
        self
    }

    /// How many partitions this producer spreads keys over.
    pub fn partition_count(&self) -> usize {
        self.partitions.len()
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
        let calls = shares.into_iter().map(|(p, recs)| async move {
            let mut backoff = match &self.outage {
                Some((outage, stage)) => Backoff::tracked(&self.cfg.backoff, outage, stage),
                None => Backoff::new(&self.cfg.backoff),
            };
            produce_with(&self.partitions[p], recs, &self.cfg, &mut backoff).await
        });
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

    fn record(value_len: usize) -> Record {
        Record {
            key: Some(b"k".to_vec()),
            value: Some(vec![b'x'; value_len]),
            headers: BTreeMap::new(),
            timestamp: chrono::Utc::now(),
        }
    }

    #[test]
    fn requests_stay_under_the_limit_and_keep_the_order() {
        let records: Vec<_> = (0..10_000).map(|i| record(100 + i % 400)).collect();
        let total: usize = records.iter().map(record_bytes).sum();
        let lengths: Vec<_> = records.iter().map(|r| r.value.as_ref().map(Vec::len)).collect();
        let requests = split_requests(records, 64 * 1024);
        assert!(
            requests.len() >= total / (64 * 1024),
            "{} requests",
            requests.len()
        );
        for r in &requests {
            let bytes: usize = r.iter().map(record_bytes).sum();
            assert!(bytes + REQUEST_OVERHEAD <= 64 * 1024, "{bytes}");
        }
        let after: Vec<_> = requests
            .iter()
            .flatten()
            .map(|r| r.value.as_ref().map(Vec::len))
            .collect();
        assert_eq!(after, lengths, "every record once, in order");
    }

    #[test]
    fn a_record_larger_than_the_limit_goes_alone() {
        let requests = split_requests(vec![record(10), record(5_000), record(10)], 2_048);
        let sizes: Vec<_> = requests.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 1]);
    }
}
