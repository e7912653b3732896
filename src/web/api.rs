//! Read handlers of the JSON API: `/api/events`, `/api/events/{id}/prices`,
//! `/api/events/{id}/windows`, `/api/alerts`, `/api/stats`.
//!
//! Each handler checks its parameters (400 with what was wrong), takes one Postgres connection
//! under `web.query_timeout`, and answers from [`crate::store::queries`]. An event id nobody has
//! seen is a 404, not an empty chart, so a typo in a link is visible.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};

use super::WebState;
use super::error::ApiError;
use super::range::{Range, parse_since};
use crate::store::queries::{self, AlertRow, Distribution, EventSummary, PriceBucket, Stats, WindowRow};

/// Most bins of the price-distribution histogram (the width is a round number of dollars).
const DISTRIBUTION_BINS: usize = 20;
/// Most drop markers one chart carries (newest first).
const MAX_MARKERS: i64 = 500;

fn limit(value: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {max} (got {n})"
        ))),
    }
}

fn unknown_event(event_id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no event with id {:?}",
        event_id.chars().take(80).collect::<String>()
    ))
}

async fn known_event(c: &tokio_postgres::Client, event_id: &str) -> Result<(), ApiError> {
    if queries::event_exists(c, event_id).await? {
        Ok(())
    } else {
        Err(unknown_event(event_id))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    limit: Option<i64>,
}

pub async fn events(
    State(s): State<WebState>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<Vec<EventSummary>>, ApiError> {
    let Query(q) = q?;
    let limit = limit(q.limit, 500, 5_000)?;
    let c = s.db().await?;
    let events = s
        .bounded(async { Ok(queries::list_events(&c, limit).await?) })
        .await?;
    Ok(Json(events))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    event_id: Option<String>,
}

/// Start of the current UTC day.
fn today(now: DateTime<Utc>) -> DateTime<Utc> {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(now, |midnight| midnight.and_utc())
}

pub async fn stats(
    State(s): State<WebState>,
    q: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Stats>, ApiError> {
    let Query(q) = q?;
    let event = q.event_id.as_deref().filter(|e| !e.is_empty());
    let c = s.db().await?;
    let stats = s
        .bounded(async {
            if let Some(id) = event {
                known_event(&c, id).await?;
            }
            Ok(queries::stats(&c, event, today(Utc::now())).await?)
        })
        .await?;
    Ok(Json(stats))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    range: Option<String>,
}

/// The price chart of one event: time buckets, drop markers and the price distribution.
#[derive(Debug, Serialize)]
pub struct Prices {
    pub event_id: String,
    pub range: &'static str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_seconds: i64,
    pub observations: i64,
    pub buckets: Vec<PriceBucket>,
    /// Drop alerts in the range, newest first (at most 500).
    pub drops: Vec<AlertRow>,
    pub distribution: Distribution,
}

pub async fn prices(
    State(s): State<WebState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Json<Prices>, ApiError> {
    let Path(event_id) = id?;
    let Query(q) = q?;
    let range = Range::parse(q.range.as_deref())?;
    let (from, to) = range.interval(Utc::now());
    let c = s.db().await?;
    let prices = s
        .bounded(async {
            let bucket = range.bucket_seconds();
            // All three go out at once on the one connection (pipelined).
            let (exists, series, drops) = tokio::try_join!(
                queries::event_exists(&c, &event_id),
                queries::price_series(&c, &event_id, from, to, bucket as f64),
                queries::event_drops(&c, &event_id, from, to, MAX_MARKERS),
            )?;
            if !exists {
                return Err(unknown_event(&event_id));
            }
            let buckets = series.buckets;
            let distribution = Distribution::from_dollars(&series.per_dollar, DISTRIBUTION_BINS);
            Ok(Prices {
                event_id: event_id.clone(),
                range: range.as_str(),
                from,
                to,
                bucket_seconds: bucket,
                observations: buckets.iter().map(|b| b.observations).sum(),
                buckets,
                drops,
                distribution,
            })
        })
        .await?;
    Ok(Json(prices))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsQuery {
    range: Option<String>,
    width: Option<i32>,
    limit: Option<i64>,
}

pub async fn windows(
    State(s): State<WebState>,
    id: Result<Path<String>, PathRejection>,
    q: Result<Query<WindowsQuery>, QueryRejection>,
) -> Result<Json<Vec<WindowRow>>, ApiError> {
    let Path(event_id) = id?;
    let Query(q) = q?;
    let range = Range::parse(q.range.as_deref())?;
    if let Some(w) = q.width.filter(|w| *w <= 0) {
        return Err(ApiError::bad_request(format!(
            "width must be a positive number of seconds (got {w})"
        )));
    }
    let limit = limit(q.limit, 2_000, 10_000)?;
    let (from, _) = range.interval(Utc::now());
    let c = s.db().await?;
    let rows = s
        .bounded(async {
            known_event(&c, &event_id).await?;
            Ok(queries::windows(&c, &event_id, q.width, from, limit).await?)
        })
        .await?;
    Ok(Json(rows))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    since: Option<String>,
    event_id: Option<String>,
    limit: Option<i64>,
}

pub async fn alerts(
    State(s): State<WebState>,
    q: Result<Query<AlertsQuery>, QueryRejection>,
) -> Result<Json<Vec<AlertRow>>, ApiError> {
    let Query(q) = q?;
    let now = Utc::now();
    let since = parse_since(q.since.as_deref(), now)?;
    if since > now + ChronoDuration::minutes(5) {
        return Err(ApiError::bad_request("since must not be in the future"));
    }
    let limit = limit(q.limit, 100, 1_000)?;
    let event = q.event_id.as_deref().filter(|e| !e.is_empty());
    let c = s.db().await?;
    let rows = s
        .bounded(async {
            if let Some(id) = event {
                known_event(&c, id).await?;
            }
            Ok(queries::recent_alerts(&c, since, event, limit).await?)
        })
        .await?;
    Ok(Json(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_starts_at_utc_midnight() {
        let now = DateTime::parse_from_rfc3339("2026-11-21T23:59:00-05:00")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(today(now).to_rfc3339(), "2026-11-22T00:00:00+00:00");
    }

    #[test]
    fn limits_outside_their_bounds_are_refused() {
        assert_eq!(limit(None, 100, 1_000).ok(), Some(100));
        assert_eq!(limit(Some(5), 100, 1_000).ok(), Some(5));
        assert!(limit(Some(0), 100, 1_000).is_err());
        assert!(limit(Some(1_001), 100, 1_000).is_err());
    }
}
