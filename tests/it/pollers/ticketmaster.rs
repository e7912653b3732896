//! The Ticketmaster poller against a local server answering with the documented shapes.

use std::time::Duration;

use conscope::config::{BackoffConfig, Secret, TicketmasterConfig};
use conscope::sources::http::PollError;
use conscope::sources::poll::Poller;
use conscope::sources::ticketmaster::Ticketmaster;
use serde_json::{Value, json};

use super::fake_api::FakeApi;
use crate::fake_http::Answer;

const API_KEY: &str = "tm-api-key-89ab";

fn event(id: &str, price_ranges: Option<Value>) -> Value {
    let mut e = json!({
        "name": format!("Show {id}"), "id": id, "url": format!("https://www.ticketmaster.com/event/{id}"),
        "dates": {"start": {"localDate": "2026-10-03", "localTime": "20:00:00", "dateTime": "2026-10-04T03:00:00Z"},
                  "timezone": "America/Los_Angeles", "status": {"code": "onsale"}},
        "_embedded": {"venues": [{"id": "KovZpZAEdFtJ", "name": "Kia Forum", "city": {"name": "Inglewood"}}]},
    });
    if let Some(ranges) = price_ranges {
        e["priceRanges"] = ranges;
    }
    e
}

fn standard() -> Option<Value> {
    Some(json!([{"type": "standard", "currency": "USD", "min": 59.5, "max": 189.5}]))
}

fn page(events: Vec<Value>, number: u32, total_pages: u32) -> Value {
    json!({"_embedded": {"events": events},
           "page": {"size": 2, "totalElements": 3, "totalPages": total_pages, "number": number}})
}

fn config(api: &FakeApi) -> TicketmasterConfig {
    TicketmasterConfig {
        enabled: true,
        base_url: api.base_url.clone(),
        api_key: Secret::new(API_KEY),
        keywords: vec!["phoebe bridgers".into()],
        page_size: 2,
        interval: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        requests_per_second: 1_000.0,
        backoff: BackoffConfig {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            multiplier: 2.0,
            jitter: 0.0,
            deadline: Duration::from_secs(10),
        },
        ..TicketmasterConfig::default()
    }
}

