//! Alerting end to end: the real broker and Postgres, `conscope run` (in-process or as a child
//! process), and local servers that behave like Discord, Slack and a generic webhook. Every
//! count below is what the servers received, per alert id. `delivery.rs`: retries by time,
//! persistent 404s, `conscope alerts list|redeliver`, the duplicate window across SIGKILLs.

mod delivery;
mod fake;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::fake_http::Seen;
use conscope::alert::rules::Trigger;
use conscope::alert::watch::{self, NewWatch};
use conscope::config::{BackoffConfig, Config, NotifierConfig, NotifierKind, RateLimit, Secret};
use fake::{Fake, Kind, Reply};
use tokio_util::sync::CancellationToken;

use crate::harness::{self, TestDb};

/// A configuration with the alert task on, quick to poll and retry.
fn alerting_config(db: &TestDb) -> Config {
    let mut cfg = harness::config(db, 1);
    cfg.alert.enabled = true;
    cfg.alert.poll_interval = Duration::from_millis(100);
    cfg.alert.watch_refresh = Duration::from_millis(200);
    cfg.alert.request_timeout = Duration::from_secs(5);
    cfg.alert.backoff = BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(400),
        multiplier: 2.0,
        jitter: 0.0,
        deadline: Duration::from_secs(600),
    };
    cfg
}

fn add_channel(
    cfg: &mut Config,
    name: &str,
    kind: NotifierKind,
    url: String,
    limits: Option<Vec<RateLimit>>,
) {
    cfg.alert.notifiers.insert(
        name.into(),
        NotifierConfig {
            kind,
            url: Secret::new(url),
            headers: BTreeMap::new(),
            rate_limits: limits,
        },
    );
}

fn per(count: u32, millis: u64) -> Option<Vec<RateLimit>> {
    Some(vec![RateLimit {
        count,
        per: Duration::from_millis(millis),
    }])
}

/// `conscope run` in this process.
struct InProcess {
    token: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), conscope::runtime::RunError>>,
}

impl InProcess {
    fn start(cfg: &Config) -> Self {
        let token = CancellationToken::new();
        let handle = tokio::spawn(conscope::runtime::run(cfg.clone(), token.clone()));
        Self { token, handle }
    }

    async fn stop(self) {
        self.token.cancel();
        let result = tokio::time::timeout(Duration::from_secs(40), self.handle)
            .await
            .expect("conscope stops within its shutdown timeout")
            .expect("no panic");
        result.expect("clean stop");
    }
}

/// Records that make `n` listings drop from $100 to $80 (one default-rule alert each).
fn drops(prefix: &str, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..n {
        let listing = format!("{prefix}{i}");
        for price in [100.0, 80.0] {
            out.push((
                listing.clone().into_bytes(),
                harness::event_json("E1", &listing, price),
            ));
        }
    }
    out
}

async fn produce(cfg: &Config, records: Vec<(Vec<u8>, Vec<u8>)>) {
    let client = harness::create_topics(cfg).await.expect("topics");
    harness::produce_to(&client, &cfg.kafka.topics.raw_prices.name, 0, records)
        .await
        .expect("produce");
}

