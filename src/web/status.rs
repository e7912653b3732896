//! The engine's live status for the dashboard (`/api/engine`): lag per partition, events per
//! second, produce → commit latency, channel fill, last error.
//!
//! Events per second come from a [`RateMeter`] that samples the committed-records counter once a
//! second (a loop the server runs beside itself) and reports the rate over the last ten seconds.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::WebState;
use crate::metrics::{ChannelFill, Metrics};
use crate::rate::Rate;

/// How far back the events-per-second rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(10);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Recent samples of a monotonic counter. Shared between the sampling loop and request
/// handlers; the std `Mutex` is held for a push or a read, never across an `.await`.
#[derive(Debug, Default)]
pub struct RateMeter {
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

impl RateMeter {
    pub fn record(&self, at: Instant, value: u64) {
        let mut s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        s.push_back((at, value));
        while s
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW)
        {
            s.pop_front();
        }
    }

    /// Per-second rate between the oldest and newest sample; 0 until there are two.
    pub fn rate(&self) -> f64 {
        let s = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        match (s.front(), s.back()) {
            (Some((t0, v0)), Some((t1, v1))) if t1 > t0 => {
                Rate::new(v1.saturating_sub(*v0), t1.duration_since(*t0).as_secs_f64()).per_second()
            }
            _ => 0.0,
        }
    }

    /// Sample `metrics`' committed records every second until `cancel` fires.
    pub async fn run(&self, metrics: &Metrics, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let committed = metrics.counters.persist_records.get();
            self.record(Instant::now(), committed);
        }
    }
}

#[derive(Debug, Serialize)]
pub struct EngineStatus {
    pub uptime_seconds: f64,
    /// Records committed to Postgres per second, over the last ten seconds.
    pub events_per_second: f64,
    pub ingested: u64,
    pub committed: u64,
    pub dlq: u64,
    pub alerts_raised: u64,
    pub task_restarts: u64,
    /// Consumer lag per raw_prices partition (high watermark − committed next offset).
    pub lag: BTreeMap<i32, i64>,
    pub lag_total: i64,
    pub latency_p50_seconds: f64,
    pub latency_p99_seconds: f64,
    pub channels: BTreeMap<String, ChannelFill>,
    pub last_error: Option<String>,
    /// Listings in this instance's price cache.
    pub cached_listings: usize,
}

pub async fn engine(State(s): State<WebState>) -> Json<EngineStatus> {
    let snap = s.metrics.snapshot();
    Json(EngineStatus {
        uptime_seconds: s.started.elapsed().as_secs_f64(),
        events_per_second: s.rate.rate(),
        ingested: snap.counters.ingest_records,
        committed: snap.counters.persist_records,
        dlq: snap.counters.dlq_records,
        alerts_raised: snap.counters.alerts_raised,
        task_restarts: snap.counters.task_restarts,
        lag_total: snap.lag.values().sum(),
        lag: snap.lag,
        latency_p50_seconds: snap.latency_p50_s,
        latency_p99_seconds: snap.latency_p99_s,
        channels: snap.channels,
        last_error: snap.last_error,
        cached_listings: s.cache.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_measured_over_the_recent_window_only() {
        let m = RateMeter::default();
        let t0 = Instant::now();
        assert_eq!(m.rate(), 0.0);
        m.record(t0, 0);
        m.record(t0 + Duration::from_secs(5), 1_000);
        assert!((m.rate() - 200.0).abs() < 1e-9);
        // 20 s later the first samples have left the window.
        m.record(t0 + Duration::from_secs(25), 1_000);
        m.record(t0 + Duration::from_secs(26), 1_500);
        assert!((m.rate() - 500.0).abs() < 1e-9);
    }
}
