//! The JSON API over known rows: every answer checked against hand-computed numbers, bad
//! requests answered with 4xx JSON errors, and writes refused without the bearer token.

use serde_json::{Value, json};

use super::{App, close, seed};

#[tokio::test]
async fn api_serves_events_stats_prices_alerts_and_windows_from_postgres() {
    let app = App::start("").await;
    seed(&app.db).await;

    let (status, events) = app.get("/api/events").await;
    assert_eq!(status, 200, "{events}");
    let ids: Vec<&str> = events
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert_eq!(ids, ["ev_alpha", "ev_beta", "ev_gamma"]);
    assert_eq!(events[0]["listings"], 2);
    assert_eq!(events[0]["observations"], 2016);
    assert!(close(&events[0]["min_price"], 100.0) && close(&events[0]["max_price"], 200.0));
    assert_eq!(events[2]["listings"], 0);
    assert!(events[2]["min_price"].is_null());

    let (status, stats) = app.get("/api/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["events"], 3);
    assert_eq!(stats["listings"], 3);
    assert_eq!(stats["observations"], 2016 + 10);
    assert!(close(&stats["mean_price"], 350.0 / 3.0), "{stats}");
    assert!(close(&stats["min_price"], 50.0) && close(&stats["max_price"], 200.0));
    let c = app.db.connect().await.expect("connect");
    let today: i64 = c
        .query_one(
            "SELECT count(*) FROM price_alerts WHERE alert_type = 'price_drop'
                AND alert_timestamp >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(stats["drops_today"], today);
    let (_, alpha) = app.get("/api/stats?event_id=ev_alpha").await;
    assert_eq!(
        (alpha["events"].clone(), alpha["listings"].clone()),
        (json!(1), json!(2))
    );
    assert!(close(&alpha["mean_price"], 150.0), "{alpha}");

    for (range, per_listing, markers) in [("6h", 36, 2), ("24h", 144, 2), ("7d", 1008, 3)] {
        let (status, p) = app
            .get(&format!("/api/events/ev_alpha/prices?range={range}"))
            .await;
        assert_eq!(status, 200, "{p}");
        assert_eq!(p["range"], range);
        assert_eq!(p["observations"], 2 * per_listing, "{range}");
        let buckets = p["buckets"].as_array().expect("buckets");
        let summed: i64 = buckets.iter().filter_map(|b| b["observations"].as_i64()).sum();
        assert_eq!(summed, 2 * per_listing);
        assert!(buckets.len() <= 145, "{range}: {} buckets", buckets.len());
        assert_eq!(p["drops"].as_array().expect("drops").len(), markers, "{range}");
        assert_eq!(p["drops"][0]["alert_id"], "al1", "newest first");
        // $100..$140 and $200: eleven $10 bins from $100 to $210.
        let d = &p["distribution"];
        assert!(close(&d["lo"], 100.0) && close(&d["hi"], 210.0), "{d}");
        assert!(close(&d["bin_width"], 10.0), "{d}");
        let counts: Vec<i64> = d["counts"]
            .as_array()
            .expect("counts")
            .iter()
            .filter_map(Value::as_i64)
            .collect();
        assert_eq!(counts.len(), 11);
        assert_eq!(counts.iter().sum::<i64>(), 2 * per_listing);
        assert_eq!(counts[10], per_listing, "a2 at $200");
        // a1 is at $100, $110, $120, $130 and $140: the first five bins; nothing in between.
        assert_eq!(counts[..5].iter().sum::<i64>(), per_listing, "a1");
        assert!(counts[5..10].iter().all(|n| *n == 0), "{counts:?}");
    }

    let (status, alerts) = app.get("/api/alerts").await;
    assert_eq!(status, 200, "{alerts}");
    let ids: Vec<&str> = alerts
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["alert_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        ["al1", "al2", "bl1", "al3"],
        "the last 24 hours, newest first"
    );
    assert_eq!(alerts[0]["event_name"], "Alpha Tour");
    assert!(close(&alerts[0]["old_price"], 140.0) && close(&alerts[0]["new_price"], 100.0));
    let (_, week) = app.get("/api/alerts?since=7d").await;
    assert_eq!(week.as_array().map(Vec::len), Some(5));
    let (_, beta) = app
        .get("/api/alerts?event_id=ev_beta&since=2026-01-01T00:00:00Z")
        .await;
    assert_eq!(beta.as_array().map(Vec::len), Some(1));
    let (_, limited) = app.get("/api/alerts?since=7d&limit=2").await;
    assert_eq!(limited.as_array().map(Vec::len), Some(2));

    let (status, windows) = app.get("/api/events/ev_alpha/windows").await;
    assert_eq!(status, 200, "{windows}");
    assert_eq!(windows.as_array().map(Vec::len), Some(3));
    let (_, five) = app.get("/api/events/ev_alpha/windows?width=300").await;
    assert_eq!(five.as_array().map(Vec::len), Some(2));
    assert!(
        close(&five[1]["mean_price"], 155.0) && five[1]["drops"] == 1,
        "{five}"
    );
    let (_, none) = app.get("/api/events/ev_gamma/windows").await;
    assert_eq!(none, json!([]));
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_json_error_and_never_a_500() {
    let app = App::start("tok-bad-requests").await;
    seed(&app.db).await;
    let auth = "Bearer tok-bad-requests";
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            app.http.get(format!("{}/api/events/nope/prices", app.base)),
            404,
            "no event with id \"nope\"",
        ),
        (
            app.http.get(format!("{}/api/events/nope/windows", app.base)),
            404,
            "no event",
        ),
        (
            app.http.get(format!("{}/api/stats?event_id=nope", app.base)),
            404,
            "no event",
        ),
        (
            app.http.get(format!("{}/api/alerts?event_id=nope", app.base)),
            404,
            "no event",
        ),
        (
            app.http
                .get(format!("{}/api/events/ev_alpha/prices?range=5h", app.base)),
            400,
            "range must be one of",
        ),
        (
            app.http
                .get(format!("{}/api/events/ev_alpha/windows?width=0", app.base)),
            400,
            "width",
        ),
        (
            app.http.get(format!("{}/api/alerts?since=yesterday", app.base)),
            400,
            "since must be",
        ),
        (
            app.http
                .get(format!("{}/api/alerts?since=2099-01-01T00:00:00Z", app.base)),
            400,
            "future",
        ),
        (
            app.http.get(format!("{}/api/events?limit=0", app.base)),
            400,
            "limit",
        ),
        (
            app.http.get(format!("{}/api/events?limit=many", app.base)),
            400,
            "bad query string",
        ),
        (
            app.http.get(format!("{}/api/events?colour=red", app.base)),
            400,
            "unknown field",
        ),
        (
            app.http.get(format!("{}/no/such/page", app.base)),
            404,
            "no such page",
        ),
        (
            app.http.put(format!("{}/api/events", app.base)),
            405,
            "method not allowed",
        ),
        (
            app.http
                .post(format!("{}/api/watches", app.base))
                .header("authorization", auth)
                .body("{\"trigger_type\": "),
            400,
            "malformed JSON",
        ),
        (
            app.http
                .post(format!("{}/api/watches", app.base))
                .header("authorization", auth)
                .json(&json!({"trigger_type": "at_or_below", "event_id": "ev_alpha"})),
            400,
            "missing field `channel`",
        ),
        (
            app.http
                .post(format!("{}/api/watches", app.base))
                .header("authorization", auth)
                .json(&json!({"trigger_type": "drop_percent", "channel": "discord", "event_id": "ev_alpha"})),
            400,
            "drop_percent: required when trigger_type is drop_percent",
        ),
        (
            app.http
                .delete(format!("{}/api/watches/abc", app.base))
                .header("authorization", auth),
            400,
            "positive whole number",
        ),
    ];
    for (req, want, text) in cases {
        let (status, body) = app.send(req).await;
        let message = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {body}"));
        assert_eq!(status, want, "{message}");
        assert!(message.contains(text), "{message:?} should contain {text:?}");
        assert!(!message.contains("tok-bad-requests"), "{message}");
    }
    app.stop().await;
}

#[tokio::test]
async fn watch_writes_need_the_configured_bearer_token() {
    let app = App::start("tok-123").await;
    seed(&app.db).await;
    let url = format!("{}/api/watches", app.base);
    let body = json!({
        "trigger_type": "at_or_below", "channel": "discord", "event_id": "ev_alpha",
        "target_price": 120.5, "section": "112"
    });
    let (status, err) = app.send(app.http.post(&url).json(&body)).await;
    assert_eq!(status, 401, "{err}");
    let (status, _) = app
        .send(app.http.post(&url).bearer_auth("tok-12").json(&body))
        .await;
    assert_eq!(status, 401);
    assert_eq!(app.db.count("SELECT count(*) FROM watches").await, 0);

    let (status, created) = app
        .send(app.http.post(&url).bearer_auth("tok-123").json(&body))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().expect("id");
    assert!(close(&created["target_price"], 120.5), "{created}");
    assert_eq!(created["cooldown_seconds"], 21_600);
    let (_, list) = app.get("/api/watches").await;
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["trigger_type"], "at_or_below");

    let one = format!("{url}/{id}");
    let (status, _) = app.send(app.http.delete(&one)).await;
    assert_eq!(status, 401);
    let (status, deleted) = app.send(app.http.delete(&one).bearer_auth("tok-123")).await;
    assert_eq!((status, deleted), (200, json!({ "deleted": id })));
    let (status, _) = app.send(app.http.delete(&one).bearer_auth("tok-123")).await;
    assert_eq!(status, 404);
    app.stop().await;

    // No token configured: writes are refused whatever the client sends.
    let open = App::start("").await;
    let url = format!("{}/api/watches", open.base);
    let (status, err) = open.send(open.http.post(&url).bearer_auth("").json(&body)).await;
    assert_eq!(status, 403, "{err}");
    let (status, _) = open
        .send(open.http.delete(format!("{url}/1")).bearer_auth("anything"))
        .await;
    assert_eq!(status, 403);
    assert_eq!(open.db.count("SELECT count(*) FROM watches").await, 0);
    open.stop().await;
}
