#!/usr/bin/env bash
# test.sh — ConScope's full test run, also on a fresh machine: install what is missing (Tansu,
# PostgreSQL 15, Python confluent-kafka for the codec tests, Chromium for the dashboard browser
# test), check formatting (`cargo fmt --all --check`) and lints (`cargo clippy -D warnings`), start
# the local broker and Postgres, then run every test target against them.
#
# Usage: scripts/test.sh [extra arguments for `cargo test`]
#   CONSCOPE_BROWSER_TESTS=0  skip the dashboard browser test (default 1: install Chromium and run it)
#   CONSCOPE_SOAK=1           enable the long soak tests (read by the tests themselves)
#   DATABASE_URL=...          use an existing Postgres instead of a private cluster
# Exits 1 if formatting or clippy fails, otherwise with cargo test's exit code.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
INFRA="$ROOT/scripts/local-infra.sh"

section() { printf '\n==== %s ====\n' "$*"; }

as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    printf 'error: need root to run: %s\n' "$*" >&2
    exit 1
  fi
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
      PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
      export PATH
    else
      printf 'error: cargo not found; install Rust from https://rustup.rs\n' >&2
      exit 1
    fi
  fi
  cargo --version
}

ensure_tansu() {
  bash "$INFRA" install broker
}

ensure_postgres() {
  bash "$INFRA" install postgres
}

# Python confluent-kafka (librdkafka) is the outside Kafka client of the codec tests (and the
# benchmark's ceiling); it lives in the venv tools/bench/python/setup.sh makes.
ensure_python_clients() {
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    printf 'python3-venv: installing with apt-get\n'
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
  fi
  bash "$ROOT/tools/bench/python/setup.sh"
  export CONSCOPE_PYTHON="$ROOT/tools/bench/python/.venv/bin/python"
}

ensure_chromium() {
  local bin
  for bin in chromium chromium-browser google-chrome; do
    if command -v "$bin" >/dev/null 2>&1; then
      printf 'chromium: %s\n' "$("$bin" --version 2>/dev/null || echo "$bin")"
      return 0
    fi
  done
  printf 'chromium: installing with apt-get\n'
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
}

# Disk: a cold build, the broker's SQLite file and the Postgres cluster all grow during the run
# (about 1.6 GB together from a fresh clone, plus Tansu's one-time build). A full disk shows up
# as Postgres crashing mid-test, so say so up front.
NEED_DISK_MB=3000
disk_report() {
  df -h "$ROOT" | sed 's/^/disk: /'
  du -sh "$ROOT/target" "$ROOT/.local/broker" "$ROOT/.local/pg" 2>/dev/null | sed 's/^/disk: /' || true
}
disk_check() {
  local free_mb
  free_mb=$(df -Pm "$ROOT" | awk 'NR == 2 { print $4 }')
  if [[ -n $free_mb && $free_mb -lt $NEED_DISK_MB ]]; then
    printf 'warning: %s MB free on the disk of %s; a full run needs about %s MB\n' \
      "$free_mb" "$ROOT" "$NEED_DISK_MB" >&2
  fi
}

# A one-off run (CI) has no use for incremental build caches, which double target/.
if [[ ${CI:-} == true ]]; then
  export CARGO_INCREMENTAL=0
fi

section "Tools"
disk_report
disk_check
ensure_rust
ensure_tansu
ensure_postgres
ensure_python_clients
# The browser test runs by default (and then must run); 0 skips it.
export CONSCOPE_BROWSER_TESTS="${CONSCOPE_BROWSER_TESTS:-1}"
if [[ $CONSCOPE_BROWSER_TESTS == 1 ]]; then
  ensure_chromium
fi

# The contributor checks are gates: formatting and lints fail the run before any test starts.
section "cargo fmt --all --check"
if ! cargo fmt --all --check; then
  printf 'error: the code is not formatted; run `cargo fmt` and commit the result\n' >&2
  exit 1
fi

section "cargo clippy --workspace --all-targets --locked -- -D warnings"
if ! cargo clippy --workspace --all-targets --locked -- -D warnings; then
  printf 'error: clippy found warnings (denied); fix them before the tests run\n' >&2
  exit 1
fi

section "Local infrastructure"
bash "$INFRA" start

set -a
# shellcheck source=/dev/null
. .local/env
set +a

section "cargo test --workspace --all-targets --locked${*:+ $*}"
if [[ ${CONSCOPE_SOAK:-0} == 1 ]]; then
  printf 'CONSCOPE_SOAK=1: soak tests enabled\n'
fi
rc=0
cargo test --workspace --all-targets --locked "$@" || rc=$?

section "Result"
disk_report
if [[ $rc -eq 0 ]]; then
  printf 'all tests passed\n'
else
  printf 'cargo test failed (exit code %s)\n' "$rc"
fi
exit "$rc"
