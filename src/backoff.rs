//! The one retry policy (initial, max, multiplier, jitter, deadline), shared by Kafka, Postgres
//! and webhook retries. A [`Backoff`] is one retry sequence: ask it for the next delay until it
//! says the deadline has passed (Kafka's and Postgres's have none by default: an outage is
//! waited out however long it lasts).
//!
//! A sequence may report to an [`Outage`], the shared view of one dependency (the broker,
//! Postgres). Many callers retry at once during an outage — every partition reader, publish, the
//! DLQ — so the outage, not each caller, says what happened: it begins when the first caller
//! starts failing and ends when the last one succeeds, with one WARN for each, while the retries
//! themselves log at DEBUG. Metrics and `/health/ready` read it.
//!
//! [`Backoff::retry`] and [`Backoff::retry_until_cancelled`] are the one retry loop: every
//! caller that tries again (ingest, the alert consumer, persist, the sender, produce, the HTTP
//! sources, the evaluator, the engine's start-up steps) runs its attempt through them, with a
//! [`Verdict`] saying how each failure is treated. They wait with `tokio::time`, so tests with
//! paused time drive them. A sequence not tracked by an outage says once, at WARN, that it
//! started failing and once, at INFO, that it succeeded again; the retries between are DEBUG.
//!
//! ```text
//!  caller A ─ fail ─► Outage{failing: 1} ── WARN "unavailable" (outages_total += 1)
//!  caller B ─ fail ─► Outage{failing: 2}
//!  caller A ─ ok ───► Outage{failing: 1}
//!  caller B ─ ok ───► Outage{failing: 0} ── WARN "available again after 3m 2s"
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::config::BackoffConfig;
use crate::logging::chain;

/// How a retry loop treats one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The dependency is unavailable: counts towards the sequence's [`Outage`] (when tracked;
    /// otherwise as [`Verdict::Retry`]) and is tried again after the backoff's delay.
    Outage,
    /// This call's own failure: tried again after the backoff's delay.
    Retry,
    /// Tried again after the wait the other side asked for (`Retry-After`), capped by the
    /// caller.
    RetryAfter(Duration),
    /// Retrying cannot help: the error is returned at once.
    Fail,
}

impl Verdict {
    /// Every failure is an outage of the dependency: what most callers want.
    pub fn outage<E>(_: &E) -> Verdict {
        Verdict::Outage
    }
}

/// Why [`Backoff::run`] stopped without a value.
enum Stop<E, C> {
    Failed(E),
    Cancelled(C),
}

#[derive(Debug)]
pub struct Backoff {
    config: BackoffConfig,
    next: Duration,
    started: tokio::time::Instant,
    attempts: u32,
    outage: Option<Caller>,
    /// When the current run of failures began (untracked sequences log its end).
    failing_since: Option<tokio::time::Instant>,
}

impl Backoff {
    pub fn new(config: &BackoffConfig) -> Self {
        Self {
            config: config.clone(),
            next: config.initial,
            started: tokio::time::Instant::now(),
            attempts: 0,
            outage: None,
            failing_since: None,
        }
    }

    /// A sequence whose failures count towards `outage`, as seen by `stage` (named in the log).
    pub fn tracked(config: &BackoffConfig, outage: &Arc<Outage>, stage: &'static str) -> Self {
        Self {
            outage: Some(outage.caller(stage)),
            ..Self::new(config)
        }
    }

