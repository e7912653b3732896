//! ConScope: a real-time ticket price watcher and the stream engine under it.
//!
//! Sources produce PriceEvents to Kafka `raw_prices`; the engine ([`runtime`]) reads them
//! ([`ingest`]), finds price changes in a sharded cache ([`detect`]), commits rows and offsets
//! to PostgreSQL in one transaction per batch ([`store`]) and publishes `processed_prices` and
//! `price_alerts` ([`publish`]). See `docs/architecture.md` for the whole picture. [`bench`] and [`replay`] measure
//! it and feed it from files (`docs/benchmarks.md`).

pub mod alert;
pub mod alloc;
pub mod backoff;
pub mod bench;
pub mod config;
pub mod detect;
pub mod ingest;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod publish;
pub mod replay;
pub mod runtime;
pub mod sources;
pub mod store;
pub mod web;
