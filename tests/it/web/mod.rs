//! The web layer: the JSON API against a real Postgres filled with data ([`api`]), metrics,
//! health, binding and `conscope run` serving it ([`ops`]), and the dashboard in headless
//! Chromium ([`browser`]). This file holds what they share: an in-process server over a fresh
//! database, known seed rows, and waiting for a `conscope run` child to be ready.

mod api;
mod browser;
mod openapi;
mod ops;

use std::sync::Arc;
use std::time::{Duration, Instant};

use conscope::config::Secret;
use conscope::metrics::Metrics;
use conscope::web::{self, WebState};
use conscope::{kafka, store};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::harness::{self, Running, TestDb};

/// A web server in this process over a fresh database.
pub struct App {
    pub db: TestDb,
    pub base: String,
    pub metrics: Arc<Metrics>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), web::WebError>>,
    pub http: reqwest::Client,
}

impl App {
    pub async fn start(token: &str) -> Self {
        let db = TestDb::migrated().await.expect("db");
        let mut cfg = harness::config(&db, 1);
        cfg.web.listen = "127.0.0.1:0".into();
        cfg.web.api_token = Secret::new(token);
        let cfg = Arc::new(cfg);
        let pool = store::pool(&cfg.postgres).expect("pool");
        let client = kafka::connect(&cfg.kafka).await.expect("broker");
        let app = conscope::app::App::new(cfg.clone(), pool, client);
        let metrics = app.metrics.clone();
        let listener = web::bind(&cfg).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = WebState::new(app);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(web::serve_on(listener, state, cancel.clone()));
        Self {
            db,
            base: format!("http://{addr}"),
            metrics,
            cancel,
            task,
            http: reqwest::Client::new(),
        }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status {status}, {ctype}: body is not JSON ({e}): {text}"));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops when cancelled")
            .expect("server task");
        result.expect("clean stop");
    }
}

/// Three events with known numbers (see each assertion for the arithmetic).
pub async fn seed(db: &TestDb) {
    let c = db.connect().await.expect("connect");
    c.batch_execute(
        "INSERT INTO events (event_id, event_name, venue) VALUES
             ('ev_alpha', 'Alpha Tour', 'Arena One'),
             ('ev_beta', 'Beta Live', 'Hall Two'),
             ('ev_gamma', 'Gamma Night', 'Club Three');
         -- ev_alpha: listing a1 at 100..140 and a2 at 200, one observation each every 10 minutes
         -- for 7 days, the newest 5 minutes ago: 36 per listing in 6h, 144 in 24h, 1008 in 7d.
         INSERT INTO price_history (event_id, listing_key, source, price, total_price, \"timestamp\",
                                    change_kind, kafka_partition, kafka_offset)
         SELECT 'ev_alpha', 'mock:a' || l, 'mock', p, p, now() - make_interval(mins => k * 10 + 5),
                'unchanged', 0, l * 10000 + k
           FROM generate_series(1, 2) l, generate_series(0, 1007) k,
                LATERAL (SELECT CASE l WHEN 1 THEN 100 + (k % 5) * 10 ELSE 200 END AS p) x;
         INSERT INTO price_history (event_id, listing_key, source, price, total_price, \"timestamp\",
                                    change_kind, kafka_partition, kafka_offset)
         SELECT 'ev_beta', 'vivid:b1', 'vivid', 50, 50, now() - make_interval(mins => k * 5 + 1),
                'unchanged', 1, k
           FROM generate_series(0, 9) k;
         INSERT INTO listing_state (listing_key, event_id, source, last_price, lowest_price, first_seen,
                                    last_seen, observations) VALUES
             ('mock:a1', 'ev_alpha', 'mock', 100, 100, now() - interval '7 days', now(), 1008),
             ('mock:a2', 'ev_alpha', 'mock', 200, 200, now() - interval '7 days', now(), 1008),
             ('vivid:b1', 'ev_beta', 'vivid', 50, 50, now() - interval '1 hour', now(), 10);
         INSERT INTO price_alerts (alert_id, event_id, alert_type, rule, alert_timestamp, listing_key,
                                   old_price, new_price, drop_amount, drop_percent, source, listing_url,
                                   kafka_partition, kafka_offset, payload)
         VALUES
             ('al1', 'ev_alpha', 'price_drop', 'default', now() - interval '1 minute', 'mock:a1',
              140, 100, 40, 28.57, 'mock', 'https://tickets.example/a1', 0, 1, '{}'),
             ('al2', 'ev_alpha', 'price_increase', 'default', now() - interval '2 minutes', 'mock:a1',
              100, 140, -40, -40, 'mock', NULL, 0, 2, '{}'),
             ('al3', 'ev_alpha', 'price_drop', 'default', now() - interval '3 hours', 'mock:a1',
              130, 100, 30, 23.08, 'mock', 'javascript:alert(1)', 0, 3, '{}'),
             ('al4', 'ev_alpha', 'price_drop', 'default', now() - interval '3 days', 'mock:a1',
              120, 100, 20, 16.67, 'mock', NULL, 0, 4, '{}'),
             ('bl1', 'ev_beta', 'price_drop', 'default', now() - interval '30 minutes', 'vivid:b1',
              60, 50, 10, 16.67, 'vivid', NULL, 1, 1, '{}');
         INSERT INTO price_windows (event_id, source, width_seconds, window_start, window_end,
                                    observations, distinct_listings, min_price, max_price, sum_price,
                                    mean_price, first_price, last_price, drops)
         VALUES
             ('ev_alpha', 'mock', 300, now() - interval '10 minutes', now() - interval '5 minutes',
              2, 2, 100, 200, 300, 150, 100, 200, 0),
             ('ev_alpha', 'mock', 300, now() - interval '5 minutes', now(), 2, 2, 110, 200, 310, 155,
              110, 200, 1),
             ('ev_alpha', 'mock', 3600, now() - interval '1 hour', now(), 12, 2, 100, 200, 1800, 150,
              100, 200, 2);",
    )
    .await
    .expect("seed");
}

pub fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-6)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub async fn wait_ready(base: &str, run: &Running, within: Duration) {
    let started = Instant::now();
    loop {
        if let Ok(res) = reqwest::get(format!("{base}/health/ready")).await
            && res.status() == 200
        {
            return;
        }
        assert!(
            started.elapsed() < within,
            "conscope run did not become ready within {within:?}; logs:\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
