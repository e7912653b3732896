# syntax=docker/dockerfile:1
# ConScope container image: a multi-stage build of the `conscope` binary, run on
# debian:bookworm-slim as a non-root user. Used by compose/docker-compose.yml.
#
#   docker build -t conscope .
#   docker run --rm conscope --help
#
# RUST_VERSION picks the builder image; rust-toolchain.toml (copied in) has the final say, and
# rustup installs that toolchain if the image carries another. Cargo.lock needs rustc >= 1.88.
ARG RUST_VERSION=1.95.0

# ---- builder --------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build

# 1. Dependencies only: build the locked dependency graph against empty sources, so this layer
#    is reused until Cargo.toml or Cargo.lock change.
COPY rust-toolchain.toml Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && : > src/lib.rs \
 && echo 'fn main() {}' > benches/detector.rs \
 && cargo build --release --locked --bin conscope \
 && rm -rf src benches \
      target/release/conscope target/release/conscope.d \
      target/release/deps/conscope-* target/release/deps/libconscope-* \
      target/release/.fingerprint/conscope-*

# 2. The real sources. The SQL migrations are embedded at compile time (include_str!), so
#    sql/ must be here; add any other folder the sources include_str!/include_bytes! from.
COPY src ./src
COPY sql ./sql
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin conscope \
 && cp target/release/conscope /usr/local/bin/conscope

# ---- runtime --------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: HTTPS to SeatGeek, Ticketmaster, Discord, Slack; curl: the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 conscope \
 && useradd --system --uid 10001 --gid conscope --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin conscope

COPY --from=builder /usr/local/bin/conscope /usr/local/bin/conscope
COPY config.toml /etc/conscope/config.toml

USER conscope:conscope
# Inside a container the web server must listen beyond loopback to be published at all.
ENV CONSCOPE_WEB__LISTEN=0.0.0.0:8080
EXPOSE 8080

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=5 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/health/live"]

ENTRYPOINT ["conscope"]
CMD ["--config", "/etc/conscope/config.toml", "run"]
