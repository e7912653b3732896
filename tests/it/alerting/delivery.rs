//! Alerts are never silently dropped: retries end by time, a 404 disables a channel only when
//! it persists (and its deliveries wait), `conscope alerts list|redeliver` against the real
//! binary, Slack escaping, and the duplicate window across SIGKILLs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use conscope::config::NotifierKind;

use super::fake::{Fake, Kind, Reply};
use super::{
    InProcess, add_channel, alerting_config, assert_each_once, default_alert_ids, drops, per, produce,
    wait_for,
};
use crate::harness::{self, TestDb};

/// Run `conscope alerts ARGS` (the real binary); exit code, stdout, stderr.
async fn alerts_cli(config: &Path, args: &str) -> (Option<i32>, String, String) {
    let path = config.to_path_buf();
    let args: Vec<String> = args.split_whitespace().map(String::from).collect();
    tokio::task::spawn_blocking(move || {
        let out = harness::conscope(&path)
            .arg("alerts")
            .args(args)
            .output()
            .expect("run conscope alerts");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    })
    .await
    .expect("join")
}

/// The data lines of `alerts list` (without the header) as columns.
fn listed(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .skip(1)
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

async fn wait_until(what: &str, within: Duration, mut ok: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !ok().await {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_xx_past_eight_attempts_keeps_the_delivery_pending_until_the_server_recovers() {
    let db = TestDb::migrated().await.expect("db");
    let hook = Fake::start(Kind::Webhook).await;
    // Twelve 5xx: more than the eight attempts that used to end a delivery (about 2.7 s of
    // this test's backoff, 100 ms doubling to 400 ms), well inside its 10-minute deadline.
    hook.script(std::iter::repeat_n(Reply::Status(503), 12));
    let mut cfg = alerting_config(&db);
    cfg.web.listen = format!("127.0.0.1:{}", harness::free_port());
    add_channel(&mut cfg, "hook", NotifierKind::Webhook, hook.url(), per(50, 1000));
    cfg.alert.default_channels = vec!["hook".into()];
    produce(&cfg, drops("R", 1)).await;
    let run = InProcess::start(&cfg);

    wait_until("ten failed attempts", Duration::from_secs(60), async || {
        hook.seen().len() >= 10
    })
    .await;
    assert_eq!(
        db.count("SELECT count(*) FROM alert_deliveries WHERE status = 'pending' AND attempts >= 9")
            .await,
        1,
        "past eight attempts the delivery is still pending"
    );
    hook.wait_delivered(1, Duration::from_secs(60)).await;
    wait_for(
        &db,
        "SELECT count(*) FROM alert_deliveries WHERE status = 'sent' AND attempts = 13 AND last_error IS NULL",
        1,
        Duration::from_secs(10),
    )
    .await;
    // After a 5xx the server may have posted the message: each of the twelve retries is a
    // possible repeat, and counted as one.
    assert_eq!(
        metric(&cfg.web.listen, "conscope_alert_possible_repeats_total").await,
        12.0
    );
    run.stop().await;
    let statuses: Vec<u16> = hook.seen().iter().map(|h| h.status).collect();
    assert_eq!(statuses.len(), 13, "{statuses:?}");
    assert!(statuses[..12].iter().all(|s| *s == 503) && statuses[12] == 204);
    assert_each_once(&hook, &default_alert_ids(&db).await, "after twelve 503s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_the_notifier_took_the_message_is_retried_and_counted_as_a_repeat() {
    let db = TestDb::migrated().await.expect("db");
    let hook = Fake::start(Kind::Webhook).await;
    let mut cfg = alerting_config(&db);
    cfg.alert.request_timeout = Duration::from_millis(500);
    cfg.web.listen = format!("127.0.0.1:{}", harness::free_port());
    add_channel(&mut cfg, "hook", NotifierKind::Webhook, hook.url(), per(50, 1000));
    cfg.alert.default_channels = vec!["hook".into()];
    // The webhook takes the first message and answers only after ConScope gave up waiting.
    hook.hold_next();
    produce(&cfg, drops("O", 1)).await;
    let run = InProcess::start(&cfg);
    wait_for(
        &db,
        "SELECT count(*) FROM alert_deliveries WHERE status = 'sent' AND attempts = 2",
        1,
        Duration::from_secs(60),
    )
    .await;
    hook.release();
    assert_eq!(
        metric(&cfg.web.listen, "conscope_alert_possible_repeats_total").await,
        1.0
    );
    run.stop().await;
    let ids = default_alert_ids(&db).await;
    assert_eq!(hook.held_alert_ids(), vec![ids.clone()]);
    assert_eq!(
        hook.delivered(),
        BTreeMap::from([(ids[0].clone(), 2)]),
        "the documented repeat: taken, no answer in time, sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_past_its_deadline_is_failed_then_listed_and_redelivered() {
    let db = TestDb::migrated().await.expect("db");
    let hook = Fake::start(Kind::Webhook).await;
    hook.set_default(Reply::Status(500));
    let mut cfg = alerting_config(&db);
    cfg.alert.backoff.deadline = Duration::from_millis(1500);
    add_channel(&mut cfg, "hook", NotifierKind::Webhook, hook.url(), per(50, 1000));
    cfg.alert.default_channels = vec!["hook".into()];
    let path = harness::write_config(&cfg);
    produce(&cfg, drops("D", 2)).await;
    let run = InProcess::start(&cfg);
    wait_for(
        &db,
        "SELECT count(*) FROM alert_deliveries WHERE status = 'failed' AND http_status = 500
            AND attempts >= 3
            AND last_error LIKE 'gave up after % attempts: still failing % after it was raised \
                (alert.backoff.deadline 1s 500ms): HTTP 500: server error%'",
        2,
        Duration::from_secs(30),
    )
    .await;
    let ids = default_alert_ids(&db).await;
    assert_eq!(ids.len(), 2);
    assert!(hook.delivered().is_empty());

    // `alerts list --status failed` shows both with their last error, never the token.
    let (code, out, err) = alerts_cli(&path, "list --status failed").await;
    assert_eq!(code, Some(0), "{err}");
    let rows = listed(&out);
    assert_eq!(rows.len(), 2, "{out}");
    for r in &rows {
        assert!(ids.contains(&r[0]), "{out}");
        assert_eq!(
            (r[1].as_str(), r[2].as_str(), r[4].as_str()),
            ("hook", "failed", "500")
        );
        assert!(
            r[7].starts_with("gave up after ") && r[7].contains("HTTP 500"),
            "{out}"
        );
    }
    assert!(!out.contains("tok-webhook-secret") && !err.contains("tok-webhook-secret"));
    let (code, out, _) = alerts_cli(&path, "list --status sent").await;
    assert_eq!((code, listed(&out).len()), (Some(0), 0), "{out}");
    let (code, _, err) = alerts_cli(&path, "redeliver").await;
    assert_eq!(code, Some(1));
    assert!(err.contains("say which deliveries"), "{err}");

    // The server recovers; redeliver one by alert id, then the other by time range.
    hook.set_default(Reply::Ok);
    let (code, out, err) = alerts_cli(&path, &format!("redeliver --alert {}", ids[0])).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("1 deliveries back to pending"), "{out}");
    hook.wait_delivered(1, Duration::from_secs(30)).await;
    assert_eq!(hook.delivered().keys().collect::<Vec<_>>(), vec![&ids[0]]);
    let (code, out, err) = alerts_cli(&path, "redeliver --since 1h --channel hook").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("1 deliveries back to pending"), "{out}");
    hook.wait_delivered(2, Duration::from_secs(30)).await;
    wait_for(
        &db,
        "SELECT count(*) FROM alert_deliveries WHERE status = 'sent'",
        2,
        Duration::from_secs(10),
    )
    .await;
    // A time range that holds nothing puts nothing back.
    let (code, out, _) = alerts_cli(&path, "redeliver --from 2001-01-01 --to 2001-01-02").await;
    assert_eq!(code, Some(0));
    assert!(out.starts_with("0 deliveries back to pending"), "{out}");
    run.stop().await;
    assert_each_once(&hook, &ids, "failed, then redelivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_disables_a_channel_only_when_it_persists_and_its_deliveries_wait() {
    let db = TestDb::migrated().await.expect("db");
    let (gone, slack) = (Fake::start(Kind::Discord).await, Fake::start(Kind::Slack).await);
    let mut cfg = alerting_config(&db);
    cfg.alert.gone_to_disable = 3;
    cfg.alert.gone_to_disable_over = Duration::from_secs(2);
    add_channel(&mut cfg, "gone", NotifierKind::Discord, gone.url(), None);
    add_channel(&mut cfg, "slack", NotifierKind::Slack, slack.url(), per(10, 1000));
    cfg.alert.default_channels = vec!["gone".into(), "slack".into()];
    let path = harness::write_config(&cfg);

    // Four 404s within a second (the count is reached, the span is not), then the webhook is
    // back: nothing is disabled, nothing failed, everything delivered.
    gone.script(std::iter::repeat_n(Reply::Status(404), 4));
    produce(&cfg, drops("T", 2)).await;
    let run = InProcess::start(&cfg);
    gone.wait_delivered(2, Duration::from_secs(60)).await;
    assert_eq!(gone.seen().iter().filter(|h| h.status == 404).count(), 4);
    assert_eq!(db.count("SELECT count(*) FROM notifier_state").await, 0);

    // A 404 that persists: the channel is disabled after three over at least two seconds; its
    // deliveries stay pending (waiting), never failed, while Slack carries on.
    gone.set_default(Reply::Status(404));
    let before = gone.seen().len();
    produce(&cfg, drops("P", 3)).await;
    slack.wait_delivered(5, Duration::from_secs(60)).await;
    wait_for(
        &db,
        "SELECT count(*) FROM notifier_state WHERE channel = 'gone' AND http_status = 404",
        1,
        Duration::from_secs(30),
    )
    .await;
    let refused: Vec<Instant> = gone.seen()[before..].iter().map(|h| h.at).collect();
    assert!(refused.len() >= 3, "{} 404s", refused.len());
    assert!(
        refused[refused.len() - 1] - refused[0] >= Duration::from_secs(2),
        "disabled only after the 404s lasted the configured span"
    );
    let gone_rows = |status: &str| {
        format!("SELECT count(*) FROM alert_deliveries WHERE channel = 'gone' AND status = '{status}'")
    };
    assert_eq!(db.count(&gone_rows("pending")).await, 3);
    assert_eq!(
        db.count(&gone_rows("failed")).await + db.count(&gone_rows("disabled")).await,
        0
    );

    // Disabled, it sends nothing more; new alerts wait too (Slack got them first: the
    // evaluation happened).
    let refused_total = gone.seen().len();
    produce(&cfg, drops("Q", 1)).await;
    slack.wait_delivered(6, Duration::from_secs(60)).await;
    wait_for(&db, &gone_rows("pending"), 4, Duration::from_secs(10)).await;
    let (code, out, err) = alerts_cli(&path, "list --status waiting --channel gone").await;
    assert_eq!(code, Some(0), "{err}");
    let rows = listed(&out);
    assert_eq!(rows.len(), 4, "{out}");
    assert!(rows.iter().all(|r| r[2] == "waiting"), "{out}");
    assert!(rows.iter().any(|r| r[7].contains("HTTP 404")), "{out}");
    assert!(!out.contains("tok-discord-secret"), "{out}");
    assert_eq!(
        gone.seen().len(),
        refused_total,
        "a disabled channel sends nothing"
    );

    // The webhook works again: `alerts redeliver --channel gone` enables it, and the waiting
    // deliveries go out, each once.
    gone.set_default(Reply::Ok);
    let (code, out, err) = alerts_cli(&path, "redeliver --channel gone").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("channel `gone` was disabled; it is enabled again"),
        "{out}"
    );
    gone.wait_delivered(6, Duration::from_secs(60)).await;
    wait_for(
        &db,
        "SELECT count(*) FROM alert_deliveries WHERE status = 'sent'",
        12,
        Duration::from_secs(10),
    )
    .await;
    run.stop().await;
    let ids = default_alert_ids(&db).await;
    assert_each_once(&gone, &ids, "the 404 channel, once enabled again");
    assert_each_once(&slack, &ids, "slack beside it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_messages_escape_every_record_text_and_url() {
    let db = TestDb::migrated().await.expect("db");
    let slack = Fake::start(Kind::Slack).await;
    let mut cfg = alerting_config(&db);
    add_channel(&mut cfg, "slack", NotifierKind::Slack, slack.url(), per(10, 1000));
    cfg.alert.default_channels = vec!["slack".into()];
    let mut records = Vec::new();
    for price in [100.0, 80.0] {
        let value = serde_json::json!({
            "event_id": "X1", "event_name": "<!channel> & friends", "venue": "<!here>",
            "event_date": "2027-05-01T20:00:00", "source": "mock", "section": "<@U123>",
            "row": "<#C1>", "seat": "7", "price": price, "fees": null, "total_price": price,
            "timestamp": "2026-11-21T10:00:00", "listing_id": "esc",
            "listing_url": "https://tickets.example/a?x=1&y=<!channel>", "quantity": 1,
        });
        records.push((b"esc".to_vec(), value.to_string().into_bytes()));
    }
    produce(&cfg, records).await;
    let run = InProcess::start(&cfg);
    slack.wait_delivered(1, Duration::from_secs(60)).await;
    run.stop().await;
    let body = slack.seen()[0].body.to_string();
    for mention in ["<!channel>", "<!here>", "<@U123>", "<#C1>"] {
        assert!(!body.contains(mention), "{mention} reached Slack: {body}");
    }
    assert!(body.contains("&lt;!channel&gt; &amp; friends"), "{body}");
    assert!(
        body.contains("<https://tickets.example/a?x=1&amp;y=&lt;!channel&gt;|View the listing>"),
        "{body}"
    );
}

/// A counter from `/metrics` of the process serving on `addr`.
async fn metric(addr: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_inside_the_duplicate_window_repeats_at_most_that_alert_and_loses_none() {
    let db = TestDb::migrated().await.expect("db");
    let hook = Fake::start(Kind::Webhook).await;
    let mut cfg = alerting_config(&db);
    // One request every 250 ms: a steady stream to interrupt.
    add_channel(&mut cfg, "hook", NotifierKind::Webhook, hook.url(), per(1, 250));
    cfg.alert.default_channels = vec!["hook".into()];
    produce(&cfg, drops("K", 20)).await;
    let sent = "SELECT count(*) FROM alert_deliveries WHERE status = 'sent'";

    // Kill 1, inside the window: the webhook has taken a message (it posts before answering)
    // and holds its answer; ConScope cannot have recorded it.
    let path = harness::write_config(&cfg);
    let mut first = harness::Running::start(&path);
    wait_until("four deliveries", Duration::from_secs(90), async || {
        hook.delivered().len() >= 4
    })
    .await;
    hook.hold_next();
    wait_until("a request taken and held", Duration::from_secs(30), async || {
        !hook.held().is_empty()
    })
    .await;
    first.kill9();
    hook.release();
    let held = hook.held_alert_ids()[0].clone();
    assert_eq!(held.len(), 1, "a webhook request carries one alert");
    let window_id = held[0].clone();
    let delivered_at_kill = hook.delivered().len();
    assert!(delivered_at_kill < 20, "killed while deliveries were under way");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM alert_deliveries WHERE alert_id = '{window_id}'
                AND status = 'pending' AND maybe_delivered"
        ))
        .await,
        1,
        "the taken message was not recorded, and is known to be possibly delivered"
    );

    // Kill 2, outside the window: right after the server's latest accepted message was recorded.
    let mut cfg2 = cfg.clone();
    cfg2.web.listen = format!("127.0.0.1:{}", harness::free_port());
    let path2 = harness::write_config(&cfg2);
    let mut second = harness::Running::start(&path2);
    wait_until(
        "the window's alert sent again",
        Duration::from_secs(90),
        async || hook.delivered().get(&window_id) == Some(&2),
    )
    .await;
    assert_eq!(
        metric(&cfg2.web.listen, "conscope_alert_possible_repeats_total").await,
        1.0,
        "the repeat is counted"
    );
    let started = Instant::now();
    loop {
        let accepted: usize = hook.delivered().values().sum();
        if hook.delivered().len() >= delivered_at_kill + 4 && db.count(sent).await as usize + 1 == accepted {
            second.kill9();
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "{}", second.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        hook.delivered().len() < 20,
        "killed while deliveries were under way"
    );

    let mut third = harness::Running::start(&path);
    hook.wait_delivered(20, Duration::from_secs(90)).await;
    wait_for(&db, sent, 20, Duration::from_secs(10)).await;
    third.sigterm();
    let _ = third.child.wait();

    // What docs/alerting.md promises: every alert delivered at least once; a repeat only for a
    // message taken inside the window (the held one), at most one per kill.
    let delivered: BTreeMap<String, usize> = hook.delivered();
    let ids = default_alert_ids(&db).await;
    assert_eq!(delivered.keys().cloned().collect::<Vec<_>>(), ids);
    assert_eq!(
        delivered[&window_id], 2,
        "the message taken inside the window repeats once"
    );
    let other_repeats: Vec<_> = delivered
        .iter()
        .filter(|(id, n)| **id != window_id && **n > 1)
        .collect();
    assert!(
        other_repeats.len() <= 1 && other_repeats.iter().all(|(_, n)| **n == 2),
        "at most one repeat for the second kill: {other_repeats:?}"
    );
    for logs in [first.logs(), second.logs(), third.logs()] {
        assert!(
            !logs.contains("tok-webhook-secret"),
            "a webhook token reached the logs"
        );
    }
}
