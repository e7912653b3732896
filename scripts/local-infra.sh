#!/usr/bin/env bash
# local-infra.sh — ConScope's local infrastructure for a machine without Docker:
# a Tansu Kafka-compatible broker (SQLite storage) and a private PostgreSQL 15 cluster,
# both listening on 127.0.0.1 only, with their data under the ignored .local/ folder.
#
# Usage: scripts/local-infra.sh {start|stop|status|install} [broker|postgres|all]
#
#   start    start what is not running yet (installs Tansu when missing), create the
#            `conscope` database, write .local/env and print the connection URLs
#   stop     stop the broker (SIGTERM, then SIGKILL) and/or Postgres (pg_ctl -m fast)
#   status   print running/stopped for each; exit 0 if all requested run, 3 otherwise
#   install  install missing tools only (Tansu via cargo; PostgreSQL 15 via apt-get)
#
# Environment:
#   CONSCOPE_BROKER_PORT  broker port (default 19092)
#   CONSCOPE_PG_PORT      Postgres port (default 15432)
#                         When not set and the default port is taken by another program (say a
#                         second checkout's broker), the next free port is used; .local/env says which.
#   CONSCOPE_PG_BIN       Postgres server binaries (default /usr/lib/postgresql/15/bin)
#   DATABASE_URL          use this Postgres instead of a private cluster (never started/stopped)
#
# Every action is idempotent: starting twice starts nothing the second time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL_DIR="$ROOT/.local"
ENV_FILE="$LOCAL_DIR/env"

TANSU_VERSION="0.6.0"
TANSU_FEATURES="libsql,dynostore"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

BROKER_PORT="${CONSCOPE_BROKER_PORT:-19092}"
BROKER_PORT_EXPLICIT="${CONSCOPE_BROKER_PORT:+1}"
BROKER_DIR="$LOCAL_DIR/broker"
BROKER_LOG="$BROKER_DIR/broker.log"
BROKER_PID_FILE="$BROKER_DIR/pid"
BROKER_PORT_FILE="$BROKER_DIR/port"
BROKER_START_TIMEOUT=60

PG_PORT="${CONSCOPE_PG_PORT:-15432}"
PG_PORT_EXPLICIT="${CONSCOPE_PG_PORT:+1}"
PG_BIN="${CONSCOPE_PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_OS_USER="postgres"
PG_DB="conscope"
PG_START_TIMEOUT=60
# PG_BASE, PG_DATA and PG_LOG are chosen by pg_paths (the repo may not be readable by postgres).
PG_BASE=""
PG_DATA=""
PG_LOG=""
PG_NOTE=""

log() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [[ $EUID -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $*"
  fi
}

port_open() {
  # Loopback connects are refused at once when nothing listens; the timeout is a guard only.
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" >/dev/null 2>&1
}

# First port from $1 upwards (within 100) that nothing listens on.
free_port() {
  local port
  for ((port = $1; port < $1 + 100; port++)); do
    if ! port_open "$port"; then
      printf '%s\n' "$port"
      return 0
    fi
  done
  return 1
}

# Keep the wanted port when it is free. If it is taken: fail when the port was given
# explicitly, otherwise move to the next free one. Prints the port to use.
choose_port() {
  local what="$1" port="$2" explicit="$3" var="$4" other
  if ! port_open "$port"; then
    printf '%s\n' "$port"
    return 0
  fi
  if [[ -n $explicit ]]; then
    die "$what: port $port is already in use by another process; choose another with $var"
  fi
  other="$(free_port "$((port + 1))")" || die "$what: port $port and the 99 after it are in use; set $var"
  log "$what: port $port is in use by another process; using $other instead" >&2
  printf '%s\n' "$other"
}

# ---------------------------------------------------------------------------------------------
# Broker (Tansu)
# ---------------------------------------------------------------------------------------------

TANSU=""

find_tansu() {
  local candidate
  for candidate in "$(command -v tansu 2>/dev/null || true)" "$CARGO_BIN/tansu"; do
    if [[ -n $candidate && -x $candidate ]] && "$candidate" --version >/dev/null 2>&1; then
      TANSU="$candidate"
      return 0
    fi
  done
  return 1
}

ensure_tansu() {
  find_tansu && return 0
  command -v cargo >/dev/null 2>&1 || [[ -x $CARGO_BIN/cargo ]] ||
    die "tansu is missing and cargo is not installed (install Rust from https://rustup.rs)"
  local cargo
  cargo="$(command -v cargo 2>/dev/null || echo "$CARGO_BIN/cargo")"

  # Another install may already be building it (a second one would only compete for CPU).
  if pgrep -f "cargo install tansu" >/dev/null 2>&1; then
    log "broker: a 'cargo install tansu' is already running; waiting for it to finish..."
    local waited=0
    while pgrep -f "cargo install tansu" >/dev/null 2>&1; do
      ((waited < 3600)) || die "broker: the running 'cargo install tansu' has not finished after an hour"
      sleep 15
      waited=$((waited + 15))
    done
    find_tansu && return 0
    log "broker: that install did not produce a working tansu; installing now"
  fi

  log "broker: installing tansu $TANSU_VERSION (cargo install, about 13 minutes on 2 cores)..."
  "$cargo" install tansu --locked --version "$TANSU_VERSION" --features "$TANSU_FEATURES"
  find_tansu || die "tansu was installed but '$CARGO_BIN/tansu --version' does not run"
}

# Pid of the broker this script started, if that process is still a tansu process.
broker_pid() {
  [[ -f $BROKER_PID_FILE ]] || return 1
  local pid
  pid="$(<"$BROKER_PID_FILE")"
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "tansu" || return 1
  printf '%s\n' "$pid"
}

# Port of the running broker (it keeps the one it started with, even if the env changed).
broker_running_port() {
  if [[ -f $BROKER_PORT_FILE ]]; then
    cat "$BROKER_PORT_FILE"
  else
    printf '%s\n' "$BROKER_PORT"
  fi
}

broker_log_tail() {
  if [[ -f $BROKER_LOG ]]; then
    log "---- last lines of $BROKER_LOG ----" >&2
    tail -n 30 "$BROKER_LOG" >&2
    log "----" >&2
  fi
}

broker_start() {
  local pid port
  if pid="$(broker_pid)"; then
    port="$(broker_running_port)"
    if port_open "$port"; then
      log "broker: already running (pid $pid, 127.0.0.1:$port)"
      return 0
    fi
    log "broker: process $pid is up but port $port is not open yet; waiting"
    broker_wait_ready "$pid" "$port"
    return 0
  fi

  BROKER_PORT="$(choose_port broker "$BROKER_PORT" "$BROKER_PORT_EXPLICIT" CONSCOPE_BROKER_PORT)"

  ensure_tansu
  mkdir -p "$BROKER_DIR"
  rm -f "$BROKER_PID_FILE" "$BROKER_PORT_FILE"
  {
    printf '\n==== %s starting %s on 127.0.0.1:%s\n' "$(date -Is)" "$TANSU" "$BROKER_PORT"
  } >>"$BROKER_LOG"

  # The sqlite path is resolved against the working directory, so start inside the data
  # folder with a relative path. setsid + nohup: the broker outlives this shell and its
  # terminal or CI step.
  (
    cd "$BROKER_DIR"
    setsid nohup "$TANSU" broker \
      --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
      --storage-engine "sqlite://tansu.db" \
      </dev/null >>"$BROKER_LOG" 2>&1 &
    printf '%s\n' "$!" >"$BROKER_PID_FILE"
  )
  printf '%s\n' "$BROKER_PORT" >"$BROKER_PORT_FILE"
  pid="$(<"$BROKER_PID_FILE")"
  log "broker: started tansu (pid $pid), waiting for 127.0.0.1:$BROKER_PORT"
  broker_wait_ready "$pid" "$BROKER_PORT"
}

broker_wait_ready() {
  local pid="$1" port="$2" waited=0
  while ! port_open "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      broker_log_tail
      rm -f "$BROKER_PID_FILE"
      die "broker: tansu exited during startup (log: $BROKER_LOG)"
    fi
    if ((waited >= BROKER_START_TIMEOUT * 5)); then
      broker_log_tail
      die "broker: 127.0.0.1:$port not accepting connections after ${BROKER_START_TIMEOUT}s (pid $pid still running; log: $BROKER_LOG)"
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  log "broker: ready on 127.0.0.1:$port"
}

broker_stop() {
  local pid i
  if ! pid="$(broker_pid)"; then
    rm -f "$BROKER_PID_FILE"
    log "broker: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    warn "broker: pid $pid did not exit after SIGTERM within 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$BROKER_PID_FILE"
  log "broker: stopped (pid $pid)"
}

broker_status() {
  local pid port
  if pid="$(broker_pid)"; then
    port="$(broker_running_port)"
    if port_open "$port"; then
      log "broker:   running  127.0.0.1:$port (pid $pid, data $BROKER_DIR)"
      return 0
    fi
    log "broker:   starting (pid $pid, port $port not open yet)"
    return 1
  fi
  if port_open "$BROKER_PORT"; then
    log "broker:   stopped  (but port $BROKER_PORT is in use by a process this script did not start)"
  else
    log "broker:   stopped"
  fi
  return 1
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------

# Run a Postgres server binary as the postgres OS user (initdb and postgres refuse root).
# From /, since the postgres user may not be allowed into the current directory.
as_pg() {
  if [[ $EUID -eq 0 ]]; then
    (cd / && runuser -u "$PG_OS_USER" -- "$@")
  else
    "$@"
  fi
}

psql_bin() {
  if [[ -x $PG_BIN/psql ]]; then
    printf '%s\n' "$PG_BIN/psql"
  else
    command -v psql
  fi
}

ensure_pg_binaries() {
  [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/postgres ]] && return 0
  die "PostgreSQL 15 server binaries not found in $PG_BIN; run 'scripts/local-infra.sh install postgres' (apt-get install postgresql-15) or set DATABASE_URL"
}

install_pg_binaries() {
  if [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/postgres ]]; then
    log "postgres: PostgreSQL 15 binaries present in $PG_BIN"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL 15 is missing and apt-get is not available; install it or set DATABASE_URL"
  log "postgres: installing postgresql-15 with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-15
  ensure_pg_binaries
}

