//! The time ranges the dashboard and API accept: `range=` (6h, 24h, 48h, 72h, 7d) and
//! `since=` (an RFC 3339 time or a duration back from now).

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::error::ApiError;

/// The chart and distribution are drawn from about this many time buckets, whatever the range.
const BUCKETS_PER_RANGE: i64 = 144;

/// Longest `since=` duration: alerts are kept in Postgres, but a page of them is for recent ones.
const MAX_SINCE: ChronoDuration = ChronoDuration::days(31);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    H6,
    H24,
    H48,
    H72,
    D7,
}

impl Range {
    pub const ALL: [Range; 5] = [Self::H6, Self::H24, Self::H48, Self::H72, Self::D7];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::H6 => "6h",
            Self::H24 => "24h",
            Self::H48 => "48h",
            Self::H72 => "72h",
            Self::D7 => "7d",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Self::H6 => 6 * 3600,
            Self::H24 => 24 * 3600,
            Self::H48 => 48 * 3600,
            Self::H72 => 72 * 3600,
            Self::D7 => 7 * 86_400,
        }
    }

    /// Width of one chart bucket.
    pub fn bucket_seconds(self) -> i64 {
        self.seconds() / BUCKETS_PER_RANGE
    }

    /// `range=` as given, defaulting to 24h when absent.
    pub fn parse(value: Option<&str>) -> Result<Self, ApiError> {
        let Some(v) = value else { return Ok(Self::H24) };
        Self::ALL.into_iter().find(|r| r.as_str() == v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "range must be one of 6h, 24h, 48h, 72h, 7d (got {:?})",
                truncate(v)
            ))
        })
    }

    /// `[now - range, now)`, the interval this range covers.
    pub fn interval(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        (now - ChronoDuration::seconds(self.seconds()), now)
    }
}

/// `since=`: an RFC 3339 time (`2026-11-21T10:00:00Z`) or a duration back from `now` (`90m`,
/// `24h`, `7d`); absent means 24 hours.
pub fn parse_since(value: Option<&str>, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let Some(v) = value else {
        return Ok(now - ChronoDuration::hours(24));
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        ApiError::bad_request(format!(
            "since must be an RFC 3339 time (2026-11-21T10:00:00Z) or a duration such as 90m, 24h, 7d \
             of at most 31 days (got {:?})",
            truncate(v)
        ))
    };
    let d = humantime::parse_duration(v).map_err(|_| bad())?;
    let d = ChronoDuration::from_std(d).map_err(|_| bad())?;
    if d > MAX_SINCE {
        return Err(bad());
    }
    Ok(now - d)
}

/// A user's value echoed in an error, cut so an error never grows with the request.
fn truncate(v: &str) -> String {
    v.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_and_default_to_a_day() {
        assert_eq!(Range::parse(None).ok(), Some(Range::H24));
        assert_eq!(Range::parse(Some("7d")).ok(), Some(Range::D7));
        assert_eq!(Range::H6.bucket_seconds(), 150);
        let err = Range::parse(Some("5h")).expect_err("5h is not offered");
        assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(err.message.contains("6h, 24h"), "{}", err.message);
    }

    #[test]
    fn since_takes_a_time_or_a_duration() {
        let now = DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let t = parse_since(Some("2026-11-21T10:00:00+01:00"), now).expect("rfc3339");
        assert_eq!(t.to_rfc3339(), "2026-11-21T09:00:00+00:00");
        let t = parse_since(Some("90m"), now).expect("duration");
        assert_eq!(t.to_rfc3339(), "2026-11-21T10:30:00+00:00");
        assert!(parse_since(Some("yesterday"), now).is_err());
        assert!(parse_since(Some("400d"), now).is_err());
    }
}
