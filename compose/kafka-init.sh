#!/usr/bin/env bash
# kafka-init.sh — create ConScope's Kafka topics with their partition counts and retention,
# and bring the configs of topics that already exist up to date. Runs once in the `kafka-init`
# compose service (apache/kafka image) after the broker is healthy; safe to run again.
#
# ConScope also creates missing topics at `run` start, but its Kafka client cannot send topic
# configs, so retention and compaction are set here.
#
# Env: KAFKA_BOOTSTRAP (default kafka:9092), KAFKA_BIN (default /opt/kafka/bin)
set -euo pipefail

BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"
REPLICATION_FACTOR="${KAFKA_REPLICATION_FACTOR:-1}"

# name  partitions  configs (comma-separated key=value)
TOPICS=(
  "raw_prices        4  retention.ms=604800000,compression.type=snappy"
  "processed_prices  4  retention.ms=2592000000"
  "price_alerts      2  retention.ms=86400000"
  "raw_prices_dlq    1  retention.ms=2592000000"
  "system_metrics    1  cleanup.policy=compact"
)

topics() { "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" "$@"; }
configs() { "$KAFKA_BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" "$@"; }

wait_for_broker() {
  local i
  for ((i = 1; i <= 30; i++)); do
    if topics --list >/dev/null 2>&1; then
      return 0
    fi
    echo "kafka-init: waiting for $BOOTSTRAP ($i/30)"
    sleep 2
  done
  echo "kafka-init: broker $BOOTSTRAP not reachable" >&2
  exit 1
}

ensure_topic() {
  local name="$1" partitions="$2" config_list="$3"
  local -a config_args=()
  local kv current
  local -a kvs=()
  IFS=',' read -r -a kvs <<<"$config_list"
  for kv in "${kvs[@]}"; do
    config_args+=(--config "$kv")
  done

  if topics --describe --topic "$name" >/dev/null 2>&1; then
    configs --alter --entity-type topics --entity-name "$name" --add-config "$config_list" >/dev/null
    current="$(topics --describe --topic "$name" | sed -n 's/.*PartitionCount:[[:space:]]*\([0-9]*\).*/\1/p' | head -n 1)"
    echo "kafka-init: $name exists ($current partitions), configs applied: $config_list"
    if [[ -n $current && $current != "$partitions" ]]; then
      # Not changed automatically: more partitions re-map listing keys to partitions.
      echo "kafka-init: warning: $name has $current partitions, expected $partitions (left as is)" >&2
    fi
  else
    topics --create --if-not-exists --topic "$name" --partitions "$partitions" \
      --replication-factor "$REPLICATION_FACTOR" "${config_args[@]}" >/dev/null
    echo "kafka-init: created $name ($partitions partitions): $config_list"
  fi
}

wait_for_broker
for spec in "${TOPICS[@]}"; do
  read -r name partitions config_list <<<"$spec"
  ensure_topic "$name" "$partitions" "$config_list"
done
echo "kafka-init: done"
topics --list