    /// The delay before the next attempt, or `None` once the deadline would be passed.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = self.next.mul_f64(self.config.multiplier).min(self.config.max);
        self.attempts += 1;
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * rand::thread_rng().r#gen::<f64>();
        let delay = base.mul_f64(factor);
        match self.config.deadline() {
            Some(deadline) => (self.started.elapsed() + delay <= deadline).then_some(delay),
            None => Some(delay),
        }
    }

    /// The call failed with `error`: report it to the outage (if tracked), log the retry at
    /// DEBUG and return the delay before the next attempt, `None` once the deadline has passed.
    pub fn failed(&mut self, error: &dyn std::fmt::Display) -> Option<Duration> {
        if let Some(outage) = &mut self.outage {
            outage.failed(error);
        }
        let delay = self.next_delay();
        tracing::debug!(error = %error, retry_in = ?delay, attempt = self.attempts, "retrying");
        delay
    }

    /// Whether failures report to an [`Outage`] (which then does the logging).
    pub fn is_tracked(&self) -> bool {
        self.outage.is_some()
    }

    /// Attempts made so far (delays handed out).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Start a new sequence after a success (which ends this caller's part in an outage).
    pub fn reset(&mut self) {
        if let Some(outage) = &mut self.outage {
            outage.succeeded();
        }
        self.next = self.config.initial;
        self.started = tokio::time::Instant::now();
        self.attempts = 0;
        self.failing_since = None;
    }

    /// Run `attempt` until it succeeds, a failure's [`Verdict`] is [`Verdict::Fail`], or the
    /// deadline passes (then the last error is returned). A success resets the sequence.
    pub async fn retry<T, E, Fut>(
        &mut self,
        what: &'static str,
        verdict: impl FnMut(&E) -> Verdict,
        attempt: impl FnMut() -> Fut,
    ) -> Result<T, E>
    where
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let never = std::future::pending::<std::convert::Infallible>();
        match self.run(what, never, verdict, attempt).await {
            Ok(v) => Ok(v),
            Err(Stop::Failed(e)) => Err(e),
            Err(Stop::Cancelled(never)) => match never {},
        }
    }

    /// As [`Backoff::retry`], but `cancel` stops an attempt or a wait at once: `Ok(None)`.
    pub async fn retry_until_cancelled<T, E, Fut>(
        &mut self,
        cancel: &CancellationToken,
        what: &'static str,
        verdict: impl FnMut(&E) -> Verdict,
        attempt: impl FnMut() -> Fut,
    ) -> Result<Option<T>, E>
    where
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        match self.run(what, cancel.cancelled(), verdict, attempt).await {
            Ok(v) => Ok(Some(v)),
            Err(Stop::Failed(e)) => Err(e),
            Err(Stop::Cancelled(())) => Ok(None),
        }
    }

    async fn run<T, E, C, Fut>(
        &mut self,
        what: &'static str,
        cancelled: impl Future<Output = C>,
        mut verdict: impl FnMut(&E) -> Verdict,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, Stop<E, C>>
    where
        Fut: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let mut cancelled = std::pin::pin!(cancelled);
        loop {
            let result = tokio::select! {
                biased;
                c = &mut cancelled => return Err(Stop::Cancelled(c)),
                r = attempt() => r,
            };
            let error = match result {
                Ok(v) => {
                    self.succeeded(what);
                    return Ok(v);
                }
                Err(e) => e,
            };
            let again = tokio::select! {
                biased;
                c = &mut cancelled => return Err(Stop::Cancelled(c)),
                again = self.wait_after(what, verdict(&error), &error) => again,
            };
            if !again {
                return Err(Stop::Failed(error));
            }
        }
    }

    /// The step of a retry loop that cannot be a closure (its attempt borrows state mutably):
    /// report and log the failed attempt, then wait; `false` to give up (a [`Verdict::Fail`], or
    /// the deadline). [`Backoff::retry`] is built on it.
    pub fn wait_after(
        &mut self,
        what: &'static str,
        verdict: Verdict,
        error: &(dyn std::error::Error + 'static),
    ) -> impl Future<Output = bool> + Send + use<> {
        // Decided now, so the wait holds neither `self` nor the error.
        let delay = self.after_failure(what, verdict, error);
        async move {
            match delay {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    true
                }
                None => false,
            }
        }
    }

    /// Report and log one failure; the wait before the next attempt, `None` to give up.
    fn after_failure(
        &mut self,
        what: &'static str,
        verdict: Verdict,
        error: &(dyn std::error::Error + 'static),
    ) -> Option<Duration> {
        let delay = match verdict {
            Verdict::Fail => return None,
            Verdict::Outage | Verdict::Retry => self.next_delay()?,
            Verdict::RetryAfter(wait) => {
                self.next_delay()?;
                wait
            }
        };
        let error = chain(error);
        let by_outage = verdict == Verdict::Outage && self.outage.is_some();
        if let (true, Some(outage)) = (by_outage, &mut self.outage) {
            outage.failed(&error);
        }
        if self.failing_since.is_none() && !by_outage {
            tracing::warn!(error = %error, retry_in = ?delay, "{what} failed; retrying (retries are logged at DEBUG)");
        } else {
            tracing::debug!(error = %error, retry_in = ?delay, attempt = self.attempts, "{what} failed again; retrying");
        }
        self.failing_since.get_or_insert_with(tokio::time::Instant::now);
        Some(delay)
    }

    /// The attempt succeeded: say so if it had been failing, and start a new sequence.
    pub fn succeeded(&mut self, what: &'static str) {
        if let Some(since) = self.failing_since
            && self.outage.as_ref().is_none_or(|o| !o.failing)
        {
            tracing::info!(attempts = self.attempts, failing_for = ?since.elapsed(), "{what} succeeded again");
        }
        self.reset();
    }

    /// The delay before retry number `attempt` (1 for the first retry) of work whose attempts
    /// are counted elsewhere (webhook deliveries keep theirs in Postgres): `initial ×
    /// multiplier^(attempt−1)`, capped at `max`, less the jitter. The deadline is the caller's.
    pub fn delay_for_attempt(config: &BackoffConfig, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let base = config.initial.as_secs_f64() * config.multiplier.max(1.0).powi(exp);
        let base = Duration::from_secs_f64(base.min(config.max.as_secs_f64()));
        let jitter = config.jitter.clamp(0.0, 1.0);
        base.mul_f64(1.0 - jitter * rand::thread_rng().r#gen::<f64>())
    }

    /// rskafka's own retry settings from the same policy.
    pub fn rskafka(config: &BackoffConfig) -> rskafka::BackoffConfig {
        rskafka::BackoffConfig {
            init_backoff: config.initial,
            max_backoff: config.max,
            base: config.multiplier,
            deadline: config.deadline(),
        }
    }
}

/// One dependency's outage as ConScope's callers see it: shared by every caller of that
/// dependency (`Metrics::kafka_outage`, `Metrics::postgres_outage`). The lock is taken only when
/// a caller starts or stops failing, never across an `.await`.
#[derive(Debug)]
pub struct Outage {
    /// "the Kafka broker", "PostgreSQL": how the log and `/health/ready` name it.
    pub dependency: &'static str,
    state: Mutex<OutageState>,
}

#[derive(Debug, Default)]
struct OutageState {
    /// Callers currently retrying.
    failing: usize,
    /// Since when, which stage saw it first and with what error.
    current: Option<(Instant, &'static str, String)>,
    outages: u64,
    /// Length of the outages that ended.
    ended: Duration,
}

/// An outage in progress, for `/health/ready` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutageNow {
    pub since: Duration,
    pub stage: &'static str,
    pub error: String,
}

impl Outage {
    pub fn new(dependency: &'static str) -> Self {
        Self {
            dependency,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutageState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle for one caller (one retry loop) of this dependency.
    pub fn caller(self: &Arc<Self>, stage: &'static str) -> Caller {
        Caller {
            outage: self.clone(),
            stage,
            failing: false,
        }
    }

    /// The outage in progress, if any.
    pub fn now(&self) -> Option<OutageNow> {
        let s = self.lock();
        s.current.as_ref().map(|(at, stage, error)| OutageNow {
            since: at.elapsed(),
            stage,
            error: error.clone(),
        })
    }

    /// Outages begun so far.
    pub fn count(&self) -> u64 {
        self.lock().outages
    }

    /// Total length of every outage, the one in progress included.
    pub fn total(&self) -> Duration {
        let s = self.lock();
        s.ended + s.current.as_ref().map_or(Duration::ZERO, |(at, ..)| at.elapsed())
    }

    fn begin(&self, stage: &'static str, error: &dyn std::fmt::Display) {
        let mut s = self.lock();
        s.failing += 1;
        if s.failing == 1 {
            s.outages += 1;
            s.current = Some((Instant::now(), stage, error.to_string()));
            tracing::warn!(
                stage,
                error = %error,
                "{} is unavailable; waiting for it (retries are logged at DEBUG)",
                self.dependency
            );
        }
    }

    fn end(&self, recovered: bool) {
        let mut s = self.lock();
        s.failing = s.failing.saturating_sub(1);
        if s.failing > 0 {
            return;
        }
        if let Some((at, stage, _)) = s.current.take() {
            let lasted = at.elapsed();
            s.ended += lasted;
            let lasted = humantime::format_duration(Duration::from_secs(lasted.as_secs()));
            if recovered {
                tracing::warn!(stage, %lasted, "{} is available again", self.dependency);
            } else {
                tracing::info!(stage, %lasted, "no task is waiting for {} any more", self.dependency);
            }
        }
    }
}

/// One caller's part in an [`Outage`]: failing or not. Dropped while failing (its task ended or
/// gave up), it stops counting towards the outage.
#[derive(Debug)]
pub struct Caller {
    outage: Arc<Outage>,
    stage: &'static str,
    failing: bool,
}

impl Caller {
    pub fn failed(&mut self, error: &dyn std::fmt::Display) {
        if !self.failing {
            self.failing = true;
            self.outage.begin(self.stage, error);
        }
    }

    pub fn succeeded(&mut self) {
        if self.failing {
            self.failing = false;
            self.outage.end(true);
        }
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        if self.failing {
            self.outage.end(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stop_at_the_deadline() {
        let config = BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            multiplier: 2.0,
            jitter: 0.0,
            deadline: Duration::from_millis(100),
        };
        let mut b = Backoff::new(&config);
        let delays: Vec<_> = std::iter::from_fn(|| b.next_delay()).take(3).collect();
        assert_eq!(delays, [10, 20, 40].map(Duration::from_millis));
        assert_eq!(b.next_delay(), Some(Duration::from_millis(40)));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(b.next_delay(), None);
    }

    #[test]
    fn without_a_deadline_retries_never_stop() {
        let config = BackoffConfig {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
            deadline: BackoffConfig::NO_DEADLINE,
            ..BackoffConfig::default()
        };
        let mut b = Backoff::new(&config);
        assert!((0..10_000).all(|_| b.next_delay().is_some()));
        assert_eq!(Backoff::rskafka(&config).deadline, None);
    }

    #[test]
    fn an_outage_spans_from_the_first_failing_caller_to_the_last_recovered_one() {
        let outage = Arc::new(Outage::new("the broker"));
        let config = BackoffConfig::default();
        let mut a = Backoff::tracked(&config, &outage, "ingest");
        let mut b = Backoff::tracked(&config, &outage, "publish");
        a.reset();
        assert_eq!(outage.now(), None, "a success outside an outage changes nothing");
        assert!(a.failed(&"connection refused").is_some());
        assert!(a.failed(&"connection refused again").is_some());
        assert!(b.failed(&"timeout").is_some());
        assert_eq!(outage.count(), 1);
        let now = outage.now().expect("in progress");
        assert_eq!((now.stage, now.error.as_str()), ("ingest", "connection refused"));
        a.reset();
        assert!(outage.now().is_some(), "publish still waits");
        drop(b);
        assert_eq!(outage.now(), None, "a caller that stopped waiting ends its part");
        assert!(a.failed(&"down again").is_some());
        assert_eq!(outage.count(), 2);
        a.reset();
        assert_eq!(outage.now(), None);
    }

    #[test]
    fn delays_for_counted_attempts_grow_to_the_cap() {
        let config = BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.0,
            deadline: Duration::from_secs(100),
        };
        let delays: Vec<_> = (1..=6).map(|a| Backoff::delay_for_attempt(&config, a)).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10].map(Duration::from_secs));
    }

    fn fixed(initial_ms: u64, deadline: Duration) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.0,
            deadline,
        }
    }

    fn refused() -> std::io::Error {
        std::io::Error::other("connection refused")
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_the_backoff_between_attempts_and_returns_the_success() {
        let mut b = Backoff::new(&fixed(100, BackoffConfig::NO_DEADLINE));
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        let v = b
            .retry("test call", Verdict::outage, || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err(refused()) } else { Ok(n) } }
            })
            .await
            .expect("third attempt succeeds");
        assert_eq!(v, 3);
        // 100 ms, then 200 ms (no jitter): paused time advanced exactly by the waits.
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        assert_eq!(b.attempts(), 0, "a success starts a new sequence");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fail_verdict_returns_at_once_and_a_deadline_gives_up_with_the_last_error() {
        let mut b = Backoff::new(&fixed(100, BackoffConfig::NO_DEADLINE));
        let mut calls = 0;
        let r: Result<(), _> = b
            .retry(
                "test call",
                |_| Verdict::Fail,
                || {
                    calls += 1;
                    async { Err(refused()) }
                },
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);

        let mut b = Backoff::new(&fixed(100, Duration::from_millis(250)));
        let mut calls = 0;
        let r: Result<(), _> = b
            .retry("test call", Verdict::outage, || {
                calls += 1;
                let e = std::io::Error::other(format!("refused #{calls}"));
                async { Err(e) }
            })
            .await;
        // Waits 100 ms, then 200 ms would pass the 250 ms deadline: two attempts.
        assert_eq!(r.expect_err("gave up").to_string(), "refused #2");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_replaces_the_backoffs_delay() {
        let mut b = Backoff::new(&fixed(100, BackoffConfig::NO_DEADLINE));
        let start = tokio::time::Instant::now();
        let mut calls = 0;
        b.retry(
            "test call",
            |_| Verdict::RetryAfter(Duration::from_secs(7)),
            || {
                calls += 1;
                let n = calls;
                async move { if n < 2 { Err(refused()) } else { Ok(()) } }
            },
        )
        .await
        .expect("second attempt succeeds");
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_stops_a_wait_at_once() {
        let mut b = Backoff::new(&fixed(10_000, BackoffConfig::NO_DEADLINE));
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let start = tokio::time::Instant::now();
        let r: Result<Option<()>, _> = b
            .retry_until_cancelled(&cancel, "test call", Verdict::outage, || async { Err(refused()) })
            .await;
        assert!(matches!(r, Ok(None)), "cancelled, not failed");
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "the 10 s wait was cut short"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_of_a_tracked_sequence_count_towards_its_outage_until_it_succeeds() {
        let outage = Arc::new(Outage::new("the broker"));
        let mut b = Backoff::tracked(&fixed(100, BackoffConfig::NO_DEADLINE), &outage, "ingest");
        let seen = Arc::clone(&outage);
        let mut calls = 0;
        b.retry("fetch", Verdict::outage, || {
            calls += 1;
            let (n, seen) = (calls, seen.clone());
            async move {
                if n == 1 {
                    return Err(refused());
                }
                // The second attempt runs while the first failure's outage is in progress.
                assert_eq!(seen.now().map(|n| n.error), Some("connection refused".into()));
                Ok(())
            }
        })
        .await
        .expect("succeeds");
        assert_eq!(outage.now(), None, "the success ended the outage");
        assert_eq!(outage.count(), 1);
    }
}
