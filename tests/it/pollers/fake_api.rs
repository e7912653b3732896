//! A local HTTP server standing in for a marketplace API: it answers from a script of canned
//! answers (the last one repeats) and records when each request came and what it asked.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One canned answer.
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Wait this long before answering (a slow server).
    pub delay: Duration,
}

impl Canned {
    pub fn json(status: u16, body: impl ToString) -> Self {
        Self {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl ToString) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub path: String,
    pub query: HashMap<String, String>,
}

#[derive(Debug, Default)]
struct Inner {
    script: Mutex<VecDeque<Canned>>,
    seen: Mutex<Vec<Seen>>,
}

/// A running fake API on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct FakeApi {
    pub base_url: String,
    inner: Arc<Inner>,
}

impl FakeApi {
    /// Serve `script` in order; the last answer repeats for every later request.
    pub async fn start(script: Vec<Canned>) -> Self {
        assert!(!script.is_empty(), "a fake API needs at least one answer");
        let inner = Arc::new(Inner {
            script: Mutex::new(script.into()),
            seen: Mutex::default(),
        });
        let app = Router::new().fallback(answer).with_state(inner.clone());
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

    /// Answer from `script` from now on.
    pub fn rescript(&self, script: Vec<Canned>) {
        assert!(!script.is_empty(), "a fake API needs at least one answer");
        *self.inner.script.lock().expect("script lock") = script.into();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().expect("seen lock").clone()
    }

    /// Time between consecutive requests, as measured by the server.
    pub fn gaps(&self) -> Vec<Duration> {
        self.seen()
            .windows(2)
            .map(|w| w[1].at.duration_since(w[0].at))
            .collect()
    }
}

async fn answer(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    inner.seen.lock().expect("seen lock").push(Seen {
        at: Instant::now(),
        path: uri.path().to_string(),
        query,
    });
    let canned = {
        let mut script = inner.script.lock().expect("script lock");
        if script.len() > 1 {
            script.pop_front()
        } else {
            script.front().cloned()
        }
    }
    .expect("script is never empty");
    tokio::time::sleep(canned.delay).await;
    let mut response = (StatusCode::from_u16(canned.status).expect("status"), canned.body).into_response();
    for (name, value) in canned.headers {
        response.headers_mut().insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}
