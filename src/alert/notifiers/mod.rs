//! Notifiers: one configured channel each ([`Notifier`]), how its alerts become HTTP requests
//! (`discord.rs`, `slack.rs`, `webhook.rs`), sending one request, and what the answer means
//! ([`classify`]):
//!
//! | answer                         | [`Outcome`]     | the sender then                                  |
//! |--------------------------------|-----------------|--------------------------------------------------|
//! | 2xx                            | `Sent`          | marks the rows sent                              |
//! | 429                            | `RateLimited`   | waits `retry_after` (body, else `Retry-After`)   |
//! | 5xx, 408, network error, timeout | `Retry`       | retries with backoff until `alert.backoff.deadline` |
//! | 404, 410                       | `Gone`          | retries; disables the channel once persistent    |
//! | other 4xx                      | `Rejected`      | marks the rows failed, no retry                  |
//!
//! A `Retry` says whether the notifier may have taken the message all the same
//! (`maybe_delivered`): a 5xx (the server may have failed after posting it) or no answer after
//! the request went out (a timeout, a connection closed mid-answer). A refused connection or a
//! 408 proves it did not; so do 429, 404/410 and other 4xx.
//!
//! Every answer's `X-RateLimit-Remaining`/`-Reset-After` headers are read into [`RateHint`].
//! URLs carry tokens: nothing here logs or returns one (reqwest errors are stripped of theirs).

pub mod discord;
pub mod slack;
pub mod webhook;

use std::collections::HashSet;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

use super::AlertMessage;
use crate::config::{DetectConfig, NotifierConfig, NotifierKind, redact_webhook_url};
use crate::retry_after::{self, MAX_RETRY_AFTER};

/// Longest error text kept from a response body.
const MAX_ERROR_BODY: usize = 300;
/// Longest response body read at all.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// One HTTP request to make: which alerts it carries and its JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub alert_ids: Vec<String>,
    pub body: serde_json::Value,
}

/// An alert due for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub message: AlertMessage,
    /// Attempts made so far (reported; the deadline, not this count, ends retrying).
    pub attempts: i32,
    /// When the current retry budget started: the row's creation, or its last redelivery.
    pub retry_from: chrono::DateTime<chrono::Utc>,
    /// The last request carrying it may have reached the notifier (its 2xx never recorded):
    /// sending it again is a possible repeat.
    pub maybe_delivered: bool,
}

/// What the server told us about its rate limit on this answer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateHint {
    /// Requests left in the current window, when the server said.
    pub remaining: Option<u64>,
    /// When the window resets, when the server said.
    pub reset_after: Option<Duration>,
}

impl RateHint {
    /// A pause to take before the next request: only when nothing remains.
    pub fn pause(&self) -> Option<Duration> {
        match (self.remaining, self.reset_after) {
            (Some(0), Some(d)) => Some(d.min(MAX_RETRY_AFTER)),
            _ => None,
        }
    }
}

/// What one request's answer means.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Sent {
        status: u16,
    },
    RateLimited {
        status: u16,
        retry_after: Duration,
    },
    Retry {
        status: Option<u16>,
        error: String,
        maybe_delivered: bool,
    },
    Gone {
        status: u16,
        error: String,
    },
    Rejected {
        status: u16,
        error: String,
    },
}

impl Outcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Sent { status }
            | Self::RateLimited { status, .. }
            | Self::Gone { status, .. }
            | Self::Rejected { status, .. } => Some(*status),
            Self::Retry { status, .. } => *status,
        }
    }

    /// One sentence for users and the `last_error` column.
    pub fn describe(&self) -> String {
        match self {
            Self::Sent { status } => format!("HTTP {status}: delivered"),
            Self::RateLimited { status, retry_after } => {
                format!("HTTP {status}: rate limited, retry after {retry_after:?}")
            }
            Self::Retry {
                status: Some(s),
                error,
                ..
            } => format!("HTTP {s}: server error: {error}"),
            Self::Retry {
                status: None, error, ..
            } => format!("no answer: {error}"),
            Self::Gone { status, error } => {
                format!("HTTP {status}: the webhook does not exist (deleted, or a wrong URL): {error}")
            }
            Self::Rejected { status, error } => format!("HTTP {status}: request refused: {error}"),
        }
    }
}

/// A header read as `Retry-After` is (seconds or an HTTP date, capped).
fn header_secs(headers: &HeaderMap, name: &str) -> Option<Duration> {
    retry_after::parse(headers.get(name)?.to_str().ok()?, chrono::Utc::now())
}

