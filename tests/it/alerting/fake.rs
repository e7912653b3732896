//! Local HTTP servers that behave like a Discord webhook, a Slack incoming webhook and a generic
//! JSON endpoint: they check what Discord checks (embed limits, `?wait=true`), answer as scripted
//! (2xx, 429 with `retry_after`, 5xx, 404, rate-limit headers) and record every request with the
//! alert ids it carried, so tests count deliveries per alert id as the server saw them.
//!
//! `hold_next` makes the server take the next request (recorded as accepted, as a real
//! notifier posts a message before answering) and hold its answer until `release`: a test can
//! kill ConScope exactly between the notifier accepting a message and ConScope recording it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Discord,
    Slack,
    Webhook,
}

/// One scripted answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Ok,
    Status(u16),
    /// 429 with `retry_after` (seconds) in the body (Discord) and a `Retry-After` header.
    TooMany(f64),
    /// 2xx with `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset-After`.
    OkButExhausted(f64),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub status: u16,
    pub alert_ids: Vec<String>,
    pub body: Value,
    pub headers: HeaderMap,
    pub query: BTreeMap<String, String>,
}

struct Inner {
    kind: Kind,
    /// Requests still to hold before answering.
    to_hold: Mutex<u32>,
    /// Alert ids of the requests taken and held so far.
    held: Mutex<Vec<Vec<String>>>,
    /// Answers held wait for a permit.
    release: tokio::sync::Semaphore,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    hits: Mutex<Vec<Hit>>,
}

#[derive(Clone)]
pub struct Fake {
    inner: Arc<Inner>,
    pub addr: SocketAddr,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fake {
    pub async fn start(kind: Kind) -> Self {
        let inner = Arc::new(Inner {
            kind,
            to_hold: Mutex::new(0),
            held: Mutex::default(),
            release: tokio::sync::Semaphore::new(0),
            script: Mutex::default(),
            default: Mutex::new(Reply::Ok),
            hits: Mutex::default(),
        });
        let app = Router::new()
            .route("/{*path}", post(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, addr }
    }

    /// The webhook URL, with a token in its path like the real ones.
    pub fn url(&self) -> String {
        match self.inner.kind {
            Kind::Discord => format!("http://{}/api/webhooks/42/tok-discord-secret", self.addr),
            Kind::Slack => format!("http://{}/services/T0/B0/tok-slack-secret", self.addr),
            Kind::Webhook => format!("http://{}/hooks/tok-webhook-secret", self.addr),
        }
    }

    /// Answer the next requests with `replies`, in order, then with the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.inner.script).extend(replies);
    }

    pub fn set_default(&self, reply: Reply) {
        *lock(&self.inner.default) = reply;
    }

    /// Take the next request, record it as accepted, and hold its answer until [`Self::release`].
    pub fn hold_next(&self) {
        *lock(&self.inner.to_hold) += 1;
    }

    /// The alert ids of every request taken and held so far.
    pub fn held(&self) -> Vec<Vec<String>> {
        lock(&self.inner.held).clone()
    }

    /// Let every held answer go.
    pub fn release(&self) {
        self.inner.release.add_permits(1024);
    }

    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.inner.hits).clone()
    }

    /// How many times each alert id arrived in a request the server accepted (2xx).
    pub fn delivered(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for h in self.hits().iter().filter(|h| (200..300).contains(&h.status)) {
            for id in &h.alert_ids {
                *out.entry(id.clone()).or_insert(0) += 1;
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
                "{} of {n} alerts delivered within {within:?}; hits: {:?}",
                self.delivered().len(),
                self.hits()
                    .iter()
                    .map(|h| (h.status, h.alert_ids.len()))
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
    let mut urls = std::collections::HashSet::new();
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

async fn handle(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let scripted = lock(&inner.script).pop_front();
    let reply = scripted.unwrap_or_else(|| lock(&inner.default).clone());
    let mut extra: Vec<(&str, String)> = Vec::new();
    let (status, answer) = match reply {
        _ if inner.kind == Kind::Discord && discord_violation(&body).is_some() => (
            400,
            json!({"message": "Invalid Form Body", "code": 50035,
                   "errors": discord_violation(&body)}),
        ),
        Reply::Ok | Reply::OkButExhausted(_) => {
            if let Reply::OkButExhausted(reset) = reply {
                extra.push(("x-ratelimit-remaining", "0".into()));
                extra.push(("x-ratelimit-reset-after", format!("{reset}")));
            }
            match inner.kind {
                Kind::Discord => (200, json!({"id": "1", "embeds": body["embeds"]})),
                Kind::Slack => (200, Value::String("ok".into())),
                Kind::Webhook => (204, Value::Null),
            }
        }
        Reply::TooMany(secs) => {
            extra.push(("retry-after", format!("{}", secs.ceil() as u64)));
            (
                429,
                json!({"message": "You are being rate limited.", "retry_after": secs, "global": false}),
            )
        }
        Reply::Status(404) => (404, json!({"message": "Unknown Webhook", "code": 10015})),
        Reply::Status(s) => (s, json!({"message": format!("status {s}")})),
    };
    let ids = alert_ids(inner.kind, &body);
    lock(&inner.hits).push(Hit {
        at,
        status,
        alert_ids: ids.clone(),
        body,
        headers,
        query,
    });
    let hold = {
        let mut n = lock(&inner.to_hold);
        let hold = *n > 0;
        *n = n.saturating_sub(1);
        hold
    };
    if hold {
        lock(&inner.held).push(ids);
        let _ = inner.release.acquire().await;
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match answer {
        Value::Null => code.into_response(),
        Value::String(s) => (code, s).into_response(),
        v => (code, axum::Json(v)).into_response(),
    };
    for (k, v) in extra {
        if let Ok(v) = v.parse() {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}