fn ok_page() -> Answer {
    Answer::json(200, page(vec![event("A1", standard())], 0, 1))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn ticketmaster_pages_from_zero_and_skips_events_without_price_ranges() {
    let api = FakeApi::start(vec![
        Answer::json(200, page(vec![event("A1", standard()), event("B2", None)], 0, 2)),
        Answer::json(
            200,
            page(
                vec![event(
                    "C3",
                    Some(json!([{"type": "resale", "currency": "EUR", "min": "80", "max": null}])),
                )],
                1,
                2,
            ),
        ),
    ])
    .await;
    let poll = Ticketmaster::new(&config(&api))
        .expect("client")
        .poll_once()
        .await
        .expect("poll");
    let got: Vec<_> = poll
        .events
        .iter()
        .map(|e| (e.listing_key().to_string(), e.price))
        .collect();
    assert_eq!(
        got,
        [
            ("ticketmaster:A1:standard_min".to_string(), 5_950),
            ("ticketmaster:A1:standard_max".to_string(), 18_950),
            ("ticketmaster:C3:resale_min".to_string(), 8_000),
        ]
    );
    let e = &poll.events[0];
    assert_eq!(
        (e.source(), e.event_id(), e.venue()),
        ("ticketmaster", "ticketmaster_A1", "Kia Forum")
    );
    assert_eq!(poll.events[2].seller_notes(), Some("currency=EUR"));
    assert_eq!(poll.skipped, 1, "B2 has no priceRanges");
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    for (i, request) in seen.iter().enumerate() {
        assert_eq!(request.path, "/discovery/v2/events.json");
        let q = &request.query;
        assert_eq!(q.get("apikey").map(String::as_str), Some(API_KEY));
        assert_eq!(q.get("keyword").map(String::as_str), Some("phoebe bridgers"));
        assert_eq!(q.get("size").map(String::as_str), Some("2"));
        assert_eq!(q.get("page"), Some(&i.to_string()));
    }
}

#[tokio::test]
async fn ticketmaster_stops_paging_at_the_deep_paging_limit() {
    // Every page claims 50 pages; with size 200 only pages 0..=4 are below 1000 items.
    let api = FakeApi::start(vec![Answer::json(
        200,
        json!({"_embedded": {"events": [event("A1", standard())]},
               "page": {"size": 200, "totalElements": 10000, "totalPages": 50, "number": 0}}),
    )])
    .await;
    let cfg = TicketmasterConfig {
        page_size: 200,
        ..config(&api)
    };
    let poll = Ticketmaster::new(&cfg)
        .expect("client")
        .poll_once()
        .await
        .expect("poll");
    let pages: Vec<_> = api
        .seen()
        .iter()
        .map(|s| s.query.get("page").cloned().unwrap_or_default())
        .collect();
    assert_eq!(pages, ["0", "1", "2", "3", "4"]);
    assert_eq!(
        poll.events.len(),
        2,
        "one event seen on every page is reported once"
    );
}

#[tokio::test]
async fn ticketmaster_quota_violation_waits_until_the_reset() {
    let violation = json!({"fault": {"faultstring": "Rate limit quota violation. Quota limit exceeded.",
                                     "detail": {"errorcode": "policies.ratelimit.QuotaViolation"}}});
    let api = FakeApi::start(vec![
        Answer::json(429, violation)
            .header("rate-limit", 5000)
            .header("rate-limit-available", 0)
            .header("rate-limit-over", 1)
            .header("rate-limit-reset", now_ms() + 1_200),
        ok_page(),
    ])
    .await;
    let poll = Ticketmaster::new(&config(&api))
        .expect("client")
        .poll_once()
        .await
        .expect("poll after the reset");
    assert_eq!(poll.events.len(), 2);
    let gaps = api.gaps();
    assert!(
        gaps[0] >= Duration::from_millis(1_000) && gaps[0] < Duration::from_secs(3),
        "waited for Rate-Limit-Reset: {gaps:?}"
    );
}

#[tokio::test]
async fn ticketmaster_429_with_retry_after_and_500_are_retried() {
    let api = FakeApi::start(vec![
        Answer::json(429, json!({"fault": {"faultstring": "Spike arrest violation"}}))
            .header("retry-after", 1),
        Answer::json(500, "{}"),
        ok_page(),
    ])
    .await;
    let poll = Ticketmaster::new(&config(&api))
        .expect("client")
        .poll_once()
        .await
        .expect("poll after retries");
    assert_eq!(poll.events.len(), 2);
    assert_eq!(poll.requests, 3);
    let gaps = api.gaps();
    assert!(
        gaps[0] >= Duration::from_millis(990),
        "Retry-After honoured: {gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(40),
        "backoff after the 500: {gaps:?}"
    );
}

#[tokio::test]
async fn ticketmaster_no_calls_available_blocks_the_next_poll_until_the_reset() {
    let api = FakeApi::start(vec![
        ok_page()
            .header("rate-limit-available", 0)
            .header("rate-limit-reset", now_ms() + 1_000),
        ok_page(),
    ])
    .await;
    let poller = Ticketmaster::new(&config(&api)).expect("client");
    poller.poll_once().await.expect("first poll");
    poller.poll_once().await.expect("second poll");
    let gaps = api.gaps();
    assert!(gaps[0] >= Duration::from_millis(800), "{gaps:?}");
}

#[tokio::test]
async fn ticketmaster_calls_keep_to_the_per_second_budget() {
    let api = FakeApi::start(vec![ok_page()]).await;
    let cfg = TicketmasterConfig {
        requests_per_second: 4.0,
        keywords: vec!["a".into(), "b".into(), "c".into()],
        ..config(&api)
    };
    let poller = Ticketmaster::new(&cfg).expect("client");
    poller.poll_once().await.expect("poll");
    let gaps = api.gaps();
    assert_eq!(gaps.len(), 2);
    for gap in gaps {
        assert!(gap >= Duration::from_millis(240), "4 calls a second: {gap:?}");
    }
    assert_eq!(poller.quota().used_today(), 3);
}

#[tokio::test]
async fn ticketmaster_slow_answer_times_out_and_malformed_json_fails() {
    let api = FakeApi::start(vec![
        ok_page().slow(Duration::from_secs(5)),
        Answer::json(200, "<html>not json</html>"),
    ])
    .await;
    let mut cfg = config(&api);
    cfg.request_timeout = Duration::from_millis(300);
    let err = Ticketmaster::new(&cfg)
        .expect("client")
        .poll_once()
        .await
        .expect_err("malformed after the timeout");
    assert!(matches!(err, PollError::Decode { .. }), "{err:?}");
    assert_eq!(api.seen().len(), 2, "the timed-out call was retried once");
}

#[tokio::test]
async fn ticketmaster_invalid_api_key_is_fatal_without_retry() {
    let api = FakeApi::start(vec![Answer::json(
        401,
        json!({"fault": {"faultstring": "Invalid ApiKey", "detail": {"errorcode": "oauth.v2.InvalidApiKey"}}}),
    )])
    .await;
    let err = Ticketmaster::new(&config(&api))
        .expect("client")
        .poll_once()
        .await
        .expect_err("refused");
    assert!(err.is_fatal(), "{err:?}");
    let text = conscope::logging::chain(&err).to_string();
    assert!(
        text.contains("oauth.v2.InvalidApiKey") && text.contains("sources.ticketmaster.api_key"),
        "{text}"
    );
    assert!(!text.contains(API_KEY), "{text}");
    assert_eq!(api.seen().len(), 1);
}
