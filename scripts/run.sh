#!/usr/bin/env bash
# run.sh — run ConScope locally: start the local broker and Postgres (scripts/local-infra.sh),
# load their addresses from .local/env, build the release binary and run the pipeline.
#
# Usage: scripts/run.sh [extra arguments for `conscope run`]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/local-infra.sh start

set -a
# shellcheck source=/dev/null
. .local/env
set +a

cargo build --release
exec target/release/conscope --config config.toml run "$@"
