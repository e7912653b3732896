//! `Retry-After`: the one reader of how long a server asked us to wait, for the marketplace
//! pollers (`sources`) and the alert notifiers (`alert::notifiers`).
//!
//! A value is delay-seconds (`120`; a decimal such as Discord's `1.5` is read too) or an HTTP
//! date (`Sat, 21 Nov 2026 10:00:30 GMT`; a date in the past is no wait). Every wait is capped at
//! [`MAX_RETRY_AFTER`] so a broken header cannot park a poller or a channel for days.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The longest wait honoured as given; longer asks are cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3_600);

/// The `Retry-After` header of an answer as a wait; `None` when absent or unreadable.
pub fn from_headers(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    parse(headers.get(RETRY_AFTER)?.to_str().ok()?, now)
}

/// A `Retry-After`-style value (also Discord's `x-ratelimit-reset-after`) as a wait at `now`.
pub fn parse(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO).min(MAX_RETRY_AFTER))
}

/// A wait given as a number of seconds (a header, or a JSON body's `retry_after`); `None` unless
/// finite and not negative.
pub fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(retry_after).expect("header"));
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let retry_after = from_headers;
        let now = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(retry_after(&headers("1"), now), Some(Duration::from_secs(1)));
        assert_eq!(
            retry_after(&headers("Sat, 21 Nov 2026 10:00:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers("Sat, 21 Nov 2026 09:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers("999999"), now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(&headers("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn fractions_are_read_and_nonsense_is_no_wait() {
        let now = Utc::now();
        assert_eq!(parse(" 1.5 ", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse("-1", now), None);
        assert_eq!(parse("NaN", now), None);
        assert_eq!(seconds(0.75), Some(Duration::from_millis(750)));
        assert_eq!(seconds(1e12), Some(MAX_RETRY_AFTER));
        assert_eq!(parse("Sun, 21 Nov 2100 10:00:00 GMT", now), Some(MAX_RETRY_AFTER));
    }
}
