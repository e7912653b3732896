//! When a channel's 404/410 answers mean its webhook is really gone.
//!
//! A 404 can be passing (a receiver redeployed, a proxy in between restarting), so one is not
//! enough: the channel is disabled only after `alert.gone_to_disable` 404/410 answers with no
//! 2xx between them, the first at least `alert.gone_to_disable_over` before the last. Until then
//! the rows are retried with the backoff like a 5xx. The streak lives in the sender (a restart
//! starts it again); a disabled channel is remembered in `notifier_state`.
//!
//! Uses tokio's clock, so tests run it under `tokio::time::pause()`.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct GoneStreak {
    needed: u32,
    over: Duration,
    first: Option<Instant>,
    count: u32,
}

impl GoneStreak {
    pub fn new(needed: u32, over: Duration) -> Self {
        Self {
            needed: needed.max(1),
            over,
            first: None,
            count: 0,
        }
    }

    /// One more 404/410 answer; true when it makes the channel gone for good.
    pub fn gone(&mut self) -> bool {
        let now = Instant::now();
        let first = *self.first.get_or_insert(now);
        self.count = self.count.saturating_add(1);
        self.count >= self.needed && now.saturating_duration_since(first) >= self.over
    }

    /// 404/410 answers in the current streak.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// A 2xx (or the channel enabled again): the webhook exists.
    pub fn reset(&mut self) {
        self.first = None;
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn three_404s_within_a_minute_do_not_disable_the_channel() {
        let mut s = GoneStreak::new(3, Duration::from_secs(60));
        for _ in 0..5 {
            assert!(!s.gone());
            tokio::time::advance(Duration::from_secs(10)).await;
        }
        // The sixth, 50 s after the first: still under a minute.
        assert!(!s.gone());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(s.gone(), "seven 404s over 60 s");
        assert_eq!(s.count(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_minute_of_404s_needs_the_count_too() {
        let mut s = GoneStreak::new(3, Duration::from_secs(60));
        assert!(!s.gone());
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(!s.gone(), "two 404s ten minutes apart are not three");
        assert!(s.gone());
    }

    #[tokio::test(start_paused = true)]
    async fn a_2xx_between_404s_starts_the_streak_again() {
        let mut s = GoneStreak::new(2, Duration::from_secs(60));
        assert!(!s.gone());
        tokio::time::advance(Duration::from_secs(90)).await;
        s.reset();
        assert!(!s.gone());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!s.gone());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.gone());
    }
}
