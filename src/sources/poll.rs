//! The producing loop every marketplace poller runs in: poll, produce, wait, repeat.
//!
//! ```text
//!  every `interval`:  Poller::poll_once ──► Vec<PriceEvent> ──► TopicProducer ──► raw_prices
//!                          (HTTP, retries)                      key = listing key
//! ```
//!
//! A poller must never stop the pipeline, so the loop absorbs its failures: a failed poll is
//! logged, counted in `source_errors` and tried again at the next interval (its prices are read
//! again then, so nothing is lost for good); a failed produce drops the producer, which is
//! reconnected before the next poll. Failed polls also become the metrics' `last_error`. Only a
//! fatal error (the API refused the credentials) ends the loop, with one ERROR line, and the
//! task returns `Ok` so the supervisor leaves it stopped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::feed::to_wire_json;
use super::http::PollError;
use crate::app::App;
use crate::kafka::produce::TopicProducer;
use crate::model::PriceEvent;

/// The longest wait before trying again to connect the raw_prices producer.
const PRODUCER_RETRY: Duration = Duration::from_secs(30);

/// What one poll cycle found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Poll {
    /// One PriceEvent per (event, price series), stamped with the poll time.
    pub events: Vec<PriceEvent>,
    /// Events (or price ranges) left out because the API gave no usable price.
    pub skipped: u64,
    /// HTTP requests made, retries included.
    pub requests: u32,
}

/// A marketplace API read every `interval`.
pub trait Poller: Send + Sync + 'static {
    /// The `source` of its PriceEvents and the name in its logs (`seatgeek`).
    fn name(&self) -> &'static str;
    /// Time between the starts of two polls.
    fn interval(&self) -> Duration;
    /// One complete poll: every watched event, every page, with retries.
    fn poll_once(&self) -> impl Future<Output = Result<Poll, PollError>> + Send;
}

/// Poll `poller` every interval and produce what it finds to raw_prices, until `cancel` fires
/// or the poller fails fatally.
pub async fn run<P: Poller>(poller: Arc<P>, app: App, cancel: CancellationToken) {
    let App {
        cfg,
        kafka: client,
        metrics,
        ..
    } = app;
    let source = poller.name();
    let interval = poller.interval();
    let topic = &cfg.kafka.topics.raw_prices;
    let counters = &metrics.counters;
    tracing::info!(source, interval = ?interval, "poller started");
    let mut producer: Option<TopicProducer> = None;
    let mut next = Instant::now();
    loop {
        // Cancellation first: a shutdown must not start another poll.
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(next) => {}
        }
        let started = Instant::now();
        next = started + interval;
        let producer_ref = match &producer {
            Some(p) => p,
            None => match TopicProducer::connect(&client, &topic.name, topic.partitions, &cfg.kafka).await {
                Ok(p) => producer.insert(p),
                Err(error) => {
                    let retry_in = interval.min(PRODUCER_RETRY);
                    tracing::warn!(source, error = %crate::logging::chain(&error), retry_in = ?retry_in, "cannot connect to raw_prices; polling later");
                    counters.source_errors.inc();
                    next = started + retry_in;
                    continue;
                }
            },
        };
        let polled = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            polled = poller.poll_once() => polled,
        };
        match polled {
            Ok(poll) => {
                counters.source_skipped.inc_by(poll.skipped);
                let events = poll.events.len();
                if events > 0 {
                    let records = poll
                        .events
                        .iter()
                        .map(|e| (e.listing_key().as_bytes().to_vec(), to_wire_json(e), e.timestamp))
                        .collect();
                    if let Err(error) = producer_ref.send(records).await {
                        tracing::warn!(source, events, error = %crate::logging::chain(&error), "cannot produce polled prices; they are polled again next time");
                        counters.source_errors.inc();
                        producer = None;
                        continue;
                    }
                    counters.source_records.inc_by(events as u64);
                }
                tracing::debug!(
                    source,
                    events,
                    skipped = poll.skipped,
                    requests = poll.requests,
                    took_ms = started.elapsed().as_millis() as u64,
                    "poll done"
                );
            }
            Err(error) if error.is_fatal() => {
                counters.source_errors.inc();
                metrics.set_last_error(format!("source.{source}: {}", crate::logging::chain(&error)));
                tracing::error!(source, error = %crate::logging::chain(&error), "source stopped; the rest of ConScope keeps running");
                return;
            }
            Err(error) => {
                counters.source_errors.inc();
                metrics.set_last_error(format!("source.{source}: {}", crate::logging::chain(&error)));
                tracing::warn!(source, error = %crate::logging::chain(&error), next_poll_in = ?next.saturating_duration_since(Instant::now()), "poll failed");
            }
        }
    }
    tracing::info!(source, "poller stopped");
}
