//! Alerting: the `alert` task of `conscope run`. It turns the engine's output into messages on
//! Discord, Slack and generic webhooks, once each, within their rate limits.
//!
//! ```text
//!  Kafka price_alerts ───────┐  consumer ×N (one per owned partition, own offsets: consumer `alert`)
//!  Kafka processed_prices ───┤
//!                            ▼  mpsc<Fetched>   cap alert.channel_capacity
//!  evaluate: ONE transaction per fetched batch:
//!     price_alerts     → default rule: one alert_deliveries row per default channel
//!     processed_prices → watches (watch.rs, rules.rs, rearm.rs): price_alerts row `watch:<id>`,
//!                        watch_state, one alert_deliveries row for the watch's channel
//!     kafka_offsets (consumer `alert`, GREATEST)
//!                            │ after commit: wake the channels that got rows (Notify)
//!                            ▼
//!  sender ×channel (independent; instance 0 only): due pending rows → coalesce (discord: ≤ 10
//!     embeds, ≤ 6000 chars) → rate limiter → POST → 2xx sent · 429 wait retry_after ·
//!     5xx/network retry with backoff until alert.backoff.deadline (attempts, next_attempt_at,
//!     last_error in the row) · 404/410 retried, the channel disabled once they persist
//!     (gone.rs; its rows wait) · other 4xx failed
//! ```
//!
//! Guarantees: a delivery row exists before anything is sent; a row is marked sent only after a
//! 2xx and a sent row is never picked again; retries live in Postgres and survive restarts, and
//! end only at the deadline. A message is sent again only after a request that may have been
//! taken: a 5xx, no answer after it went out, or a stop between the answer and its record
//! (counted in `alert_possible_repeats`). Only instance 0 sends, so each webhook has exactly one
//! rate limiter. `admin.rs` is `conscope alerts list|redeliver`.

pub mod admin;
pub mod cli;
pub mod consumer;
pub mod evaluate;
pub mod format;
pub mod gone;
pub mod notifiers;
pub mod queue;
pub mod ratelimit;
pub mod rearm;
pub mod rules;
pub mod sender;
pub mod task;
pub mod watch;

use serde::{Deserialize, Serialize};

use crate::kafka::reader::ReadError;
use crate::model::Alert;
use crate::store::StoreError;

pub use task::run;

/// Name under which the alert task's offsets are stored in `kafka_offsets`.
pub const ALERT_CONSUMER: &str = "alert";

/// Prefix of the `rule` of every alert a watch raised (`watch:<id>`).
pub const WATCH_RULE_PREFIX: &str = "watch:";

/// Why the alert task stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertError {
    #[error("alert consumer of {topic}/{partition}")]
    Consume {
        topic: String,
        partition: i32,
        source: Box<ReadError>,
    },
    #[error("alert evaluation of {topic}/{partition} up to offset {next_offset}")]
    Evaluate {
        topic: String,
        partition: i32,
        next_offset: i64,
        source: StoreError,
    },
    #[error("alert sender of channel `{channel}`")]
    Send { channel: String, source: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    #[error("notifier: {0}")]
    Notifier(String),
    #[error("alert task part `{0}` panicked")]
    Panicked(String),
}

/// An alert as delivered: the `price_alerts` value plus a sentence saying which rule fired.
///
/// Watch alerts store this as their `price_alerts.payload`; the default rule's alerts get the
/// description from `[detect]` when they are sent. Generic webhooks receive exactly this JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    #[serde(flatten)]
    pub alert: Alert,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_description: Option<String>,
}
