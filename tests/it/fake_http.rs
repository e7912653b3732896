//! One local HTTP server standing in for every service ConScope calls. The marketplace APIs
//! (`pollers/fake_api.rs`) and the notifiers (`alerting/fake.rs`) are thin layers on it: each
//! says what its script items are and how one becomes an [`Answer`] for a request.
//!
//! What the core does, once for both: bind 127.0.0.1:0 and take any method and path; answer
//! from a script (the last item repeats); record every request as it arrives (time, method,
//! path, query, headers, JSON body) with the status it is answered; wait an answer's delay (a
//! slow server); and, on [`FakeHttp::hold_next`], hold an answer until [`FakeHttp::release`],
//! the request already recorded, as a notifier that posted a message before answering.
//!
//! Why not `wiremock`: its `Respond::respond(&self, &Request) -> ResponseTemplate` is
//! synchronous and a template's delay is a fixed duration, so an answer cannot wait for the test
//! to release it. Blocking inside `respond` stalls the server, which runs on one current-thread
//! runtime, and with it the retry the held-answer tests need answered while the first request is
//! still held. Its request log does not say which status each request got, and the per-alert
//! delivery counts are counts of 2xx answers. What we would still write on top (scripts that
//! depend on the request, alert ids, Discord's limits) is most of this code, and axum is already
//! a dependency.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::Value;

/// One answer: status, headers and body, sent after `delay`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Wait this long before answering (a slow server).
    pub delay: Duration,
}

impl Answer {
    /// A status with no body.
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        }
    }

    /// A JSON body; `body` goes out as written, so it may be malformed on purpose.
    pub fn json(status: u16, body: impl ToString) -> Self {
        Self {
            body: body.to_string(),
            ..Self::empty(status)
        }
        .header("content-type", "application/json")
    }

    pub fn text(status: u16, body: impl ToString) -> Self {
        Self {
            body: body.to_string(),
            ..Self::empty(status)
        }
        .header("content-type", "text/plain; charset=utf-8")
    }

    /// `name` must be lowercase.
    pub fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request as the server saw it, and the status it was answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub headers: HeaderMap,
    /// The body as JSON; `Null` when empty or not JSON.
    pub body: Value,
    pub status: u16,
}

type Respond<R> = dyn Fn(R, &Seen) -> Answer + Send + Sync;

/// Shared by the test (scripts, reads the log) and the server's request tasks; every lock is
/// taken for a push, pop or copy and never held across an `.await`.
struct Inner<R> {
    /// Items still to answer with, in order; the last one repeats.
    script: Mutex<VecDeque<R>>,
    respond: Box<Respond<R>>,
    seen: Mutex<Vec<Seen>>,
    /// How many of the next requests to hold.
    to_hold: Mutex<u32>,
    held: Mutex<Vec<Seen>>,
    /// Bumped by `release`; a held answer waits for the next bump.
    released: tokio::sync::watch::Sender<u64>,
}

/// A running fake server on 127.0.0.1, answering from a script of `R`.
#[derive(Clone)]
pub struct FakeHttp<R> {
    pub base_url: String,
    inner: Arc<Inner<R>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<R: Clone + Send + 'static> FakeHttp<R> {
    /// Serve `script` in order, the last item for every later request, each turned into an
    /// answer by `respond`.
    pub async fn serve(script: Vec<R>, respond: impl Fn(R, &Seen) -> Answer + Send + Sync + 'static) -> Self {
        assert!(!script.is_empty(), "a fake server needs at least one answer");
        let inner = Arc::new(Inner {
            script: Mutex::new(script.into()),
            respond: Box::new(respond),
            seen: Mutex::default(),
            to_hold: Mutex::new(0),
            held: Mutex::default(),
            released: tokio::sync::watch::Sender::new(0),
        });
        let app = Router::new().fallback(handle::<R>).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}"),
            inner,
        }
    }

    /// Answer from `script` from now on (the last item repeats).
    pub fn rescript(&self, script: Vec<R>) {
        assert!(!script.is_empty(), "a fake server needs at least one answer");
        *lock(&self.inner.script) = script.into();
    }

    /// Answer the next requests with `items`, in order, then with the repeating last item.
    pub fn script(&self, items: impl IntoIterator<Item = R>) {
        let mut script = lock(&self.inner.script);
        let last = script.pop_back().expect("script is never empty");
        script.extend(items);
        script.push_back(last);
    }

    /// Answer with `item` once the scripted items are used up.
    pub fn set_default(&self, item: R) {
        *lock(&self.inner.script)
            .back_mut()
            .expect("script is never empty") = item;
    }

    /// Take the next request, record it, and hold its answer until [`Self::release`].
    pub fn hold_next(&self) {
        *lock(&self.inner.to_hold) += 1;
    }

    /// Every request taken and held so far, released or not.
    pub fn held(&self) -> Vec<Seen> {
        lock(&self.inner.held).clone()
    }

    /// Let every answer held so far go.
    pub fn release(&self) {
        self.inner.released.send_modify(|n| *n += 1);
    }

    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.inner.seen).clone()
    }

    /// Time between consecutive requests, as measured by the server.
    pub fn gaps(&self) -> Vec<Duration> {
        self.seen()
            .windows(2)
            .map(|w| w[1].at.duration_since(w[0].at))
            .collect()
    }
}

impl<R: Clone> Inner<R> {
    fn next(&self) -> R {
        let mut script = lock(&self.script);
        if script.len() > 1 {
            script.pop_front()
        } else {
            script.front().cloned()
        }
        .expect("script is never empty")
    }

    fn take_hold(&self) -> bool {
        let mut n = lock(&self.to_hold);
        let hold = *n > 0;
        *n = n.saturating_sub(1);
        hold
    }
}

async fn handle<R: Clone + Send + 'static>(
    State(inner): State<Arc<Inner<R>>>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut seen = Seen {
        at: Instant::now(),
        method,
        path: uri.path().to_string(),
        query,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status: 0,
    };
    let answer = (inner.respond)(inner.next(), &seen);
    seen.status = answer.status;
    // Subscribe before the request shows as held, so a release from then on lets it go.
    let mut released = inner.take_hold().then(|| inner.released.subscribe());
    lock(&inner.seen).push(seen.clone());
    if let Some(released) = released.as_mut() {
        lock(&inner.held).push(seen);
        let _ = released.changed().await;
    }
    tokio::time::sleep(answer.delay).await;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() = StatusCode::from_u16(answer.status).expect("status");
    for (name, value) in answer.headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}