async fn wait_for(db: &TestDb, sql: &str, expected: i64, within: Duration) {
    let started = Instant::now();
    loop {
        let n = db.count(sql).await;
        if n == expected {
            return;
        }
        assert!(
            started.elapsed() < within,
            "`{sql}` is {n}, expected {expected} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until everything produced so far has gone all the way through: the engine committed
/// and published every raw_prices record, the alert task consumed every processed_prices and
/// price_alerts record, and no delivery is pending. Only after that does "nothing more
/// arrived" say something.
async fn wait_settled(db: &TestDb, cfg: &Config, within: Duration) {
    let client = conscope::kafka::connect(&cfg.kafka).await.expect("broker");
    let c = db.connect().await.expect("connect");
    let t = &cfg.kafka.topics;
    let started = Instant::now();
    loop {
        let mut behind = Vec::new();
        let inputs = [
            ("engine", &t.raw_prices),
            ("alert", &t.processed_prices),
            ("alert", &t.price_alerts),
        ];
        for (consumer, topic) in inputs {
            for p in 0..topic.partitions {
                let pc = client
                    .partition_client(
                        &topic.name,
                        p,
                        rskafka::client::partition::UnknownTopicHandling::Error,
                    )
                    .await
                    .expect("partition");
                let end = pc
                    .get_offset(rskafka::client::partition::OffsetAt::Latest)
                    .await
                    .expect("high watermark");
                let stored: Option<(i64, i64)> = c
                    .query_opt(
                        "SELECT next_offset, published_offset FROM kafka_offsets
                          WHERE consumer = $1 AND topic = $2 AND \"partition\" = $3",
                        &[&consumer, &topic.name, &p],
                    )
                    .await
                    .expect("offsets")
                    .map(|r| (r.get(0), r.get(1)));
                let (next, published) = stored.unwrap_or((0, 0));
                let done = next >= end && (consumer != "engine" || published >= next);
                if end > 0 && !done {
                    behind.push(format!("{consumer} {}/{p}: {next} of {end}", topic.name));
                }
            }
        }
        let pending = db
            .count("SELECT count(*) FROM alert_deliveries WHERE status = 'pending'")
            .await;
        if behind.is_empty() && pending == 0 {
            return;
        }
        assert!(
            started.elapsed() < within,
            "not settled within {within:?}: {behind:?}, {pending} deliveries pending"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn default_alert_ids(db: &TestDb) -> Vec<String> {
    let c = db.connect().await.expect("connect");
    let rows = c
        .query(
            "SELECT alert_id FROM price_alerts WHERE rule = 'default' ORDER BY alert_id",
            &[],
        )
        .await
        .expect("query");
    rows.iter().map(|r| r.get(0)).collect()
}

fn assert_each_once(fake: &Fake, ids: &[String], what: &str) {
    let delivered = fake.delivered();
    let got: Vec<&String> = delivered.keys().collect();
    let want: Vec<&String> = ids.iter().collect();
    assert_eq!(got, want, "{what}: the alerts delivered");
    assert!(
        delivered.values().all(|n| *n == 1),
        "{what}: each exactly once: {delivered:?}"
    );
}

/// The most requests the server saw within any window of `window`.
fn max_in_window(fake: &Fake, window: Duration) -> usize {
    let times: Vec<Instant> = fake.seen().iter().map(|h| h.at).collect();
    times
        .iter()
        .map(|t| times.iter().filter(|u| **u >= *t && **u < *t + window).count())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_rule_alerts_reach_discord_slack_and_a_webhook_exactly_once() {
    let db = TestDb::migrated().await.expect("db");
    let (discord, slack, hook) = (
        Fake::start(Kind::Discord).await,
        Fake::start(Kind::Slack).await,
        Fake::start(Kind::Webhook).await,
    );
    let mut cfg = alerting_config(&db);
    add_channel(&mut cfg, "discord", NotifierKind::Discord, discord.url(), None);
    add_channel(&mut cfg, "slack", NotifierKind::Slack, slack.url(), per(5, 1000));
    add_channel(&mut cfg, "hook", NotifierKind::Webhook, hook.url(), per(50, 1000));
    if let Some(n) = cfg.alert.notifiers.get_mut("hook") {
        n.headers
            .insert("Authorization".into(), Secret::new("Bearer hook-token"));
    }
    cfg.alert.default_channels = vec!["discord".into(), "slack".into(), "hook".into()];
    let mut records = drops("L", 12);
    // Noise: a one-cent move and a rise never alert.
    for (listing, prices) in [("noise", [100.0, 99.99]), ("rise", [100.0, 150.0])] {
        for p in prices {
            records.push((listing.into(), harness::event_json("E1", listing, p)));
        }
    }
    produce(&cfg, records).await;
    let run = InProcess::start(&cfg);
    for f in [&discord, &slack, &hook] {
        f.wait_delivered(12, Duration::from_secs(60)).await;
    }
    wait_for(
        &db,
        "SELECT count(*) FROM alert_deliveries WHERE status = 'sent'",
        36,
        Duration::from_secs(10),
    )
    .await;
    run.stop().await;

    let ids = default_alert_ids(&db).await;
    assert_eq!(ids.len(), 12, "one alert per real drop, none for noise");
    assert_each_once(&discord, &ids, "discord");
    assert_each_once(&slack, &ids, "slack");
    assert_each_once(&hook, &ids, "webhook");

    let discord_hits = discord.seen();
    assert!(
        discord_hits
            .iter()
            .all(|h| h.query.get("wait").map(String::as_str) == Some("true"))
    );
    assert!(
        discord_hits.len() < 12,
        "alerts are coalesced: {} messages",
        discord_hits.len()
    );
    assert!(discord_hits.iter().all(|h| discord.alert_ids(h).len() <= 10));
    let first = &discord_hits[0].body["embeds"][0];
    assert_eq!(first["title"], "Price drop: Show E1 — Test Arena");
    assert_eq!(first["description"], "Sec 112 · Row F · Seat 7 (mock)");
    let fields: Vec<(&str, &str)> = first["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or(""),
                f["value"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        &fields[..3],
        &[
            ("Was", "$100.00"),
            ("Now", "$80.00"),
            ("Change", "−$20.00 (−20.0%)")
        ]
    );
    assert_eq!(fields[3], ("Show", "Sat 1 May 2027, 20:00 UTC"));
    assert!(
        first["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://tickets.example/L"))
    );
    assert!(
        first["footer"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("rule: default (drop ≥ 10% and ≥ $5.00)"))
    );

    for h in hook.seen() {
        assert_eq!(h.headers["authorization"], "Bearer hook-token");
        assert_eq!(
            h.headers["idempotency-key"].to_str().ok(),
            Some(hook.alert_ids(&h)[0].as_str())
        );
        assert_eq!(h.body["rule"], "default");
        assert_eq!(h.body["new_price"], 80.0);
    }
    assert!(
        slack
            .seen()
            .iter()
            .all(|h| h.body["blocks"].as_array().is_some_and(|b| b.len() <= 50))
    );
}

fn new_watch(event: Option<&str>, pattern: Option<&str>, trigger: Trigger, first_sight: bool) -> NewWatch {
    NewWatch {
        user_id: Some("tester".into()),
        event_id: event.map(str::to_string),
        event_name_pattern: pattern.map(str::to_string),
        section: None,
        max_row: None,
        max_price: None,
        trigger,
        channel: "hook".into(),
        notify_on_first_sight: first_sight,
        cooldown_seconds: 21_600,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_watch_trigger_fires_when_it_should_and_re_arms() {
    let db = TestDb::migrated().await.expect("db");
    let hook = Fake::start(Kind::Webhook).await;
    let mut cfg = alerting_config(&db);
    add_channel(
        &mut cfg,
        "hook",
        NotifierKind::Webhook,
        hook.url(),
        per(100, 1000),
    );
    let c = db.connect().await.expect("connect");
    let mut ids = BTreeMap::new();
    let mut add = async |name: &str, w: NewWatch| {
        ids.insert(
            name.to_string(),
            watch::insert(&c, &w).await.expect("insert watch"),
        );
    };
    add(
        "below_notify",
        new_watch(Some("E1"), None, Trigger::AtOrBelow { target: 9_000 }, true),
    )
    .await;
    let mut skip = new_watch(Some("E1"), None, Trigger::AtOrBelow { target: 9_000 }, false);
    skip.section = Some("112".into());
    add("below_skip", skip).await;
    add(
        "drop_pct",
        new_watch(
            None,
            Some("show e2"),
            Trigger::DropPercent { percent: 10.0 },
            true,
        ),
    )
    .await;
    add(
        "event_low_skip",
        new_watch(Some("E3"), None, Trigger::NewLowEvent, false),
    )
    .await;
    let vs_low = Trigger::DropVsLow {
        percent: 10.0,
        lookback_days: 7,
    };
    add("vs_low", new_watch(Some("E4"), None, vs_low, true)).await;
    let mut capped = new_watch(Some("E5"), None, Trigger::AtOrBelow { target: 9_000 }, true);
    capped.max_price = Some(5_000);
    add("capped", capped).await;
    add(
        "listing_low",
        new_watch(Some("E1"), None, Trigger::NewLowListing, true),
    )
    .await;
    let mut elsewhere = new_watch(Some("E1"), None, Trigger::AtOrBelow { target: 9_000 }, true);
    elsewhere.section = Some("300".into());
    add("other_section", elsewhere).await;

    let steps: &[(&str, &str, f64)] = &[
        ("E1", "A1", 85.0),
        ("E1", "A1", 85.0),
        ("E1", "A1", 84.99),
        ("E1", "A1", 80.0),
        ("E2", "B1", 100.0),
        ("E2", "B1", 95.0),
        ("E2", "B1", 85.0),
        ("E2", "B1", 84.99),
        ("E3", "C1", 100.0),
        ("E3", "C2", 90.0),
        ("E3", "C2", 80.0),
        ("E3", "C1", 85.0),
        ("E3", "C1", 70.0),
        ("E4", "D1", 100.0),
        ("E4", "D1", 120.0),
        ("E4", "D1", 95.0),
        ("E4", "D1", 85.0),
        ("E5", "F1", 60.0),
        ("E5", "F1", 40.0),
    ];
    let records = steps
        .iter()
        .map(|(e, l, p)| (l.as_bytes().to_vec(), harness::event_json(e, l, *p)))
        .collect();
    produce(&cfg, records).await;
    let run = InProcess::start(&cfg);
    let expected = [
        ("below_notify", 2), // first sight at $85, then re-armed by $80 ($84.99 is under the floor)
        ("below_skip", 1),   // first sight skipped; $80 is below it
        ("drop_pct", 1),     // 100 → 95 is 5%; 95 → 85 is 10.5%; a cent is noise
        ("event_low_skip", 2), // C2 80 (below C2's skipped 90), C1 70; C1 85 is no new low
        ("vs_low", 1),       // 120 → 95 is 5% under the week's low (100); 85 is 10.5% under 95
        ("capped", 1),       // $60 is over max_price; $40 is the watch's first sight
        ("listing_low", 2),  // first price, then 80 (84.99 is a cent: noise)
        ("other_section", 0),
    ];
    let total: usize = expected.iter().map(|(_, n)| n).sum();
    hook.wait_delivered(total, Duration::from_secs(60)).await;
    // Every record evaluated and every delivery done: nothing more is on its way.
    wait_settled(&db, &cfg, Duration::from_secs(60)).await;
    run.stop().await;

    let mut fired: BTreeMap<String, usize> = BTreeMap::new();
    for h in hook.seen() {
        *fired
            .entry(h.body["rule"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    for (name, n) in expected {
        let rule = format!("watch:{}", ids[name]);
        assert_eq!(
            fired.get(&rule).copied().unwrap_or(0),
            n,
            "watch {name} ({rule}); all: {fired:?}"
        );
    }
    assert!(hook.delivered().values().all(|n| *n == 1));
    let below = hook
        .seen()
        .into_iter()
        .find(|h| h.body["rule"] == format!("watch:{}", ids["below_notify"]))
        .expect("below_notify fired");
    assert_eq!(below.body["alert_type"], "watch_at_or_below");
    assert!(
        below.body["rule_description"]
            .as_str()
            .is_some_and(|d| d.contains("at or below $90.00"))
    );
    // Every watch alert is a price_alerts row with its watch's rule and one delivery row.
    assert_eq!(
        db.count("SELECT count(*) FROM price_alerts WHERE rule LIKE 'watch:%'")
            .await,
        total as i64
    );
    assert_eq!(
        db.count("SELECT count(*) FROM alert_deliveries WHERE watch_id IS NOT NULL AND status = 'sent'")
            .await,
        total as i64
    );

    // A restart re-reads nothing it committed and repeats nothing.
    let run = InProcess::start(&cfg);
    produce(
        &cfg,
        vec![(b"A1".to_vec(), harness::event_json("E1", "A1", 79.5))],
    )
    .await;
    // The $79.50 record was committed, published and evaluated by every watch.
    wait_settled(&db, &cfg, Duration::from_secs(60)).await;
    assert_eq!(
        db.count("SELECT count(*) FROM price_history WHERE price = 79.50")
            .await,
        1
    );
    run.stop().await;
    assert_eq!(hook.delivered().len(), total, "50 cents lower is no new alert");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_rate_limit_headers_hold_at_the_server() {
    let db = TestDb::migrated().await.expect("db");
    let hook = Fake::start(Kind::Webhook).await;
    let discord = Fake::start(Kind::Discord).await;
    // Discord says no requests remain until 0.8 s from now, on every answer.
    discord.set_default(Reply::OkButExhausted(0.8));
    let mut cfg = alerting_config(&db);
    add_channel(&mut cfg, "hook", NotifierKind::Webhook, hook.url(), per(3, 1000));
    add_channel(
        &mut cfg,
        "discord",
        NotifierKind::Discord,
        discord.url(),
        per(100, 1000),
    );
    cfg.alert.default_channels = vec!["hook".into(), "discord".into()];
    let mut records = drops("R", 9);
    // Four drops of one listing: four alerts with one link, so four Discord messages.
    for p in [100.0, 80.0, 64.0, 51.2, 40.96] {
        records.push((b"same".to_vec(), harness::event_json("E1", "same", p)));
    }
    produce(&cfg, records).await;
    let run = InProcess::start(&cfg);
    hook.wait_delivered(13, Duration::from_secs(60)).await;
    discord.wait_delivered(13, Duration::from_secs(60)).await;
    run.stop().await;

    assert!(
        max_in_window(&hook, Duration::from_secs(1)) <= 3,
        "at most 3 a second at the server"
    );
    let hits = hook.seen();
    let span = hits[hits.len() - 1].at - hits[0].at;
    assert!(
        span >= Duration::from_secs(4),
        "13 requests at 3 a second take over 4 s: {span:?}"
    );

    let same_link = |h: &Seen| {
        h.body["embeds"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["url"] == "https://tickets.example/same")
            .count()
    };
    let per_message: Vec<usize> = discord.seen().iter().map(same_link).filter(|n| *n > 0).collect();
    assert_eq!(
        per_message,
        vec![1; 4],
        "four alerts with one link go in four messages"
    );
    let all: Vec<Instant> = discord.seen().iter().map(|h| h.at).collect();
    for pair in all.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(780),
            "the next request waited for X-RateLimit-Reset-After: {:?}",
            pair[1] - pair[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_and_5xx_bursts_end_with_everything_delivered_once() {
    let db = TestDb::migrated().await.expect("db");
    let (discord, slack, hook) = (
        Fake::start(Kind::Discord).await,
        Fake::start(Kind::Slack).await,
        Fake::start(Kind::Webhook).await,
    );
    discord.script(std::iter::repeat_n(Reply::TooMany(0.3), 6));
    slack.script(std::iter::repeat_n(Reply::Status(503), 4));
    hook.script([
        Reply::Status(500),
        Reply::TooMany(0.2),
        Reply::Status(502),
        Reply::TooMany(0.1),
        Reply::Status(503),
        Reply::Status(500),
    ]);
    let mut cfg = alerting_config(&db);
    add_channel(&mut cfg, "discord", NotifierKind::Discord, discord.url(), None);
    add_channel(&mut cfg, "slack", NotifierKind::Slack, slack.url(), per(10, 1000));
    add_channel(&mut cfg, "hook", NotifierKind::Webhook, hook.url(), per(50, 1000));
    cfg.alert.default_channels = ["discord", "slack", "hook"].map(String::from).to_vec();
    produce(&cfg, drops("S", 8)).await;
    let run = InProcess::start(&cfg);
    for f in [&discord, &slack, &hook] {
        f.wait_delivered(8, Duration::from_secs(90)).await;
    }
    wait_for(
        &db,
        "SELECT count(*) FROM alert_deliveries WHERE status = 'sent'",
        24,
        Duration::from_secs(10),
    )
    .await;
    run.stop().await;

    let ids = default_alert_ids(&db).await;
    assert_each_once(&discord, &ids, "discord after a 429 storm");
    assert_each_once(&slack, &ids, "slack after a 5xx burst");
    assert_each_once(&hook, &ids, "webhook after 5xx and 429 mixed");
    assert!(discord.seen().iter().filter(|h| h.status == 429).count() == 6);
    assert!(
        db.count("SELECT count(*) FROM alert_deliveries WHERE channel = 'slack' AND attempts > 1")
            .await
            > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_alerts_are_cut_to_discord_limits_and_delivered() {
    let db = TestDb::migrated().await.expect("db");
    let discord = Fake::start(Kind::Discord).await;
    let mut cfg = alerting_config(&db);
    add_channel(&mut cfg, "discord", NotifierKind::Discord, discord.url(), None);
    cfg.alert.default_channels = vec!["discord".into()];
    let mut records = Vec::new();
    for i in 0..12 {
        let listing = format!("big{i}");
        for price in [300.0, 200.0] {
            let value = serde_json::json!({
                // Every text at the longest ingest accepts (docs/architecture.md), each still
                // over what a Discord embed's title and fields may hold.
                "event_id": "BIG", "event_name": "Ω".repeat(512), "venue": "V".repeat(1_024),
                "event_date": "2027-05-01T20:00:00", "source": "mock", "section": "S".repeat(256),
                "row": "R".repeat(256), "seat": "7".repeat(256), "price": price, "fees": null, "total_price": price,
                "timestamp": "2026-11-21T10:00:00", "listing_id": listing,
                "listing_url": format!("https://tickets.example/{listing}"), "quantity": 2,
            });
            records.push((listing.clone().into_bytes(), value.to_string().into_bytes()));
        }
    }
    produce(&cfg, records).await;
    let run = InProcess::start(&cfg);
    discord.wait_delivered(12, Duration::from_secs(60)).await;
    run.stop().await;
    let hits = discord.seen();
    assert!(
        hits.iter().all(|h| h.status == 200),
        "Discord never refused a message"
    );
    for h in &hits {
        assert_eq!(fake::discord_violation(&h.body), None);
        let title = h.body["embeds"][0]["title"].as_str().unwrap_or("");
        assert!(
            title.ends_with('…') && title.chars().count() == 256,
            "{}",
            title.len()
        );
    }
    assert!(discord.delivered().values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cli_adds_lists_tests_and_removes_and_a_404_test_fails() {
    let db = TestDb::migrated().await.expect("db");
    let (gone, slack) = (Fake::start(Kind::Discord).await, Fake::start(Kind::Slack).await);
    gone.set_default(Reply::Status(404));
    let mut cfg = alerting_config(&db);
    add_channel(&mut cfg, "gone", NotifierKind::Discord, gone.url(), None);
    add_channel(&mut cfg, "team", NotifierKind::Slack, slack.url(), None);
    let path = harness::write_config(&cfg);
    let cli = |args: Vec<String>| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            let out = harness::conscope(&path)
                .arg("watch")
                .args(args)
                .output()
                .expect("run");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        })
    };
    let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
    let id_of = |stdout: &str| -> i64 {
        stdout
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.trim_end_matches(':').parse().ok())
            .unwrap_or_else(|| panic!("no id in {stdout}"))
    };

    let (code, out, err) = cli(args(
        "add --event-id E1 --trigger at-or-below --target 90 --channel gone",
    ))
    .await
    .expect("join");
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("added watch ") && out.contains("at or below $90.00"),
        "{out}"
    );
    let gone_id = id_of(&out);
    let (code, out, err) = cli(args(
        "add --event-name taylor* --trigger drop-vs-low --percent 15 --lookback-days 7 --channel team --first-sight skip --cooldown 1h",
    ))
    .await
    .expect("join");
    assert_eq!(code, Some(0), "{err}");
    let team_id = id_of(&out);

    let (code, _, err) = cli(args(
        "add --event-id E1 --trigger at-or-below --target 90 --channel nope",
    ))
    .await
    .expect("join");
    assert_eq!(code, Some(1));
    assert!(
        err.contains("channel `nope` is not in [alert.notifiers]"),
        "{err}"
    );
    let (code, _, err) = cli(args("add --event-id E1 --trigger drop-percent --channel team"))
        .await
        .expect("join");
    assert_eq!(code, Some(1));
    assert!(err.contains("--percent"), "{err}");

    let (code, out, _) = cli(args("list")).await.expect("join");
    assert_eq!(code, Some(0));
    assert!(out.contains(&format!("{gone_id}\ttrue\tgone\tnotify")), "{out}");
    assert!(out.contains(&format!("{team_id}\ttrue\tteam\tskip\t1h")), "{out}");

    // A test against a deleted webhook reports the 404 as a failure.
    let (code, out, err) = cli(args(&format!("test {gone_id}"))).await.expect("join");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        err.contains("HTTP 404") && err.contains("does not exist"),
        "{err}"
    );
    assert!(
        !err.contains("tok-discord-secret") && err.contains("/<redacted>"),
        "{err}"
    );
    assert_eq!(gone.seen().len(), 1);

    let (code, out, err) = cli(args(&format!("test {team_id}"))).await.expect("join");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("HTTP 200"), "{out}");
    let hit = &slack.seen()[0];
    assert!(
        hit.body["blocks"][0]["text"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Test message"))
    );

    let (code, out, _) = cli(args(&format!("remove {gone_id}"))).await.expect("join");
    assert_eq!(
        (code, out.trim()),
        (Some(0), format!("removed watch {gone_id}").as_str())
    );
    let (code, _, err) = cli(args(&format!("remove {gone_id}"))).await.expect("join");
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("no watch {gone_id}")), "{err}");
}
