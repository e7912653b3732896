//! `src/web/openapi.json` held to the server: it describes exactly the routes the router
//! answers, and every answer of a real server over seeded rows matches the schema described for
//! its status and content type. Response objects are checked closed (a field the server sends
//! but the description does not name fails), so the description cannot fall behind the handlers.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;

use conscope::web::router;
use serde_json::{Value, json};

use super::{App, seed};

const DESCRIPTION: &str = include_str!("../../../src/web/openapi.json");

/// Routes of the dashboard itself (HTML, JS, CSS): served by the router, not part of the API.
const DASHBOARD: [&str; 3] = ["/", "/assets/app.js", "/assets/style.css"];

const OPERATIONS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn description() -> Value {
    serde_json::from_str(DESCRIPTION).expect("openapi.json is JSON")
}

/// Every (METHOD, path) the description has an operation for.
fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            OPERATIONS
                .iter()
                .filter(|op| item.get(**op).is_some())
                .map(|op| (op.to_uppercase(), path.clone()))
        })
        .collect()
}

#[test]
fn the_description_names_every_route_of_the_router_and_no_other() {
    let doc = description();
    let served: Vec<(String, String)> = router::routes()
        .into_iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    for page in DASHBOARD {
        assert!(
            served.iter().any(|(_, p)| p == page),
            "{page} is listed as a dashboard route but the router does not serve it"
        );
    }
    let api: BTreeSet<(String, String)> = served
        .into_iter()
        .filter(|(_, path)| !DASHBOARD.contains(&path.as_str()))
        .collect();
    let described = described(&doc);
    let undescribed: Vec<_> = api.difference(&described).collect();
    let unserved: Vec<_> = described.difference(&api).collect();
    assert!(
        undescribed.is_empty() && unserved.is_empty(),
        "served but not in openapi.json: {undescribed:?}; in openapi.json but not served: {unserved:?}"
    );
    for (method, _) in &api {
        assert!(
            ["GET", "POST", "PATCH", "DELETE"].contains(&method.as_str()),
            "unexpected method {method}"
        );
    }
}

/// The description's schema for `status` and `ctype` of one operation, with `$ref`s to responses
/// followed and the description's components attached so schema `$ref`s resolve.
fn response_schema(doc: &Value, method: &str, path: &str, status: u16, ctype: &str) -> Result<Value, String> {
    let op = &doc["paths"][path][method.to_lowercase()];
    if !op.is_object() {
        return Err("the operation is not described".into());
    }
    let mut response = &op["responses"][status.to_string()];
    if let Some(r) = response["$ref"].as_str() {
        let pointer = r.strip_prefix('#').expect("local $ref");
        response = doc.pointer(pointer).expect("$ref resolves");
    }
    let Some(content) = response["content"].as_object() else {
        return Err(format!("the description lists no {status} answer with content"));
    };
    let media = ctype.split(';').next().unwrap_or_default().trim();
    let Some(body) = content.get(media) else {
        let listed: Vec<_> = content.keys().collect();
        return Err(format!("answered {media}; the description lists {listed:?}"));
    };
    let mut schema = body["schema"].clone();
    schema["components"] = doc["components"].clone();
    close_objects(&mut schema);
    Ok(schema)
}

/// Every object schema that names its properties and says nothing of others refuses others.
fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// What in `body` does not match `schema`, one line per mismatch.
fn mismatches(schema: &Value, body: &Value) -> Vec<String> {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("a schema of openapi.json does not compile: {e}"));
    validator
        .iter_errors(body)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect()
}

/// Answers checked against the description; every mismatch is kept, so one run lists them all.
#[derive(Default)]
struct Checker {
    problems: Vec<String>,
}

impl Checker {
    /// Sends `req` and checks the answer against the description of `method` `path`.
    async fn check(
        &mut self,
        doc: &Value,
        method: &str,
        path: &str,
        req: reqwest::RequestBuilder,
    ) -> (u16, Value) {
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = res.text().await.expect("body");
        let what = format!("{method} {path} -> {status} {ctype}");
        let body = if ctype.starts_with("application/json") {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
        } else {
            Value::String(text)
        };
        match response_schema(doc, method, path, status, &ctype) {
            Ok(schema) => {
                let found = mismatches(&schema, &body);
                if !found.is_empty() {
                    self.problems
                        .push(format!("{what}:\n    {}\n    body: {body}", found.join("\n    ")));
                }
            }
            Err(e) => self.problems.push(format!("{what}: {e}")),
        }
        (status, body)
    }

