//! The Ticketmaster call budget: at most `daily` calls per UTC day and `per_second` calls a
//! second, corrected by what the API says about itself (`Rate-Limit-Available`,
//! `Rate-Limit-Reset` in epoch milliseconds, a 429 quota violation).
//!
//! Every request first takes a slot with [`Quota::acquire`], which waits while the budget is
//! spent. The quota outlives one run of the poller task (the supervisor may restart it), so a
//! restart does not forget the calls already made today. Its state is behind a std `Mutex`
//! (shared by the poller's restarts; only ever locked for a few arithmetic steps and never held
//! across an `.await`). Waits are computed on tokio's clock, so tests can pause time.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use tokio::time::Instant;

/// The longest wait a reset header may ask for (a quota resets at least daily).
const MAX_RESET_WAIT: Duration = Duration::from_secs(25 * 3_600);

#[derive(Debug)]
pub struct Quota {
    daily: u32,
    spacing: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The UTC day `used` counts calls of.
    day: NaiveDate,
    used: u32,
    /// Earliest time of the next call (per-second spacing).
    next_slot: Instant,
    /// No call before this: the budget is spent until the quota resets.
    blocked_until: Option<Instant>,
}

/// What `acquire` found under the lock.
enum Slot {
    At(Instant),
    Blocked(Instant),
}

impl Quota {
    pub fn new(daily: u32, per_second: f64) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            1.0
        };
        Self {
            daily: daily.max(1),
            spacing: Duration::from_secs_f64(1.0 / per_second),
            state: Mutex::new(State {
                day: Utc::now().date_naive(),
                used: 0,
                next_slot: Instant::now(),
                blocked_until: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few counters: a panic elsewhere cannot leave it unusable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wait until one more call is within the budget, and count it.
    pub async fn acquire(&self) {
        loop {
            let slot = {
                let mut s = self.lock();
                let now = Instant::now();
                let wall = Utc::now();
                if wall.date_naive() != s.day {
                    s.day = wall.date_naive();
                    s.used = 0;
                }
                match s.blocked_until {
                    Some(until) if until > now => Slot::Blocked(until),
                    _ if s.used >= self.daily => {
                        // Spent for today: wait for the next UTC midnight, then count afresh.
                        let until = now + until_next_midnight(wall);
                        s.blocked_until = Some(until);
                        s.used = 0;
                        s.day = s.day.succ_opt().unwrap_or(s.day);
                        Slot::Blocked(until)
                    }
                    _ => {
                        s.blocked_until = None;
                        let at = s.next_slot.max(now);
                        s.next_slot = at + self.spacing;
                        s.used += 1;
                        Slot::At(at)
                    }
                }
            };
            match slot {
                Slot::At(at) => {
                    tokio::time::sleep_until(at).await;
                    return;
                }
                Slot::Blocked(until) => {
                    tracing::info!(
                        source = "ticketmaster",
                        wait = ?until.saturating_duration_since(Instant::now()),
                        "call budget spent; waiting for the quota to reset"
                    );
                    tokio::time::sleep_until(until).await;
                }
            }
        }
    }

    /// Take in the `Rate-Limit-Available` / `Rate-Limit-Reset` headers of an answer: with no
    /// calls left, nothing is sent before the reset.
    pub fn observe(&self, available: Option<u64>, reset_epoch_ms: Option<i64>) {
        if available == Some(0) {
            self.block_until_reset(reset_epoch_ms, None);
        }
    }

    /// The API said the quota is violated: wait until `reset_epoch_ms`, else `retry_after`,
    /// else the next UTC midnight. Returns the wait.
    pub fn block_until_reset(&self, reset_epoch_ms: Option<i64>, retry_after: Option<Duration>) -> Duration {
        let wall = Utc::now();
        let wait = reset_epoch_ms
            .and_then(DateTime::from_timestamp_millis)
            .map(|reset| (reset - wall).to_std().unwrap_or(Duration::ZERO))
            .or(retry_after)
            .unwrap_or_else(|| until_next_midnight(wall))
            .min(MAX_RESET_WAIT);
        let until = Instant::now() + wait;
        let mut s = self.lock();
        s.blocked_until = Some(s.blocked_until.map_or(until, |b| b.max(until)));
        wait
    }

    /// Calls counted today (for tests and logs).
    pub fn used_today(&self) -> u32 {
        self.lock().used
    }
}

fn until_next_midnight(now: DateTime<Utc>) -> Duration {
    now.date_naive()
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|midnight| (midnight.and_utc() - now).to_std().unwrap_or(Duration::ZERO))
        .unwrap_or(Duration::from_secs(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_by_the_per_second_budget() {
        let quota = Quota::new(100, 5.0);
        let started = Instant::now();
        for _ in 0..6 {
            quota.acquire().await;
        }
        // The first call goes at once, the next five 200 ms apart.
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert_eq!(quota.used_today(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_daily_budget_waits_for_the_next_day() {
        let quota = Quota::new(2, 1_000.0);
        quota.acquire().await;
        quota.acquire().await;
        let started = Instant::now();
        let wall = Utc::now();
        quota.acquire().await;
        let waited = started.elapsed();
        let expected = until_next_midnight(wall);
        assert!(
            waited + Duration::from_secs(1) >= expected && waited <= expected + Duration::from_millis(5),
            "waited {waited:?}, midnight in {expected:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_calls_available_blocks_until_the_reset_header() {
        let quota = Quota::new(5_000, 1_000.0);
        let reset = Utc::now().timestamp_millis() + 3_000;
        quota.observe(Some(10), Some(reset));
        let started = Instant::now();
        quota.acquire().await;
        assert!(started.elapsed() < Duration::from_millis(10));
        quota.observe(Some(0), Some(reset));
        quota.acquire().await;
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(2_900) && waited <= Duration::from_millis(3_100),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_violation_without_reset_header_uses_retry_after() {
        let quota = Quota::new(5_000, 1_000.0);
        let wait = quota.block_until_reset(None, Some(Duration::from_secs(2)));
        assert_eq!(wait, Duration::from_secs(2));
        let started = Instant::now();
        quota.acquire().await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
