//! Events per second: [`Rate`] is the one computation of a count over a span of time, used by
//! the metrics log line, the dashboard's live rate, `conscope simulate`, `conscope bench` and
//! `conscope replay`.

/// `count` things (events, records, rows) in `seconds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: u64,
    pub seconds: f64,
}

impl Rate {
    pub fn new(count: u64, seconds: f64) -> Self {
        Self { count, seconds }
    }

    /// Things per second; a span too short to measure counts as a nanosecond, never a division
    /// by zero.
    pub fn per_second(self) -> f64 {
        self.count as f64 / self.seconds.max(1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_count_over_the_seconds_and_never_divides_by_zero() {
        assert_eq!(Rate::new(500, 2.0).per_second(), 250.0);
        assert_eq!(Rate::new(0, 0.0).per_second(), 0.0);
        assert!(Rate::new(1, 0.0).per_second().is_finite());
    }
}
