//! The per-webhook rate limiter: configured limits ("5 per 2 s and 30 per minute") plus what the
//! server says (`X-RateLimit-Remaining: 0` with `X-RateLimit-Reset-After`, or a 429's
//! `retry_after`).
//!
//! Each limit is a token bucket whose tokens come back one window after they were spent (a
//! sliding-window log). A classic refilling bucket would let `2 × count` requests through in one
//! window (a full bucket plus a window's refill); Discord counts any window, so here no window
//! of length `per` ever holds more than `count` requests. A small margin (1/40 of the window)
//! absorbs the jitter between our send time and the server's arrival time.
//!
//! Owned by one channel's sender task: no lock. Uses tokio's clock, so tests run it under
//! `tokio::time::pause()`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// The longest any wait is taken to be (a configured window or a pause of years means "stop
/// for a long time", not an overflow).
const MAX_WAIT: Duration = Duration::from_secs(366 * 86_400);

/// `t + d`, checked: `d` is capped at [`MAX_WAIT`], and a sum past the clock's range is `t`
/// plus about a day, never a panic.
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d.min(MAX_WAIT))
        .or_else(|| t.checked_add(MAX_WAIT / 400))
        .unwrap_or(t)
}

#[derive(Debug)]
struct Window {
    limit: RateLimit,
    sent: VecDeque<Instant>,
}

impl Window {
    fn span(&self) -> Duration {
        self.limit.per.saturating_add(self.limit.per / 40).min(MAX_WAIT)
    }

    /// How long until one more request fits in this window.
    fn wait(&mut self, now: Instant) -> Duration {
        let span = self.span();
        while self.sent.front().is_some_and(|t| now.duration_since(*t) >= span) {
            self.sent.pop_front();
        }
        if self.sent.len() < self.limit.count as usize {
            return Duration::ZERO;
        }
        // The oldest of the last `count` requests leaves the window first.
        let oldest = self.sent[self.sent.len() - self.limit.count as usize];
        later(oldest, span).saturating_duration_since(now)
    }
}

#[derive(Debug)]
pub struct RateLimiter {
    windows: Vec<Window>,
    blocked_until: Option<Instant>,
}

impl RateLimiter {
    pub fn new(limits: &[RateLimit]) -> Self {
        Self {
            windows: limits
                .iter()
                .filter(|l| l.count > 0)
                .map(|l| Window {
                    limit: *l,
                    sent: VecDeque::with_capacity(l.count as usize + 1),
                })
                .collect(),
            blocked_until: None,
        }
    }

    /// How long until the next request may go (zero: now).
    pub fn delay(&mut self, now: Instant) -> Duration {
        let server = self
            .blocked_until
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        self.windows
            .iter_mut()
            .map(|w| w.wait(now))
            .fold(server, Duration::max)
    }

    /// Wait until a request may go, then count it as sent.
    pub async fn acquire(&mut self) {
        loop {
            let now = Instant::now();
            let wait = self.delay(now);
            if wait.is_zero() {
                for w in &mut self.windows {
                    w.sent.push_back(now);
                }
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The server asked for a pause (429 `retry_after`, or no requests remaining until reset).
    pub fn block_for(&mut self, pause: Duration) {
        let until = later(Instant::now(), pause);
        self.blocked_until = Some(self.blocked_until.map_or(until, |t| t.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Vec<RateLimit> {
        vec![
            RateLimit {
                count: 5,
                per: Duration::from_secs(2),
            },
            RateLimit {
                count: 30,
                per: Duration::from_secs(60),
            },
        ]
    }

    /// Send `n` requests as fast as the limiter allows; their times since the start.
    async fn send(limiter: &mut RateLimiter, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            limiter.acquire().await;
            times.push(start.elapsed());
        }
        times
    }

    fn max_in_window(times: &[Duration], window: Duration) -> usize {
        times
            .iter()
            .map(|t| times.iter().filter(|u| **u >= *t && **u < *t + window).count())
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn no_two_second_window_holds_more_than_five_requests() {
        let mut limiter = RateLimiter::new(&limits());
        let times = send(&mut limiter, 12).await;
        assert_eq!(times[4], Duration::ZERO, "a burst of five goes at once");
        assert!(times[5] >= Duration::from_secs(2), "{times:?}");
        assert!(max_in_window(&times, Duration::from_secs(2)) <= 5, "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn thirty_a_minute_holds_over_a_long_run() {
        let mut limiter = RateLimiter::new(&limits());
        let times = send(&mut limiter, 45).await;
        assert!(max_in_window(&times, Duration::from_secs(60)) <= 30, "{times:?}");
        assert!(times[30] >= Duration::from_secs(60), "{:?}", times[30]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_pause_holds_every_request_back() {
        let mut limiter = RateLimiter::new(&limits());
        limiter.block_for(Duration::from_millis(1500));
        let times = send(&mut limiter, 1).await;
        assert_eq!(times[0], Duration::from_millis(1500));
        // A shorter pause never shortens a longer one.
        limiter.block_for(Duration::from_secs(3));
        limiter.block_for(Duration::from_secs(1));
        let times = send(&mut limiter, 1).await;
        assert_eq!(times[0], Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn extreme_windows_and_pauses_never_panic() {
        let mut limiter = RateLimiter::new(&[RateLimit {
            count: 1,
            per: Duration::MAX,
        }]);
        limiter.acquire().await;
        assert!(limiter.delay(Instant::now()) <= MAX_WAIT);
        limiter.block_for(Duration::MAX);
        let wait = limiter.delay(Instant::now());
        assert!(wait > Duration::from_secs(86_400) && wait <= MAX_WAIT, "{wait:?}");
    }
}
