//! The one retry policy (initial, max, multiplier, jitter, deadline), shared by Kafka, Postgres
//! and webhook retries. A [`Backoff`] is one retry sequence: ask it for the next delay until it
//! says the deadline has passed.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::config::BackoffConfig;

#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    next: Duration,
    started: Instant,
    attempts: u32,
}

impl Backoff {
    pub fn new(config: &BackoffConfig) -> Self {
        Self {
            config: config.clone(),
            next: config.initial,
            started: Instant::now(),
            attempts: 0,
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
        (self.started.elapsed() + delay <= self.config.deadline).then_some(delay)
    }

    /// Attempts made so far (delays handed out).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Start a new sequence after a success.
    pub fn reset(&mut self) {
        self.next = self.config.initial;
        self.started = Instant::now();
        self.attempts = 0;
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
            deadline: Some(config.deadline),
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
}
