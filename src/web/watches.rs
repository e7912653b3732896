//! `/api/watches`: list (open), create and delete (bearer token, see [`super::auth`]).
//!
//! A POST body is checked completely before anything is stored, and every problem is named in
//! one 400 (`target_price: required when trigger_type is at_or_below; channel: ...`), so a
//! client fixes them in one go. Unknown fields are refused: a misspelt key must not silently
//! become a watch that never fires.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::WebState;
use super::auth::require_token;
use super::error::ApiError;
use crate::model::Cents;
use crate::store::watches::{self, NewWatch, TriggerType, Watch};

const MAX_TEXT: usize = 200;
const MAX_COOLDOWN_SECONDS: i64 = 30 * 86_400;
const DEFAULT_COOLDOWN_SECONDS: i32 = 21_600;

/// A POST body as the client sent it, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRequest {
    pub trigger_type: String,
    pub channel: String,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub event_name_pattern: Option<String>,
    #[serde(default)]
    pub section: Option<String>,
    #[serde(default)]
    pub max_row: Option<String>,
    #[serde(default)]
    pub max_price: Option<f64>,
    #[serde(default)]
    pub target_price: Option<f64>,
    #[serde(default)]
    pub drop_percent: Option<f64>,
    #[serde(default)]
    pub lookback_days: Option<i64>,
    #[serde(default)]
    pub notify_on_first_sight: Option<bool>,
    #[serde(default)]
    pub cooldown_seconds: Option<i64>,
}

fn text(problems: &mut Vec<String>, key: &str, v: Option<String>) -> Option<String> {
    let v = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())?;
    if v.chars().count() > MAX_TEXT {
        problems.push(format!("{key}: must be at most {MAX_TEXT} characters"));
    }
    Some(v)
}

fn price(problems: &mut Vec<String>, key: &str, v: Option<f64>) -> Option<Cents> {
    let v = v?;
    // Largest price a `numeric(10,2)` column holds, in dollars.
    let max = Cents::MAX_PRICE.to_dollars();
    match Cents::from_dollars(v) {
        Some(c) if v > 0.0 && v <= max => Some(c),
        _ => {
            problems.push(format!(
                "{key}: must be a price in dollars above 0 and at most {max}"
            ));
            None
        }
    }
}

impl WatchRequest {
    /// The watch to store, or every problem with the request.
    pub fn validate(self) -> Result<NewWatch, Vec<String>> {
        let mut p = Vec::new();
        let trigger = TriggerType::parse(self.trigger_type.trim());
        if trigger.is_none() {
            p.push(format!(
                "trigger_type: must be one of {}",
                TriggerType::ALL.map(TriggerType::as_str).join(", ")
            ));
        }
        let channel = self.channel.trim().to_string();
        let channel_ok = !channel.is_empty()
            && channel.len() <= 64
            && channel
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !channel_ok {
            p.push("channel: must name a notifier: 1-64 letters, digits, '_', '-' or '.'".into());
        }
        let user_id = text(&mut p, "user_id", self.user_id);
        let event_id = text(&mut p, "event_id", self.event_id);
        let event_name_pattern = text(&mut p, "event_name_pattern", self.event_name_pattern);
        if event_id.is_none() && event_name_pattern.is_none() {
            p.push("event_id: a watch needs event_id or event_name_pattern".into());
        }
        let section = text(&mut p, "section", self.section);
        let max_row = text(&mut p, "max_row", self.max_row);
        let max_price_cents = price(&mut p, "max_price", self.max_price);
        let target_price_cents = price(&mut p, "target_price", self.target_price);
        if let Some(d) = self
            .drop_percent
            .filter(|d| !(d.is_finite() && *d > 0.0 && *d < 100.0))
        {
            p.push(format!("drop_percent: must be above 0 and below 100 (got {d})"));
        }
        let lookback_days = match self.lookback_days {
            None => None,
            Some(d) if (1..=365).contains(&d) => Some(d as i32),
            Some(d) => {
                p.push(format!("lookback_days: must be between 1 and 365 (got {d})"));
                None
            }
        };
        let cooldown_seconds = match self.cooldown_seconds {
            None => DEFAULT_COOLDOWN_SECONDS,
            Some(s) if (0..=MAX_COOLDOWN_SECONDS).contains(&s) => s as i32,
            Some(s) => {
                p.push(format!(
                    "cooldown_seconds: must be between 0 and {MAX_COOLDOWN_SECONDS} (got {s})"
                ));
                DEFAULT_COOLDOWN_SECONDS
            }
        };
        // What each trigger needs, and what it would ignore (refused, so nobody relies on it).
        if let Some(t) = trigger {
            let name = t.as_str();
            let needs = |p: &mut Vec<String>, present: bool, key: &str| {
                if !present {
                    p.push(format!("{key}: required when trigger_type is {name}"));
                }
            };
            let unused = |p: &mut Vec<String>, present: bool, key: &str| {
                if present {
                    p.push(format!("{key}: not used by trigger_type {name}"));
                }
            };
            let (target, drop, lookback) = (
                self.target_price.is_some(),
                self.drop_percent.is_some(),
                self.lookback_days.is_some(),
            );
            match t {
                TriggerType::AtOrBelow => {
                    needs(&mut p, target, "target_price");
                    unused(&mut p, drop, "drop_percent");
                    unused(&mut p, lookback, "lookback_days");
                }
                TriggerType::DropPercent => {
                    needs(&mut p, drop, "drop_percent");
                    unused(&mut p, target, "target_price");
                    unused(&mut p, lookback, "lookback_days");
                }
                TriggerType::DropVsLow => {
                    needs(&mut p, lookback, "lookback_days");
                    unused(&mut p, target, "target_price");
                }
                TriggerType::NewLowListing | TriggerType::NewLowEvent => {
                    unused(&mut p, target, "target_price");
                    unused(&mut p, drop, "drop_percent");
                    unused(&mut p, lookback, "lookback_days");
                }
            }
        }
        match trigger {
            Some(trigger_type) if p.is_empty() => Ok(NewWatch {
                user_id,
                event_id,
                event_name_pattern,
                section,
                max_row,
                max_price_cents,
                trigger_type,
                target_price_cents,
                drop_percent: self.drop_percent,
                lookback_days,
                channel,
                notify_on_first_sight: self.notify_on_first_sight.unwrap_or(true),
                cooldown_seconds,
            }),
            _ => Err(p),
        }
    }
}

