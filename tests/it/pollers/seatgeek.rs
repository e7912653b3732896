//! The SeatGeek poller against a local server answering with the documented shapes.

use std::time::{Duration, Instant};

use conscope::config::{BackoffConfig, SeatGeekConfig, Secret};
use conscope::sources::http::PollError;
use conscope::sources::poll::Poller;
use conscope::sources::seatgeek::SeatGeek;
use serde_json::{Value, json};

use super::fake_api::FakeApi;
use crate::fake_http::Answer;

const CLIENT_ID: &str = "sg-client-id-0123";
const CLIENT_SECRET: &str = "sg-client-secret-4567";

pub fn event(id: u64, stats: Value) -> Value {
    json!({
        "id": id, "type": "concert", "status": "normal", "title": format!("Show {id}"),
        "datetime_local": "2026-10-03T20:00:00", "datetime_utc": "2026-10-04T00:00:00",
        "datetime_tbd": false, "url": format!("https://seatgeek.com/e/{id}"),
        "venue": {"id": 1187, "name": "Kia Forum", "city": "Inglewood", "state": "CA"},
        "performers": [{"id": 88123, "name": "Phoebe Bridgers", "slug": "phoebe-bridgers", "primary": true}],
        "stats": stats,
    })
}

pub fn full_stats() -> Value {
    json!({"listing_count": 412, "lowest_price": 74, "median_price": 142,
           "average_price": 168, "highest_price": 1250, "lowest_price_good_deals": 81})
}

pub fn page(events: Vec<Value>, total: u64, page: u64, per_page: u64) -> Value {
    json!({"events": events, "meta": {"total": total, "took": 6, "page": page, "per_page": per_page}})
}

pub fn config(api: &FakeApi) -> SeatGeekConfig {
    SeatGeekConfig {
        enabled: true,
        base_url: api.base_url.clone(),
        client_id: Secret::new(CLIENT_ID),
        client_secret: Secret::new(CLIENT_SECRET),
        performer_slugs: vec!["phoebe-bridgers".into()],
        per_page: 2,
        interval: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        backoff: BackoffConfig {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            multiplier: 2.0,
            jitter: 0.0,
            deadline: Duration::from_secs(10),
        },
        ..SeatGeekConfig::default()
    }
}

fn ok_page() -> Answer {
    Answer::json(200, page(vec![event(1, full_stats())], 1, 1, 2))
}

fn assert_no_secret(text: &str) {
    assert!(
        !text.contains(CLIENT_ID) && !text.contains(CLIENT_SECRET),
        "a credential leaked: {text}"
    );
}

#[tokio::test]
async fn seatgeek_pages_until_meta_total_and_skips_null_and_missing_stats() {
    let mut no_stats = event(3, Value::Null);
    no_stats.as_object_mut().expect("object").remove("stats");
    let script = vec![
        Answer::json(
            200,
            page(vec![event(1, full_stats()), event(2, Value::Null)], 3, 1, 2),
        ),
        Answer::json(200, page(vec![no_stats], 3, 2, 2)),
    ];
    let api = FakeApi::start(script.clone()).await;
    let poller = SeatGeek::new(&config(&api)).expect("client");
    let poll = poller.poll_once().await.expect("poll");

    let got: Vec<_> = poll
        .events
        .iter()
        .map(|e| (e.listing_key().to_string(), e.price))
        .collect();
    assert_eq!(
        got,
        [
            ("seatgeek:1:lowest_price".to_string(), 7_400),
            ("seatgeek:1:median_price".to_string(), 14_200),
            ("seatgeek:1:average_price".to_string(), 16_800),
            ("seatgeek:1:highest_price".to_string(), 125_000),
        ]
    );
    let e = &poll.events[0];
    assert_eq!(e.source(), "seatgeek");
    assert_eq!(e.event_id(), "seatgeek_1");
    assert_eq!(e.event_name(), "Show 1");
    assert_eq!(e.venue(), "Kia Forum");
    assert_eq!(e.listing_url(), Some("https://seatgeek.com/e/1"));
    assert_eq!(e.seller_notes(), Some("listing_count=412"));
    assert_eq!(poll.skipped, 2, "null stats and missing stats are both counted");
    assert_eq!(poll.requests, 2);

    let seen = api.seen();
    assert_eq!(seen.len(), 2, "stops at meta.total: {seen:?}");
    for (i, request) in seen.iter().enumerate() {
        assert_eq!(request.path, "/2/events");
        let q = &request.query;
        assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
        assert_eq!(q.get("client_secret").map(String::as_str), Some(CLIENT_SECRET));
        assert_eq!(
            q.get("performers.slug").map(String::as_str),
            Some("phoebe-bridgers")
        );
        assert_eq!(q.get("per_page").map(String::as_str), Some("2"));
        assert_eq!(q.get("page"), Some(&(i + 1).to_string()));
    }

    // Polling again with unchanged prices gives the same keys and prices.
    api.rescript(script);
    let again = poller.poll_once().await.expect("second poll");
    let got_again: Vec<_> = again
        .events
        .iter()
        .map(|e| (e.listing_key().to_string(), e.price))
        .collect();
    assert_eq!(got_again, got);
}

