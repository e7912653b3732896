//! Kafka plumbing shared by every stage: building an rskafka client with deadlines (rskafka 0.6
//! retries forever by default), partition clients, the one partition reader of ingest and the
//! alert task ([`reader`]), producing ([`produce`]), the dead-letter queue ([`dlq`]) and topic
//! administration ([`topics`]).

pub mod dlq;
pub mod produce;
pub mod reader;
pub mod topics;

use std::sync::Arc;
use std::time::Duration;

use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};

use crate::backoff::Backoff;
use crate::config::KafkaConfig;

/// A Kafka operation that failed, with what a caller needs to say which and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    #[error("cannot reach Kafka broker {brokers} within {timeout:?}: {reason}")]
    Unreachable {
        brokers: String,
        timeout: Duration,
        reason: String,
    },
    #[error("Kafka {operation} on {topic}/{partition} failed")]
    Partition {
        operation: &'static str,
        topic: String,
        partition: i32,
        source: ClientError,
    },
    #[error("Kafka {operation} on {topic}/{partition} took longer than {timeout:?}")]
    Timeout {
        operation: &'static str,
        topic: String,
        partition: i32,
        timeout: Duration,
    },
    #[error("Kafka {operation} failed")]
    Admin {
        operation: &'static str,
        source: ClientError,
    },
}

/// An rskafka error, the last link of a [`KafkaError`]'s chain. rskafka's messages already quote
/// their causes (`"Request error: Cannot read data: …"`), so this one has no `source`: a printer
/// of the chain says each cause once.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub rskafka::client::error::Error);

impl From<rskafka::client::error::Error> for ClientError {
    fn from(e: rskafka::client::error::Error) -> Self {
        Self(e)
    }
}

/// Connect to the configured brokers, giving up after `request_timeout` with a sentence that
/// names the brokers.
pub async fn connect(cfg: &KafkaConfig) -> Result<Arc<Client>, KafkaError> {
    let brokers = cfg.brokers.join(",");
    let mut backoff = cfg.backoff.clone();
    // Connecting is bounded by the request timeout, however long the retry deadline is.
    backoff.deadline = backoff.deadline.min(cfg.request_timeout);
    let build = ClientBuilder::new(cfg.brokers.clone())
        .client_id(cfg.client_id.clone())
        .backoff_config(Backoff::rskafka(&backoff))
        .build();
    match tokio::time::timeout(cfg.request_timeout, build).await {
        Ok(Ok(client)) => Ok(Arc::new(client)),
        Ok(Err(e)) => Err(KafkaError::Unreachable {
            brokers,
            timeout: cfg.request_timeout,
            reason: e.to_string(),
        }),
        Err(_) => Err(KafkaError::Unreachable {
            brokers,
            timeout: cfg.request_timeout,
            reason: "no answer".into(),
        }),
    }
}

/// A client for one partition; a missing topic is an error, never an endless retry.
pub async fn partition_client(
    client: &Client,
    topic: &str,
    partition: i32,
    timeout: Duration,
) -> Result<PartitionClient, KafkaError> {
    let call = client.partition_client(topic, partition, UnknownTopicHandling::Error);
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(pc)) => Ok(pc),
        Ok(Err(source)) => Err(KafkaError::Partition {
            operation: "connect",
            topic: topic.into(),
            partition,
            source: source.into(),
        }),
        Err(_) => Err(KafkaError::Timeout {
            operation: "connect",
            topic: topic.into(),
            partition,
            timeout,
        }),
    }
}

/// What one bounded fetch returned.
#[derive(Debug)]
pub enum Fetch {
    /// Records (possibly starting before the requested offset) and the high watermark.
    Records(Vec<rskafka::record::RecordAndOffset>, i64),
    /// The broker does not have the requested offset (retention, or not produced yet).
    OutOfRange,
}

/// One fetch under `timeout`: a failure and a timeout are the same kind of retryable error,
/// an out-of-range offset is an answer the caller decides about.
pub async fn fetch(
    pc: &PartitionClient,
    offset: i64,
    max_bytes: i32,
    max_wait_ms: i32,
    timeout: Duration,
) -> Result<Fetch, KafkaError> {
    use rskafka::client::error::{Error as RsError, ProtocolError};
    match tokio::time::timeout(timeout, pc.fetch_records(offset, 1..max_bytes, max_wait_ms)).await {
        Ok(Ok((records, high_watermark))) => Ok(Fetch::Records(records, high_watermark)),
        Ok(Err(RsError::ServerError {
            protocol_error: ProtocolError::OffsetOutOfRange,
            ..
        })) => Ok(Fetch::OutOfRange),
        Ok(Err(source)) => Err(KafkaError::Partition {
            operation: "fetch",
            topic: pc.topic().into(),
            partition: pc.partition(),
            source: source.into(),
        }),
        Err(_) => Err(KafkaError::Timeout {
            operation: "fetch",
            topic: pc.topic().into(),
            partition: pc.partition(),
            timeout,
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::logging::chain;
    use rskafka::client::error::{Error as RsError, RequestError};

    /// A partition error whose root cause is `broken pipe`.
    pub(crate) fn broken_pipe(operation: &'static str) -> KafkaError {
        KafkaError::Partition {
            operation,
            topic: "raw_prices".into(),
            partition: 3,
            source: RsError::Request(RequestError::IO(std::io::Error::other("broken pipe"))).into(),
        }
    }

    #[test]
    fn a_partition_error_names_its_partition_then_the_client_cause_once() {
        let text = chain(&broken_pipe("fetch")).to_string();
        assert_eq!(
            text,
            "Kafka fetch on raw_prices/3 failed: Request error: Cannot read/write data: broken pipe"
        );
        assert_eq!(text.matches("broken pipe").count(), 1, "{text}");
    }

    #[test]
    fn an_admin_error_says_the_client_cause_once() {
        let e = KafkaError::Admin {
            operation: "create topic",
            source: RsError::InvalidResponse("no topics in the answer".into()).into(),
        };
        let text = chain(&e).to_string();
        assert_eq!(
            text,
            "Kafka create topic failed: Invalid response: no topics in the answer"
        );
        assert_eq!(text.matches("no topics in the answer").count(), 1, "{text}");
    }
}