/// Parse a JSON body, naming the key that was wrong (`trigger_type: invalid type ...`).
pub fn parse_body(body: &[u8]) -> Result<WatchRequest, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(format!("malformed JSON: {inner}"))
        } else if path == "." {
            ApiError::bad_request(format!("invalid watch: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid watch: {path}: {inner}"))
        }
    })
}

pub async fn list(State(s): State<WebState>) -> Result<Json<Vec<Watch>>, ApiError> {
    let c = s.db().await?;
    let rows = s.bounded(async { Ok(watches::list(&c, 1_000).await?) }).await?;
    Ok(Json(rows))
}

pub async fn create(
    State(s): State<WebState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Watch>), ApiError> {
    require_token(&headers, &s.cfg.web.api_token)?;
    let body = body?;
    let new = parse_body(&body)?
        .validate()
        .map_err(|problems| ApiError::bad_request(format!("invalid watch: {}", problems.join("; "))))?;
    let c = s.db().await?;
    let watch = s.bounded(async { Ok(watches::insert(&c, &new).await?) }).await?;
    tracing::info!(id = watch.id, trigger = new.trigger_type.as_str(), channel = %watch.channel, "watch created");
    Ok((StatusCode::CREATED, Json(watch)))
}

pub async fn delete(
    State(s): State<WebState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_token(&headers, &s.cfg.web.api_token)?;
    let Path(id) = id?;
    let id: i64 = id
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::bad_request("a watch id is a positive whole number"))?;
    let c = s.db().await?;
    let deleted = s.bounded(async { Ok(watches::delete(&c, id).await?) }).await?;
    if !deleted {
        return Err(ApiError::not_found(format!("no watch with id {id}")));
    }
    tracing::info!(id, "watch deleted");
    Ok(Json(json!({ "deleted": id })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<NewWatch, String> {
        parse_body(json.as_bytes())
            .map_err(|e| e.message)?
            .validate()
            .map_err(|p| p.join("; "))
    }

    #[test]
    fn an_at_or_below_watch_is_stored_in_cents() {
        let w = request(
            r#"{"trigger_type":"at_or_below","channel":"discord","event_id":"e1","target_price":120.5}"#,
        )
        .expect("valid");
        assert_eq!(w.trigger_type, TriggerType::AtOrBelow);
        assert_eq!(w.target_price_cents, Some(Cents(12_050)));
        assert_eq!(w.cooldown_seconds, DEFAULT_COOLDOWN_SECONDS);
        assert!(w.notify_on_first_sight);
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let err = request(r#"{"trigger_type":"at_or_below","channel":"no spaces","drop_percent":150}"#)
            .expect_err("invalid");
        for part in [
            "channel:",
            "event_id: a watch needs",
            "drop_percent: must be above 0",
            "target_price: required when trigger_type is at_or_below",
            "drop_percent: not used by trigger_type at_or_below",
        ] {
            assert!(err.contains(part), "{part} missing from {err}");
        }
    }

    #[test]
    fn unknown_trigger_types_and_fields_are_refused() {
        let err = request(r#"{"trigger_type":"whenever","channel":"x","event_id":"e"}"#).expect_err("bad");
        assert!(err.contains("trigger_type: must be one of at_or_below"), "{err}");
        let err = request(r#"{"trigger_type":"new_low_event","channel":"x","event_id":"e","targt":1}"#)
            .expect_err("typo");
        assert!(err.contains("unknown field `targt`"), "{err}");
        let err = request(r#"{"trigger_type":"new_low_event","channel":"x","lookback_days":"7"}"#)
            .expect_err("wrong type");
        assert!(err.contains("lookback_days"), "{err}");
        let err = request(r#"{"trigger_type": "#).expect_err("malformed");
        assert!(err.starts_with("malformed JSON"), "{err}");
    }
}