    fn assert_none(&self) {
        assert!(
            self.problems.is_empty(),
            "answers that do not match openapi.json:\n  {}",
            self.problems.join("\n  ")
        );
    }
}

#[tokio::test]
async fn every_endpoint_answers_what_openapi_json_describes() {
    let doc = description();
    let token = "tok-openapi";
    let app = App::start(token).await;
    seed(&app.db).await;
    // Values the plain seed leaves null or empty, so their non-null schemas are exercised too.
    let c = app.db.connect().await.expect("connect");
    c.batch_execute(
        "UPDATE events SET event_date = now() + interval '30 days' WHERE event_id = 'ev_beta';
         UPDATE price_alerts SET section = '112', \"row\" = 'F', seat = '7' WHERE alert_id = 'al1';",
    )
    .await
    .expect("seed more");
    let url = |p: &str| format!("{}{p}", app.base);

    // A watch first, so the watch list is not empty; its request is checked against NewWatch.
    let new_watch = json!({
        "trigger_type": "at_or_below", "channel": "discord", "event_id": "ev_alpha",
        "target_price": 120.5, "section": "112"
    });
    let mut request_schema =
        doc["paths"]["/api/watches"]["post"]["requestBody"]["content"]["application/json"]["schema"].clone();
    request_schema["components"] = doc["components"].clone();
    assert_eq!(mismatches(&request_schema, &new_watch), Vec::<String>::new());
    let mut checker = Checker::default();
    let req = app
        .http
        .post(url("/api/watches"))
        .bearer_auth(token)
        .json(&new_watch);
    let (status, created) = checker.check(&doc, "POST", "/api/watches", req).await;
    assert_eq!(status, 201, "{created}");
    let watch_id = created["id"].as_i64().expect("id");
    let full_watch = json!({
        "trigger_type": "drop_vs_low", "channel": "discord", "user_id": "u1",
        "event_name_pattern": "Alpha%", "section": "112", "max_row": "F", "max_price": 300,
        "drop_percent": 10, "lookback_days": 7, "notify_on_first_sight": false,
        "cooldown_seconds": 60
    });
    assert_eq!(mismatches(&request_schema, &full_watch), Vec::<String>::new());
    let req = app
        .http
        .post(url("/api/watches"))
        .bearer_auth(token)
        .json(&full_watch);
    let (status, created) = checker.check(&doc, "POST", "/api/watches", req).await;
    assert_eq!(status, 201, "{created}");
    let req = app.http.post(url("/api/watches")).json(&new_watch);
    let (status, _) = checker.check(&doc, "POST", "/api/watches", req).await;
    assert_eq!(status, 401, "a write without the token is refused as described");
    let req = app
        .http
        .post(url("/api/watches"))
        .bearer_auth(token)
        .json(&json!({
            "trigger_type": "at_or_below", "channel": "discord", "event_id": "ev_alpha"
        }));
    let (status, _) = checker.check(&doc, "POST", "/api/watches", req).await;
    assert_eq!(status, 400, "a watch without its trigger's parameter is refused");

    // Every GET of the description, with the seeded rows behind it; some more than once, where
    // a query changes the answer's shape (empty distribution, drop markers, one event).
    let gets: Vec<(&str, String)> = vec![
        ("/api/openapi.json", "/api/openapi.json".into()),
        ("/api/events", "/api/events".into()),
        ("/api/events/{id}/prices", "/api/events/ev_alpha/prices".into()),
        (
            "/api/events/{id}/prices",
            "/api/events/ev_alpha/prices?range=7d".into(),
        ),
        ("/api/events/{id}/prices", "/api/events/ev_gamma/prices".into()),
        ("/api/events/{id}/prices", "/api/events/no_such/prices".into()),
        ("/api/events/{id}/windows", "/api/events/ev_alpha/windows".into()),
        (
            "/api/events/{id}/windows",
            "/api/events/ev_alpha/windows?width=300".into(),
        ),
        ("/api/alerts", "/api/alerts?since=7d".into()),
        ("/api/alerts", "/api/alerts?since=soon".into()),
        ("/api/events", "/api/events?limit=0".into()),
        (
            "/api/events/{id}/windows",
            "/api/events/ev_alpha/windows?range=1y".into(),
        ),
        ("/api/events/{id}/windows", "/api/events/no_such/windows".into()),
        ("/api/alerts", "/api/alerts?event_id=no_such".into()),
        ("/api/stats", "/api/stats".into()),
        ("/api/stats", "/api/stats?event_id=no_such".into()),
        ("/api/stats", "/api/stats?event_id=ev_gamma".into()),
        ("/api/engine", "/api/engine".into()),
        ("/api/watches", "/api/watches".into()),
        ("/metrics", "/metrics".into()),
        ("/health/live", "/health/live".into()),
        ("/health/ready", "/health/ready".into()),
    ];
    let gets_described: BTreeSet<String> = described(&doc)
        .into_iter()
        .filter(|(m, _)| m == "GET")
        .map(|(_, p)| p)
        .collect();
    let gets_called: BTreeSet<String> = gets.iter().map(|(p, _)| p.to_string()).collect();
    assert_eq!(gets_called, gets_described, "this test calls every described GET");
    let mut answers = Vec::new();
    for (path, concrete) in &gets {
        let (status, body) = checker
            .check(&doc, "GET", path, app.http.get(url(concrete)))
            .await;
        answers.push((concrete.as_str(), status, body));
    }
    checker.assert_none();
    let status_of = |c: &str| answers.iter().find(|(p, ..)| *p == c).map(|(_, s, _)| *s);
    assert_eq!(status_of("/api/events/ev_alpha/prices?range=7d"), Some(200));
    assert_eq!(status_of("/api/events/no_such/prices"), Some(404));
    assert_eq!(status_of("/api/alerts?since=soon"), Some(400));
    assert_eq!(status_of("/api/events?limit=0"), Some(400));
    assert_eq!(status_of("/api/stats?event_id=no_such"), Some(404));
    assert_eq!(status_of("/api/watches"), Some(200));
    let body_of = |c: &str| {
        answers
            .iter()
            .find(|(p, ..)| *p == c)
            .map(|(.., b)| b.clone())
            .unwrap_or_default()
    };
    // The answers checked are the full ones, not empty lists that any item schema would accept.
    assert!(
        !body_of("/api/events/ev_alpha/prices?range=7d")["drops"]
            .as_array()
            .expect("drops")
            .is_empty()
    );
    for full in ["/api/events", "/api/alerts?since=7d", "/api/watches"] {
        assert!(!body_of(full).as_array().expect(full).is_empty(), "{full}");
    }
    assert!(
        !body_of("/api/events/ev_alpha/windows")
            .as_array()
            .expect("windows")
            .is_empty()
    );
    assert_eq!(body_of("/api/openapi.json"), doc, "the server serves the file");

    // The engine busy and Postgres out: lag, channel fill, a last error and an outage in
    // progress appear in /api/engine and /health/ready, and must be described too.
    let progress = app.metrics.partition(0);
    progress.high_watermark.store(1_000_000, Relaxed);
    progress.committed.store(10, Relaxed);
    app.metrics.set_channel("detect", 3, 1024);
    app.metrics.set_last_error("persist: batch failed".into());
    let mut outage = app.metrics.postgres_outage.caller("persist");
    outage.failed(&"connection refused");
    let (_, engine) = checker
        .check(&doc, "GET", "/api/engine", app.http.get(url("/api/engine")))
        .await;
    assert_eq!(engine["lag"]["0"], 999_990, "{engine}");
    assert_eq!(engine["channels"]["detect"]["used"], 3, "{engine}");
    let (status, ready) = checker
        .check(&doc, "GET", "/health/ready", app.http.get(url("/health/ready")))
        .await;
    assert_eq!(status, 503, "{ready}");
    assert!(ready["postgres"]["outage"].is_object(), "{ready}");
    outage.succeeded();

    let req = app.http.delete(url("/api/watches/abc")).bearer_auth(token);
    let (status, _) = checker.check(&doc, "DELETE", "/api/watches/{id}", req).await;
    assert_eq!(status, 400);
    let one = format!("/api/watches/{watch_id}");
    let req = app.http.delete(url(&one));
    let (status, _) = checker.check(&doc, "DELETE", "/api/watches/{id}", req).await;
    assert_eq!(status, 401);
    let req = app.http.delete(url(&one)).bearer_auth(token);
    let (status, deleted) = checker.check(&doc, "DELETE", "/api/watches/{id}", req).await;
    assert_eq!((status, deleted), (200, json!({ "deleted": watch_id })));
    let req = app.http.delete(url(&one)).bearer_auth(token);
    let (status, _) = checker.check(&doc, "DELETE", "/api/watches/{id}", req).await;
    assert_eq!(status, 404);
    checker.assert_none();
    app.stop().await;
}
