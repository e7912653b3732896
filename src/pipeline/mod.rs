//! The engine's pipeline: the stages a record passes through, the messages between them
//! ([`messages`]) and the wiring that starts them ([`engine`]).
//!
//! ```text
//!  Kafka raw_prices ─► ingest ×N ─► detect ─► persist ─► publish ─► Kafka processed_prices,
//!                      (parse, DLQ)  (cache,   (one tx    (outbox)         price_alerts
//!                                    rules,    per batch)
//!                                    windows)
//! ```
//!
//! Stages depend only downward — on [`messages`], `model`, `store`, `kafka`, `config`,
//! `metrics` — never on [`engine`], which is the one module that knows all of them, nor on a
//! later stage; `tests/layout.rs` keeps it so.

pub mod detect;
pub mod engine;
pub mod ingest;
pub mod messages;
pub mod persist;
pub mod publish;

#[cfg(test)]
mod props;
