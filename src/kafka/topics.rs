//! Creating and listing ConScope's topics (`conscope topics create|list`, and at `run` start).
//!
//! rskafka 0.6's `create_topic` sends no topic configs, so retention and compaction cannot be
//! set from here: topics created by ConScope get the broker's defaults. For real Kafka set them
//! with Kafka's own tools (compose/kafka-init.sh does).

use std::collections::BTreeMap;

use rskafka::client::Client;

use super::KafkaError;
use crate::config::KafkaConfig;

/// What `ensure_topics` found or did for one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicStatus {
    Created { partitions: i32 },
    Existed { partitions: i32 },
}

/// Every topic on the broker with its partition count.
pub async fn list(client: &Client, cfg: &KafkaConfig) -> Result<BTreeMap<String, i32>, KafkaError> {
    let call = client.list_topics();
    let topics = tokio::time::timeout(cfg.request_timeout, call)
        .await
        .map_err(|_| KafkaError::Unreachable {
            brokers: cfg.brokers.join(","),
            timeout: cfg.request_timeout,
            reason: "listing topics got no answer".into(),
        })?
        .map_err(|source| KafkaError::Admin {
            operation: "list topics",
            source: source.into(),
        })?;
    Ok(topics
        .into_iter()
        .map(|t| (t.name, t.partitions.len() as i32))
        .collect())
}

/// Create every configured topic that is missing; report what existed.
pub async fn ensure(client: &Client, cfg: &KafkaConfig) -> Result<Vec<(String, TopicStatus)>, KafkaError> {
    let existing = list(client, cfg).await?;
    let controller = client.controller_client().map_err(|source| KafkaError::Admin {
        operation: "find controller",
        source: source.into(),
    })?;
    let timeout_ms = cfg.request_timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut report = Vec::new();
    for topic in cfg.topics.all() {
        if let Some(&partitions) = existing.get(&topic.name) {
            if partitions < topic.partitions {
                tracing::warn!(
                    topic = %topic.name, partitions, configured = topic.partitions,
                    "topic has fewer partitions than configured"
                );
            }
            report.push((topic.name.clone(), TopicStatus::Existed { partitions }));
            continue;
        }
        let call = controller.create_topic(topic.name.clone(), topic.partitions, 1, timeout_ms);
        match tokio::time::timeout(cfg.request_timeout, call).await {
            Ok(Ok(())) => {}
            // Another instance may have created it between our list and our create.
            Ok(Err(rskafka::client::error::Error::ServerError {
                protocol_error: rskafka::client::error::ProtocolError::TopicAlreadyExists,
                ..
            })) => {}
            Ok(Err(source)) => {
                return Err(KafkaError::Admin {
                    operation: "create topic",
                    source: source.into(),
                });
            }
            Err(_) => {
                return Err(KafkaError::Unreachable {
                    brokers: cfg.brokers.join(","),
                    timeout: cfg.request_timeout,
                    reason: format!("creating topic {} got no answer", topic.name),
                });
            }
        }
        tracing::info!(topic = %topic.name, partitions = topic.partitions, "topic created");
        report.push((
            topic.name.clone(),
            TopicStatus::Created {
                partitions: topic.partitions,
            },
        ));
    }
    Ok(report)
}
