#!/usr/bin/env python3
"""The broker's ceiling for `conscope-bench`: a bare librdkafka consumer (confluent-kafka).

Reads every partition of a topic from offset 0 up to the high watermarks it finds at start, by
explicit assignment (no consumer group, nothing committed), counting records and value bytes
without parsing them. librdkafka's defaults do the fetching: several partitions per request,
fetch.max.bytes 50 MB, max.partition.fetch.bytes 1 MB, a prefetch queue per partition.

Prints one JSON line: {"records", "bytes", "seconds", "records_per_s", "librdkafka"} or, on
failure, {"error": "..."} (exit code 1).
"""

import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition, libversion


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--max-seconds", type=float, default=600.0)
    ap.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=500,
        help="fetch.wait.max.ms (librdkafka's default 500)",
    )
    args = ap.parse_args()

    consumer = Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": "conscope-bench-ceiling",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": args.fetch_wait_ms,
        }
    )
    try:
        highs = {}
        for p in range(args.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(args.topic, p), timeout=30.0
            )
            if high > 0:
                highs[p] = high
        consumer.assign([TopicPartition(args.topic, p, 0) for p in highs])
        records = value_bytes = 0
        left = dict(highs)
        started = time.monotonic()
        while left:
            if time.monotonic() - started > args.max_seconds:
                raise TimeoutError(f"not done within {args.max_seconds} s; left: {left}")
            for msg in consumer.consume(num_messages=10000, timeout=1.0):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                p, offset = msg.partition(), msg.offset()
                if p in left and offset < highs[p]:
                    records += 1
                    value_bytes += len(msg.value() or b"")
                    if offset + 1 >= highs[p]:
                        del left[p]
        seconds = time.monotonic() - started
        print(
            json.dumps(
                {
                    "records": records,
                    "bytes": value_bytes,
                    "seconds": seconds,
                    "records_per_s": records / seconds if seconds > 0 else 0.0,
                    "librdkafka": libversion()[0],
                }
            )
        )
        return 0
    except Exception as e:  # reported to the bench, which keeps its own figures
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    finally:
        consumer.close()


if __name__ == "__main__":
    sys.exit(main())
