//! ConScope: a real-time ticket price watcher and the stream engine under it.
//!
//! # Layout
//!
//! One line per top-level module, in data-flow order (`docs/architecture.md` draws the whole
//! picture):
//!
//! - [`model`]: the shapes that flow: price events, changes, alerts, money, limits, windows.
//! - [`config`]: `config.toml` and `CONSCOPE_*` overrides, validated with the key named.
//! - [`sources`]: the simulated marketplace and the SeatGeek and Ticketmaster pollers, producing
//!   to Kafka `raw_prices`.
//! - [`kafka`]: rskafka clients with deadlines, producing, topics, the dead-letter queue.
//! - [`store`]: PostgreSQL storage: pool, migrations, offsets, the warm start, read queries.
//! - [`pipeline`]: the engine: ingest → detect → persist → publish, and their wiring.
//! - [`alert`]: user watches over the output topics, and delivery to Discord, Slack, webhooks.
//! - [`web`]: the dashboard, the JSON API, `/metrics` and `/health`.
//! - [`app`]: the application context every task of `conscope run` shares.
//! - [`runtime`]: `conscope run`: starts every part above under one supervisor.
//! - [`replay`]: feeds a file of observations through the engine's detector and writer.
//! - [`metrics`], [`rate`], [`backoff`], [`retry_after`], [`tasks`], [`logging`], [`cli`],
//!   [`alloc`], [`usage`]: counters, events per second, retries and outages, the one
//!   `Retry-After` reader, the one task group (first failure stops the rest), log setup and
//!   error chains, the binaries' exit codes, the allocator, CPU and memory of a process.
//!
//! The end-to-end benchmark is its own workspace member, `tools/bench` (`conscope-bench`),
//! built on this library (`docs/benchmarks.md`).

pub mod alert;
pub mod alloc;
pub mod app;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod rate;
pub mod replay;
pub mod retry_after;
pub mod runtime;
pub mod sources;
pub mod store;
pub mod tasks;
pub mod usage;
pub mod web;