#[tokio::test]
async fn seatgeek_waits_out_429_for_its_retry_after() {
    let api = FakeApi::start(vec![
        Answer::json(429, json!({"status": 429, "message": "slow down"})).header("retry-after", 1),
        ok_page(),
    ])
    .await;
    let poll = SeatGeek::new(&config(&api))
        .expect("client")
        .poll_once()
        .await
        .expect("poll after the wait");
    assert_eq!(poll.events.len(), 4);
    assert_eq!(poll.requests, 2);
    let gaps = api.gaps();
    // The backoff alone would wait 20 ms: the server's one second was honoured.
    assert!(
        gaps[0] >= Duration::from_millis(990) && gaps[0] < Duration::from_secs(3),
        "{gaps:?}"
    );
}

#[tokio::test]
async fn seatgeek_retries_500_and_403_with_the_backoff() {
    let api = FakeApi::start(vec![
        Answer::json(500, "{}"),
        Answer::json(403, json!({"message": "forbidden"})),
        ok_page(),
    ])
    .await;
    let poll = SeatGeek::new(&config(&api))
        .expect("client")
        .poll_once()
        .await
        .expect("poll after retries");
    assert_eq!(poll.events.len(), 4);
    assert_eq!(poll.requests, 3);
    let gaps = api.gaps();
    assert!(
        gaps[0] >= Duration::from_millis(20) && gaps[1] >= Duration::from_millis(40),
        "backoff 20 ms then 40 ms: {gaps:?}"
    );
}

#[tokio::test]
async fn seatgeek_answer_slower_than_the_timeout_is_abandoned_and_retried() {
    let api = FakeApi::start(vec![ok_page().slow(Duration::from_secs(5)), ok_page()]).await;
    let mut cfg = config(&api);
    cfg.request_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let poll = SeatGeek::new(&cfg)
        .expect("client")
        .poll_once()
        .await
        .expect("poll after the timeout");
    let took = started.elapsed();
    assert_eq!(poll.events.len(), 4);
    assert_eq!(poll.requests, 2);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "took {took:?}"
    );
}

#[tokio::test]
async fn seatgeek_gives_up_at_the_backoff_deadline_without_showing_credentials() {
    let api = FakeApi::start(vec![Answer::json(
        503,
        format!("upstream rejected client_id={CLIENT_ID}"),
    )])
    .await;
    let mut cfg = config(&api);
    cfg.backoff.deadline = Duration::from_millis(200);
    let err = SeatGeek::new(&cfg)
        .expect("client")
        .poll_once()
        .await
        .expect_err("gives up");
    assert!(matches!(err, PollError::GaveUp { .. }), "{err:?}");
    assert!(!err.is_fatal());
    let text = conscope::logging::chain(&err).to_string();
    assert!(text.contains("HTTP 503"), "{text}");
    assert_no_secret(&text);
    assert_no_secret(&format!("{err:?}"));
}

#[tokio::test]
async fn seatgeek_malformed_json_fails_the_poll_once() {
    let api = FakeApi::start(vec![Answer::json(200, "{\"events\": [{\"id\": 1,")]).await;
    let err = SeatGeek::new(&config(&api))
        .expect("client")
        .poll_once()
        .await
        .expect_err("malformed");
    assert!(matches!(err, PollError::Decode { .. }), "{err:?}");
    assert!(!err.is_fatal(), "the next poll tries again");
    assert_eq!(api.seen().len(), 1, "a malformed answer is not retried at once");
}

#[tokio::test]
async fn seatgeek_refused_client_id_is_fatal_and_named() {
    let api = FakeApi::start(vec![Answer::json(401, json!({"message": "invalid client_id"}))]).await;
    let err = SeatGeek::new(&config(&api))
        .expect("client")
        .poll_once()
        .await
        .expect_err("refused");
    assert!(err.is_fatal(), "{err:?}");
    let text = conscope::logging::chain(&err).to_string();
    assert!(text.contains("sources.seatgeek.client_id"), "{text}");
    assert_no_secret(&text);
    assert_eq!(api.seen().len(), 1);
}

#[tokio::test]
async fn seatgeek_unreachable_server_error_hides_the_url() {
    // Bind and drop a port so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut cfg = SeatGeekConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        ..config(&FakeApi::start(vec![ok_page()]).await)
    };
    cfg.backoff.deadline = Duration::from_millis(100);
    let err = SeatGeek::new(&cfg)
        .expect("client")
        .poll_once()
        .await
        .expect_err("nothing listens");
    let text = conscope::logging::chain(&err).to_string();
    assert!(text.contains("request failed"), "{text}");
    assert!(!text.contains("client_id="), "{text}");
    assert_no_secret(&text);
}
