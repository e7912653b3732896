#!/usr/bin/env python3
"""librdkafka (Python confluent-kafka) as an outside producer and consumer, for the tests that
check ConScope reads what other Kafka clients write and writes what they read.

  librdkafka_client.py produce BROKERS TOPIC PARTITION
      Reads JSON lines from stdin, each {"compression": CODEC, "records": [[key, value], ...]}.
      Each line is produced with its codec ("none", "gzip", "snappy", "lz4", "zstd") as one
      record batch (the producer lingers until the line is complete, then flushes), and answers
      with one JSON line {"offsets": [...]}: the offsets the broker acknowledged, from the
      delivery reports, in the order of the line's records.

  librdkafka_client.py consume BROKERS TOPIC PARTITIONS
      Reads partitions 0..PARTITIONS-1 from the first offset to the high watermark and prints one
      JSON line per record: {"partition", "offset", "key", "value"}.

Errors go to stderr and end the script with exit code 1.
"""

import json
import sys

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition


def produce(brokers, topic, partition):
    for line in sys.stdin:
        if not line.strip():
            continue
        batch = json.loads(line)
        records = batch["records"]
        producer = Producer(
            {
                "bootstrap.servers": brokers,
                "compression.type": batch["compression"],
                "linger.ms": 1000,
                "batch.num.messages": max(1, len(records)),
                "batch.size": 64 * 1024 * 1024,
                "message.max.bytes": 64 * 1024 * 1024,
                "enable.idempotence": False,
                "acks": "all",
            }
        )
        offsets = [None] * len(records)
        errors = []

        def delivered(err, msg, i):
            if err is not None:
                errors.append(str(err))
            else:
                offsets[i] = msg.offset()

        for i, (key, value) in enumerate(records):
            producer.produce(
                topic,
                value=value.encode(),
                key=key.encode(),
                partition=partition,
                on_delivery=lambda err, msg, i=i: delivered(err, msg, i),
            )
        left = producer.flush(60)
        if left or errors or None in offsets:
            print(f"produce failed: {left} undelivered, errors {errors[:3]}", file=sys.stderr)
            sys.exit(1)
        print(json.dumps({"offsets": offsets}), flush=True)


def consume(brokers, topic, partitions):
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": "conscope-test-reader",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    ends = {}
    for p in range(partitions):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        ends[p] = high
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    left = {p for p, high in ends.items() if high > 0}
    while left:
        msg = consumer.poll(10)
        if msg is None:
            print(f"no record within 10 s; still to read: {sorted(left)}", file=sys.stderr)
            sys.exit(1)
        if msg.error():
            raise KafkaException(msg.error())
        p = msg.partition()
        print(
            json.dumps(
                {
                    "partition": p,
                    "offset": msg.offset(),
                    "key": (msg.key() or b"").decode(),
                    "value": (msg.value() or b"").decode(),
                }
            )
        )
        if msg.offset() + 1 >= ends[p]:
            left.discard(p)
    consumer.close()


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("produce", "consume"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    mode, brokers, topic, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    if mode == "produce":
        produce(brokers, topic, n)
    else:
        consume(brokers, topic, n)


if __name__ == "__main__":
    main()
