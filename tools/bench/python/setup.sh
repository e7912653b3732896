#!/usr/bin/env bash
# setup.sh — the Python side of the load benchmark: a virtualenv under tools/bench/python/.venv with
# kafka-python and psycopg2 for tools/bench/python/first_conscope_consumer.py (the first ConScope's
# per-event consumer, run beside ConScope by `conscope-bench --with-python`), confluent-kafka for the
# librdkafka ceiling of the benchmark and for the codec tests (tests/it/codecs.rs; scripts/test.sh
# runs this script).
#
# Usage: tools/bench/python/setup.sh          (idempotent: an existing venv with both packages is kept)
#   PYTHON=python3.11 tools/bench/python/setup.sh   to pick the interpreter
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
PYTHON="${PYTHON:-python3}"
PACKAGES=(kafka-python==2.3.3 psycopg2-binary==2.9.13 confluent-kafka==2.6.1)

if [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import kafka, psycopg2, confluent_kafka' 2>/dev/null; then
  printf 'bench venv ready: %s\n' "$VENV"
  exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PACKAGES[@]}"
"$VENV/bin/python" -c 'import kafka, psycopg2, confluent_kafka; print("kafka-python", kafka.__version__, "· psycopg2", psycopg2.__version__, "· librdkafka", confluent_kafka.libversion()[0])'
printf 'bench venv ready: %s\n' "$VENV"
