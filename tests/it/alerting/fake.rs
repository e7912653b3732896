//! Fake notifiers on the shared fake server: a Discord webhook, a Slack incoming webhook and a
//! generic JSON endpoint. They check what Discord checks (embed limits), answer as scripted
//! (2xx, 429 with `retry_after`, 5xx, 404, rate-limit headers) and read the alert ids each
//! request carried, so tests count deliveries per alert id as the server saw them.
//!
//! `hold_next` (from the shared server) takes the next request, records it as accepted, as a
//! real notifier posts a message before answering, and holds its answer until `release`: a test
//! can kill ConScope exactly between the notifier accepting a message and ConScope recording it.

use std::collections::{BTreeMap, HashSet};
use std::ops::Deref;
use std::time::{Duration, Instant};

use axum::http::Method;
use serde_json::{Value, json};

use crate::fake_http::{Answer, FakeHttp, Seen};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discord,
    Slack,
    Webhook,
}

/// One scripted answer; the kind of notifier gives it its shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok,
    Status(u16),
    /// 429 with `retry_after` (seconds) in the body (Discord) and a `Retry-After` header.
    TooMany(f64),
    /// 2xx with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset-After`.
    OkButExhausted(f64),
}

/// A running fake notifier; scripts, holds and the request log come from [`FakeHttp`].
#[derive(Clone)]
pub struct Fake {
    kind: Kind,
    http: FakeHttp<Reply>,
}

impl Deref for Fake {
    type Target = FakeHttp<Reply>;

    fn deref(&self) -> &Self::Target {
        &self.http
    }
}

impl Fake {
    /// Answer every request with [`Reply::Ok`] until scripted otherwise.
    pub async fn start(kind: Kind) -> Self {
        let http = FakeHttp::serve(vec![Reply::Ok], move |reply, seen| answer(kind, reply, seen)).await;
        Self { kind, http }
    }

    /// The webhook URL, with a token in its path like the real ones.
    pub fn url(&self) -> String {
        let path = match self.kind {
            Kind::Discord => "/api/webhooks/42/tok-discord-secret",
            Kind::Slack => "/services/T0/B0/tok-slack-secret",
            Kind::Webhook => "/hooks/tok-webhook-secret",
        };
        format!("{}{path}", self.base_url)
    }

    /// The alert ids a request carried.
    pub fn alert_ids(&self, seen: &Seen) -> Vec<String> {
        alert_ids(self.kind, &seen.body)
    }

    /// The alert ids of every request taken and held so far.
    pub fn held_alert_ids(&self) -> Vec<Vec<String>> {
        self.held().iter().map(|s| self.alert_ids(s)).collect()
    }

    /// How many times each alert id arrived in a request the server accepted (2xx).
    pub fn delivered(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for s in self.seen().iter().filter(|s| (200..300).contains(&s.status)) {
            for id in self.alert_ids(s) {
                *out.entry(id).or_insert(0) += 1;
            }
        }
        out
    }

    /// Wait until `n` distinct alert ids were accepted, or panic after `within`.
    pub async fn wait_delivered(&self, n: usize, within: Duration) {
        let started = Instant::now();
        while self.delivered().len() < n {
            assert!(
                started.elapsed() < within,
                "{} of {n} alerts delivered within {within:?}; requests: {:?}",
                self.delivered().len(),
                self.seen()
                    .iter()
                    .map(|s| (s.status, self.alert_ids(s).len()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The alert id at the end of a `... · alert <id>` line.
fn id_after_alert(text: &str) -> Option<String> {
    text.rsplit_once("alert ").map(|(_, id)| id.trim().to_string())
}

/// What Discord checks before it accepts a message; the reason it would answer 400.
pub fn discord_violation(body: &Value) -> Option<String> {
    let c = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
    let embeds = body["embeds"].as_array()?;
    if embeds.len() > 10 {
        return Some(format!("{} embeds", embeds.len()));
    }
    if c(&body["content"]) > 2000 {
        return Some("content over 2000".into());
    }
    let mut total = 0;
    let mut urls = HashSet::new();
    for e in embeds {
        for (key, max) in [("title", 256), ("description", 4096)] {
            if c(&e[key]) > max {
                return Some(format!("{key} over {max}"));
            }
        }
        if c(&e["footer"]["text"]) > 2048 {
            return Some("footer over 2048".into());
        }
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        if fields.len() > 25 {
            return Some("over 25 fields".into());
        }
        for f in &fields {
            if c(&f["name"]) > 256 || c(&f["value"]) > 1024 || c(&f["value"]) == 0 {
                return Some("field name/value out of bounds".into());
            }
            total += c(&f["name"]) + c(&f["value"]);
        }
        total += c(&e["title"]) + c(&e["description"]) + c(&e["footer"]["text"]);
        if let Some(u) = e["url"].as_str() {
            if !u.starts_with("http") {
                return Some("url not well formed".into());
            }
            if !urls.insert(u.to_string()) {
                return Some("two embeds with one url would collapse".into());
            }
        }
    }
    (total > 6000).then(|| format!("embed text {total} over 6000"))
}

fn alert_ids(kind: Kind, body: &Value) -> Vec<String> {
    match kind {
        Kind::Discord => body["embeds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["footer"]["text"].as_str().and_then(id_after_alert))
            .collect(),
        Kind::Slack => body["blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "context")
            .filter_map(|b| b["elements"][0]["text"].as_str().and_then(id_after_alert))
            .collect(),
        Kind::Webhook => body["alert_id"]
            .as_str()
            .map(str::to_string)
            .into_iter()
            .collect(),
    }
}

/// What `kind` answers `reply` to a request: a webhook takes only POST, and Discord refuses a
/// message over its limits before anything else.
fn answer(kind: Kind, reply: Reply, seen: &Seen) -> Answer {
    if seen.method != Method::POST {
        return Answer::empty(405);
    }
    if kind == Kind::Discord
        && let Some(why) = discord_violation(&seen.body)
    {
        return Answer::json(
            400,
            json!({"message": "Invalid Form Body", "code": 50035, "errors": why}),
        );
    }
    match reply {
        Reply::Ok => match kind {
            Kind::Discord => Answer::json(200, json!({"id": "1", "embeds": seen.body["embeds"]})),
            Kind::Slack => Answer::text(200, "ok"),
            Kind::Webhook => Answer::empty(204),
        },
        Reply::OkButExhausted(reset) => answer(kind, Reply::Ok, seen)
            .header("x-ratelimit-remaining", 0)
            .header("x-ratelimit-reset-after", reset),
        Reply::TooMany(secs) => Answer::json(
            429,
            json!({"message": "You are being rate limited.", "retry_after": secs, "global": false}),
        )
        .header("retry-after", secs.ceil() as u64),
        Reply::Status(404) => Answer::json(404, json!({"message": "Unknown Webhook", "code": 10015})),
        Reply::Status(s) => Answer::json(s, json!({"message": format!("status {s}")})),
    }
}
