#!/usr/bin/env python3
"""The first ConScope's consumer, rebuilt as it worked, for a side-by-side benchmark.

A straightforward per-event loop: kafka-python reads raw_prices, each event is compared with the
last price of its listing held in a dict, and written with one INSERT and one COMMIT; every drop
alert is inserted and committed, then produced and flushed on its own. No batching anywhere.

`conscope-bench --with-python` runs it on the benchmark's topic and database and reads the JSON
line it prints last. By hand (tools/bench/python/setup.sh installs the venv):

    tools/bench/python/.venv/bin/python tools/bench/python/first_conscope_consumer.py --brokers 127.0.0.1:19092 \
        --topic raw_prices --partitions 4 --alerts-topic first_alerts \
        --dsn postgres://postgres@127.0.0.1:15432/conscope --max-seconds 60
"""

import argparse
import json
import sys
import time

import psycopg2
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

SCHEMA = """
CREATE TABLE IF NOT EXISTS first_price_history (
    id          SERIAL PRIMARY KEY,
    event_id    TEXT NOT NULL,
    listing_key TEXT NOT NULL,
    source      TEXT NOT NULL,
    section     TEXT,
    "row"       TEXT,
    seat        TEXT,
    price       NUMERIC(10, 2) NOT NULL,
    fees        NUMERIC(10, 2),
    total_price NUMERIC(10, 2),
    "timestamp" TIMESTAMP NOT NULL,
    listing_id  TEXT,
    listing_url TEXT,
    created_at  TIMESTAMP DEFAULT now()
);
CREATE INDEX IF NOT EXISTS first_price_history_event_time
    ON first_price_history (event_id, "timestamp");
CREATE TABLE IF NOT EXISTS first_price_drop_alerts (
    id           SERIAL PRIMARY KEY,
    event_id     TEXT NOT NULL,
    listing_key  TEXT NOT NULL,
    old_price    NUMERIC(10, 2) NOT NULL,
    new_price    NUMERIC(10, 2) NOT NULL,
    drop_amount  NUMERIC(10, 2) NOT NULL,
    drop_percent DOUBLE PRECISION NOT NULL,
    created_at   TIMESTAMP DEFAULT now()
);
"""

INSERT_HISTORY = """
INSERT INTO first_price_history (event_id, listing_key, source, section, "row", seat, price, fees,
                                 total_price, "timestamp", listing_id, listing_url)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

INSERT_ALERT = """
INSERT INTO first_price_drop_alerts (event_id, listing_key, old_price, new_price, drop_amount,
                                     drop_percent)
VALUES (%s, %s, %s, %s, %s, %s)
"""


def arguments():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--alerts-topic", required=True)
    p.add_argument("--dsn", required=True)
    p.add_argument("--max-events", type=int, default=1_000_000)
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--min-drop-percent", type=float, default=10.0)
    p.add_argument("--min-change-abs", type=float, default=5.0)
    p.add_argument("--group", default="first-conscope-bench")
    p.add_argument("--group-join-seconds", type=float, default=20.0)
    return p.parse_args()


def group_consumer(args):
    """Subscribe through a consumer group; None (and why) when the broker will not have it."""
    try:
        consumer = KafkaConsumer(
            args.topic,
            bootstrap_servers=args.brokers.split(","),
            group_id=args.group,
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            fetch_max_wait_ms=50,
        )
    except Exception as e:  # noqa: BLE001 - any failure means "no group", reported below
        return None, f"{type(e).__name__}: {e}"
    deadline = time.monotonic() + args.group_join_seconds
    pending = {}
    try:
        while not consumer.assignment() and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                pending.setdefault(tp, []).extend(records)
    except Exception as e:  # noqa: BLE001
        consumer.close()
        return None, f"{type(e).__name__}: {e}"
    if not consumer.assignment():
        consumer.close()
        return None, f"no partitions assigned within {args.group_join_seconds:.0f} s"
    return (consumer, pending), None


def assigned_consumer(args):
    consumer = KafkaConsumer(
        bootstrap_servers=args.brokers.split(","),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    partitions = [TopicPartition(args.topic, p) for p in range(args.partitions)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return consumer


def main():
    args = arguments()
    report = {"events": 0, "seconds": 0.0, "events_per_s": 0.0, "alerts": 0,
              "consumer_group": False, "group_error": None, "error": None}
    conn = psycopg2.connect(args.dsn)
    with conn.cursor() as cur:
        cur.execute(SCHEMA)
    conn.commit()
    producer = KafkaProducer(bootstrap_servers=args.brokers.split(","))

    joined, report["group_error"] = group_consumer(args)
    if joined:
        consumer, pending = joined
        report["consumer_group"] = True
    else:
        consumer, pending = assigned_consumer(args), {}

    last_price = {}
    first = None
    last = time.monotonic()
    started = time.monotonic()
    cur = conn.cursor()
    try:
        batches = [pending] if pending else []
        while report["events"] < args.max_events and time.monotonic() - started < args.max_seconds:
            if not batches:
                batches.append(consumer.poll(timeout_ms=200))
            for records in batches.pop().values():
                for msg in records:
                    if report["events"] >= args.max_events:
                        break
                    if first is None:
                        first = time.monotonic()
                    e = json.loads(msg.value)
                    key = f"{e['event_id']}_{e['source']}_{e.get('section')}_{e.get('row')}_{e.get('seat')}"
                    price = float(e["price"])
                    cur.execute(INSERT_HISTORY, (
                        e["event_id"], key, e["source"], e.get("section"), e.get("row"),
                        e.get("seat"), price, e.get("fees"), e.get("total_price"), e["timestamp"],
                        e.get("listing_id"), e.get("listing_url")))
                    conn.commit()
                    previous = last_price.get(key)
                    last_price[key] = price
                    if previous and price < previous:
                        drop = previous - price
                        percent = drop * 100.0 / previous
                        if percent >= args.min_drop_percent and drop >= args.min_change_abs:
                            cur.execute(INSERT_ALERT, (e["event_id"], key, previous, price, drop, percent))
                            conn.commit()
                            alert = dict(e, old_price=previous, new_price=price,
                                         drop_amount=drop, drop_percent=percent)
                            producer.send(args.alerts_topic, json.dumps(alert).encode())
                            producer.flush()
                            report["alerts"] += 1
                    report["events"] += 1
                    last = time.monotonic()
    except Exception as e:  # noqa: BLE001 - reported in the JSON line, the caller decides
        report["error"] = f"{type(e).__name__}: {e}"
    finally:
        cur.close()
        conn.close()
        consumer.close()
        producer.close()
    if first is not None:
        report["seconds"] = round(last - first, 3)
        report["events_per_s"] = round(report["events"] / max(last - first, 1e-9), 1)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