/// Read the rate-limit headers of an answer.
pub fn rate_hint(headers: &HeaderMap) -> RateHint {
    RateHint {
        remaining: headers
            .get("x-ratelimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
        reset_after: header_secs(headers, "x-ratelimit-reset-after"),
    }
}

/// What an HTTP answer means (see the module table).
pub fn classify(status: u16, headers: &HeaderMap, body: &str) -> Outcome {
    let error = || super::format::truncate(body.trim(), MAX_ERROR_BODY);
    match status {
        200..=299 => Outcome::Sent { status },
        429 => {
            let from_body = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("retry_after").and_then(serde_json::Value::as_f64))
                .and_then(retry_after::seconds);
            let retry_after = from_body
                .or_else(|| retry_after::from_headers(headers, chrono::Utc::now()))
                .unwrap_or(Duration::from_secs(1))
                .min(MAX_RETRY_AFTER);
            Outcome::RateLimited { status, retry_after }
        }
        404 | 410 => Outcome::Gone {
            status,
            error: error(),
        },
        408 => Outcome::Retry {
            status: Some(status),
            error: error(),
            maybe_delivered: false,
        },
        500..=599 => Outcome::Retry {
            status: Some(status),
            error: error(),
            maybe_delivered: true,
        },
        _ => Outcome::Rejected {
            status,
            error: error(),
        },
    }
}

/// An answer: its meaning and its rate-limit hint.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub outcome: Outcome,
    pub hint: RateHint,
}

/// One configured channel, ready to send. Its `Debug` shows the URL redacted.
#[derive(Clone)]
pub struct Notifier {
    pub name: String,
    pub kind: NotifierKind,
    url: reqwest::Url,
    headers: HeaderMap,
    client: reqwest::Client,
    detect: DetectConfig,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.redacted_url())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(
        name: &str,
        cfg: &NotifierConfig,
        client: reqwest::Client,
        detect: &DetectConfig,
    ) -> Result<Self, String> {
        let mut url = reqwest::Url::parse(cfg.url.expose())
            .map_err(|_| format!("alert.notifiers.{name}.url is not a URL"))?;
        if cfg.kind == NotifierKind::Discord {
            // Ask Discord to confirm the message was saved (200 and the message, not 204).
            let others: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "wait")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            url.query_pairs_mut()
                .clear()
                .extend_pairs(others)
                .append_pair("wait", "true");
        }
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (k, v) in &cfg.headers {
            let name_ok = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("alert.notifiers.{name}.headers.{k} is not a header name"))?;
            let mut value = HeaderValue::from_str(v.expose())
                .map_err(|_| format!("alert.notifiers.{name}.headers.{k} is not a header value"))?;
            value.set_sensitive(true);
            headers.insert(name_ok, value);
        }
        Ok(Self {
            name: name.to_string(),
            kind: cfg.kind,
            url,
            headers,
            client,
            detect: detect.clone(),
        })
    }

    /// The URL safe to print: scheme, host and port.
    pub fn redacted_url(&self) -> String {
        redact_webhook_url(self.url.as_str())
    }

    /// Lay `due` out as requests. Alerts in `solo` go one per request (a coalesced request that
    /// was refused is retried alert by alert, so one bad alert cannot sink the others).
    pub fn plan(&self, due: &[Pending], solo: &HashSet<String>) -> Vec<Outgoing> {
        let (alone, together): (Vec<&Pending>, Vec<&Pending>) =
            due.iter().partition(|p| solo.contains(&p.message.alert.alert_id));
        let single = |p: &Pending| self.plan_group(std::slice::from_ref(&p.message));
        let mut out: Vec<Outgoing> = alone.into_iter().flat_map(single).collect();
        let rest: Vec<AlertMessage> = together.into_iter().map(|p| p.message.clone()).collect();
        out.extend(self.plan_group(&rest));
        out
    }

    fn plan_group(&self, alerts: &[AlertMessage]) -> Vec<Outgoing> {
        match self.kind {
            NotifierKind::Discord => discord::plan(alerts, &self.detect),
            NotifierKind::Slack => slack::plan(alerts, &self.detect),
            NotifierKind::Webhook => webhook::plan(alerts, &self.detect),
        }
    }

    /// POST one request and say what the answer means.
    pub async fn send(&self, out: &Outgoing) -> Reply {
        let mut req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .json(&out.body);
        if self.kind == NotifierKind::Webhook
            && let Some(id) = out.alert_ids.first()
        {
            // Lets a receiver drop the one repeat a crash right after its 2xx can cause.
            req = req.header("Idempotency-Key", id.as_str());
        }
        match req.send().await {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let hint = rate_hint(resp.headers());
                let headers = resp.headers().clone();
                let mut body = Vec::new();
                while body.len() < MAX_BODY_BYTES {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                        _ => break,
                    }
                }
                let body = String::from_utf8_lossy(&body);
                Reply {
                    outcome: classify(status, &headers, &body),
                    hint,
                }
            }
            Err(e) => Reply {
                outcome: Outcome::Retry {
                    status: None,
                    // Only a connection never made proves the message did not go out.
                    maybe_delivered: !e.is_connect(),
                    error: error_text(e),
                },
                hint: RateHint::default(),
            },
        }
    }

    /// Send a test message (for `conscope watch test`).
    pub async fn send_test(&self, description: &str) -> Reply {
        let message = test_message(description);
        let out = self.plan_group(std::slice::from_ref(&message));
        match out.first() {
            Some(o) => self.send(o).await,
            None => Reply {
                outcome: Outcome::Rejected {
                    status: 0,
                    error: "nothing to send".into(),
                },
                hint: RateHint::default(),
            },
        }
    }
}