# Choose where the cluster lives. It belongs in .local/pg, but the postgres OS user must be able
# to reach it (a repo under /root usually is not), and the Unix socket path must stay short.
pg_paths() {
  [[ -n $PG_BASE ]] && return 0
  local base="$LOCAL_DIR/pg" reason=""
  if [[ $EUID -eq 0 ]] && ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
    die "postgres: the '$PG_OS_USER' OS user does not exist (install postgresql-15, or set DATABASE_URL)"
  fi
  if [[ $EUID -eq 0 ]] && ! runuser -u "$PG_OS_USER" -- test -x "$ROOT"; then
    reason="user '$PG_OS_USER' cannot traverse the parent folders of $ROOT"
  elif ((${#base} + 25 > 100)); then
    reason="the socket path under $base would be too long"
  fi
  if [[ -n $reason ]]; then
    local hash
    hash="$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
    base="/tmp/conscope-pg-$hash"
    PG_NOTE="postgres: $reason; the cluster lives in $base instead of .local/pg"
  fi
  PG_BASE="$base"
  PG_DATA="$base/data"
  PG_LOG="$base/log"
}

pg_note() {
  if [[ -n $PG_NOTE ]]; then
    log "$PG_NOTE"
  fi
  return 0
}

# Port the running cluster listens on (line 4 of postmaster.pid), else the configured one.
pg_running_port() {
  local port=""
  if [[ -f $PG_DATA/postmaster.pid ]]; then
    port="$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
  fi
  printf '%s\n' "${port:-$PG_PORT}"
}

pg_cluster_running() {
  [[ -f $PG_DATA/PG_VERSION ]] || return 1
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_url() { printf 'postgres://postgres@127.0.0.1:%s/%s\n' "$1" "$2"; }

# The URL of the same server with another database: swap the path, keep user, host and query.
url_with_db() {
  local url="$1" db="$2" prefix rest query=""
  prefix="${url%%://*}://"
  rest="${url#*://}"
  if [[ $rest == *\?* ]]; then
    query="?${rest#*\?}"
    rest="${rest%%\?*}"
  fi
  printf '%s%s/%s%s\n' "$prefix" "${rest%%/*}" "$db" "$query"
}

pg_start() {
  if [[ -n ${DATABASE_URL:-} ]]; then
    log "postgres: DATABASE_URL is set; using it, no local cluster is started"
    pg_check_url "$DATABASE_URL" || die "postgres: cannot connect to DATABASE_URL"
    return 0
  fi
  ensure_pg_binaries
  pg_paths
  pg_note

  if pg_cluster_running; then
    local port
    port="$(pg_running_port)"
    log "postgres: already running (127.0.0.1:$port, data $PG_DATA)"
    if [[ -n $PG_PORT_EXPLICIT && $port != "$PG_PORT" ]]; then
      warn "postgres: the running cluster uses port $port, not $PG_PORT; stop it first to change ports"
    fi
    pg_create_db "$port"
    return 0
  fi

  PG_PORT="$(choose_port postgres "$PG_PORT" "$PG_PORT_EXPLICIT" CONSCOPE_PG_PORT)"

  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    log "postgres: initializing a new cluster in $PG_DATA"
    mkdir -p "$PG_BASE"
    chmod 0755 "$LOCAL_DIR" 2>/dev/null || true
    rm -rf "$PG_DATA"
    if [[ $EUID -eq 0 ]]; then
      chown "$PG_OS_USER:" "$PG_BASE"
    fi
    chmod 0700 "$PG_BASE"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null
  fi

  log "postgres: starting on 127.0.0.1:$PG_PORT"
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$PG_START_TIMEOUT" \
    -o "-p $PG_PORT -k '$PG_DATA' -c listen_addresses=127.0.0.1 -c max_connections=200" \
    start >/dev/null; then
    if [[ -f $PG_LOG ]]; then
      log "---- last lines of $PG_LOG ----" >&2
      tail -n 30 "$PG_LOG" >&2
    fi
    die "postgres: failed to start (log: $PG_LOG)"
  fi
  log "postgres: ready on 127.0.0.1:$PG_PORT"
  pg_create_db "$PG_PORT"
}

pg_create_db() {
  local port="$1" psql exists
  psql="$(psql_bin)"
  exists="$("$psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")"
  if [[ $exists != "1" ]]; then
    "$psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
      -c "CREATE DATABASE $PG_DB" >/dev/null
    log "postgres: created database $PG_DB"
  fi
}

pg_check_url() {
  local psql
  psql="$(psql_bin)" || die "psql not found (install postgresql-client)"
  "$psql" -X -q "$1" -tAc 'SELECT 1' >/dev/null 2>&1
}

pg_stop() {
  if [[ -n ${DATABASE_URL:-} ]]; then
    log "postgres: DATABASE_URL is set; not managed here, nothing to stop"
    return 0
  fi
  [[ -x $PG_BIN/pg_ctl ]] || {
    log "postgres: not running (no PostgreSQL 15 binaries)"
    return 0
  }
  pg_paths
  if ! pg_cluster_running; then
    log "postgres: not running"
    return 0
  fi
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$PG_START_TIMEOUT" stop >/dev/null
  log "postgres: stopped"
}

pg_status() {
  if [[ -n ${DATABASE_URL:-} ]]; then
    local shown
    shown="$(redact_url "$DATABASE_URL")"
    if pg_check_url "$DATABASE_URL"; then
      log "postgres: running  $shown (DATABASE_URL)"
      return 0
    fi
    log "postgres: unreachable $shown (DATABASE_URL)"
    return 1
  fi
  if [[ ! -x $PG_BIN/pg_ctl ]]; then
    log "postgres: stopped  (PostgreSQL 15 binaries not installed)"
    return 1
  fi
  pg_paths
  if pg_cluster_running; then
    local port
    port="$(pg_running_port)"
    log "postgres: running  $(pg_url "$port" "$PG_DB") (data $PG_DATA)"
    return 0
  fi
  log "postgres: stopped"
  return 1
}

redact_url() {
  # postgres://user:secret@host/db -> postgres://user:***@host/db
  printf '%s\n' "$1" | sed -E 's#^([a-z]+://[^:/@]+):[^@]*@#\1:***@#'
}

# ---------------------------------------------------------------------------------------------
# .local/env
# ---------------------------------------------------------------------------------------------

# KEY=VALUE, single-quoted only when the value holds characters a shell would interpret.
env_line() {
  local key="$1" value="$2" q="'"
  if [[ $value =~ ^[A-Za-z0-9_./:@%+,=-]*$ ]]; then
    printf '%s=%s\n' "$key" "$value"
  else
    printf '%s=%s%s%s\n' "$key" "$q" "${value//$q/$q\\$q$q}" "$q"
  fi
}

write_env() {
  local brokers db_url admin_url port tmp
  brokers="127.0.0.1:$(broker_pid >/dev/null && broker_running_port || printf '%s' "$BROKER_PORT")"
  if [[ -n ${DATABASE_URL:-} ]]; then
    db_url="$DATABASE_URL"
    admin_url="${CONSCOPE_TEST_ADMIN_URL:-$(url_with_db "$DATABASE_URL" postgres)}"
  else
    pg_paths
    port="$PG_PORT"
    if pg_cluster_running; then
      port="$(pg_running_port)"
    fi
    db_url="$(pg_url "$port" "$PG_DB")"
    admin_url="$(pg_url "$port" postgres)"
  fi

  mkdir -p "$LOCAL_DIR"
  tmp="$(mktemp "$LOCAL_DIR/env.XXXXXX")"
  {
    env_line CONSCOPE_KAFKA__BROKERS "$brokers"
    env_line CONSCOPE_POSTGRES__URL "$db_url"
    env_line CONSCOPE_TEST_ADMIN_URL "$admin_url"
  } >"$tmp"
  chmod 0600 "$tmp"
  mv -f "$tmp" "$ENV_FILE"

  log ""
  log "Kafka brokers:  $brokers"
  log "Postgres:       $(redact_url "$db_url")"
  log "Postgres admin: $(redact_url "$admin_url")"
  log "Environment:    $ENV_FILE  (set -a; . .local/env; set +a)"
}

# ---------------------------------------------------------------------------------------------

main() {
  local action="${1:-}" target="${2:-all}"
  [[ $# -le 2 ]] || usage
  case "$target" in
  broker | postgres | all) ;;
  *) usage ;;
  esac
  local want_broker=0 want_pg=0
  if [[ $target == broker || $target == all ]]; then want_broker=1; fi
  if [[ $target == postgres || $target == all ]]; then want_pg=1; fi

  case "$action" in
  start)
    if ((want_broker)); then broker_start; fi
    if ((want_pg)); then pg_start; fi
    write_env
    ;;
  stop)
    if ((want_broker)); then broker_stop; fi
    if ((want_pg)); then pg_stop; fi
    ;;
  status)
    local rc=0
    if ((want_broker)); then broker_status || rc=3; fi
    if ((want_pg)); then pg_status || rc=3; fi
    exit "$rc"
    ;;
  install)
    if ((want_broker)); then
      ensure_tansu
      log "broker: $("$TANSU" --version 2>&1 | head -n 1) ($TANSU)"
    fi
    if ((want_pg)); then
      if [[ -n ${DATABASE_URL:-} ]]; then
        log "postgres: DATABASE_URL is set; no local server needed"
      else
        install_pg_binaries
      fi
    fi
    ;;
  *) usage ;;
  esac
}

main "$@"