/// A reqwest error as one line, without the URL (it holds the token).
fn error_text(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    super::format::truncate(&text, MAX_ERROR_BODY)
}

/// The message `conscope watch test` sends.
pub fn test_message(description: &str) -> AlertMessage {
    let now = chrono::Utc::now();
    let id = format!("test-{}", now.timestamp_millis());
    AlertMessage {
        alert: crate::model::Alert {
            alert_id: id.clone(),
            alert_type: "test".into(),
            rule: "test".into(),
            listing_key: "test".into(),
            event: std::sync::Arc::new(crate::model::PriceEvent::from(crate::model::PriceEventFields {
                event_id: "test".into(),
                event_name: "ConScope test message".into(),
                venue: "your channel works".into(),
                event_date: None,
                source: "conscope".into(),
                section: Default::default(),
                row: Default::default(),
                seat: Default::default(),
                price: 0,
                fees: None,
                total_price: 0,
                timestamp: now,
                listing_id: None,
                listing_url: None,
                quantity: 1,
                delivery_method: None,
                seller_notes: None,
            })),
            old_price: 0,
            new_price: 0,
            drop_amount: 0,
            drop_percent: 0.0,
            alert_timestamp: now,
            source_partition: 0,
            source_offset: 0,
        },
        rule_description: Some(description.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in list {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn a_429_waits_what_the_body_says_else_the_header() {
        let body = r#"{"message":"You are being rate limited.","retry_after":0.75,"global":false}"#;
        assert_eq!(
            classify(429, &headers(&[("retry-after", "1")]), body),
            Outcome::RateLimited {
                status: 429,
                retry_after: Duration::from_millis(750)
            }
        );
        assert_eq!(
            classify(429, &headers(&[("retry-after", "3")]), "slow down"),
            Outcome::RateLimited {
                status: 429,
                retry_after: Duration::from_secs(3)
            }
        );
        assert!(matches!(
            classify(429, &HeaderMap::new(), ""),
            Outcome::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(1)
        ));
    }

    #[test]
    fn statuses_map_to_what_the_sender_does() {
        let h = HeaderMap::new();
        assert_eq!(classify(204, &h, ""), Outcome::Sent { status: 204 });
        assert!(matches!(
            classify(404, &h, "Unknown Webhook"),
            Outcome::Gone { status: 404, .. }
        ));
        assert!(matches!(classify(410, &h, ""), Outcome::Gone { status: 410, .. }));
        assert!(matches!(
            classify(503, &h, ""),
            Outcome::Retry {
                status: Some(503),
                maybe_delivered: true,
                ..
            }
        ));
        assert!(matches!(
            classify(408, &h, ""),
            Outcome::Retry {
                status: Some(408),
                maybe_delivered: false,
                ..
            }
        ));
        assert!(matches!(
            classify(400, &h, "bad"),
            Outcome::Rejected { status: 400, .. }
        ));
        assert!(matches!(
            classify(401, &h, ""),
            Outcome::Rejected { status: 401, .. }
        ));
    }

    #[test]
    fn no_requests_remaining_pauses_until_the_reset() {
        let hint = rate_hint(&headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset-after", "1.5"),
        ]));
        assert_eq!(hint.pause(), Some(Duration::from_millis(1500)));
        let hint = rate_hint(&headers(&[
            ("x-ratelimit-remaining", "3"),
            ("x-ratelimit-reset-after", "1.5"),
        ]));
        assert_eq!(hint.pause(), None);
    }

    #[test]
    fn debug_never_shows_the_webhook_token_or_header_values() {
        let cfg = NotifierConfig {
            kind: NotifierKind::Discord,
            url: crate::config::Secret::new("https://discord.com/api/webhooks/1/tok-secret"),
            headers: [(
                "Authorization".to_string(),
                crate::config::Secret::new("Bearer hdr-secret"),
            )]
            .into_iter()
            .collect(),
            rate_limits: None,
        };
        let n =
            Notifier::new("ops", &cfg, reqwest::Client::new(), &DetectConfig::default()).expect("notifier");
        let text = format!("{n:?}");
        assert!(
            !text.contains("tok-secret") && !text.contains("hdr-secret"),
            "{text}"
        );
        assert!(text.contains("https://discord.com/<redacted>"), "{text}");
    }

    #[test]
    fn a_long_error_body_is_cut() {
        let body = "x".repeat(10_000);
        let Outcome::Rejected { error, .. } = classify(400, &HeaderMap::new(), &body) else {
            panic!("rejected")
        };
        assert_eq!(error.chars().count(), MAX_ERROR_BODY);
    }
}
