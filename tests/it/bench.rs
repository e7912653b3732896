//! `conscope replay` through the binary: a replayed file is never stored twice, and its figures
//! agree with what the database holds. No timing asserted.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{self, TestDb, json_num, json_ok};

/// The configured simulated feed over 300 listings, seed 42, as JSON lines: what
/// `conscope-bench gen --events N --listings 300 --to-file PATH` writes.
fn gen_feed(config: &Path, path: &Path, events: u64) {
    let mut sim = conscope::config::Config::load(config)
        .expect("load the config")
        .sources
        .simulated;
    sim.seed = 42;
    sim.listings = 300;
    conscope::sources::jsonl::write_feed_to(path, &sim, events).expect("write the feed");
}

fn replay(config: &Path, file: &Path) -> Value {
    replay_as(config, file, None)
}

/// `conscope replay FILE [--name NAME] --json`.
fn replay_as(config: &Path, file: &Path, name: Option<&str>) -> Value {
    replay_with(config, file, name, &[])
}

fn replay_with(config: &Path, file: &Path, name: Option<&str>, extra: &[&str]) -> Value {
    let mut cmd = harness::conscope(config);
    cmd.arg("replay").arg(file).arg("--json").args(extra);
    if let Some(name) = name {
        cmd.args(["--name", name]);
    }
    json_ok(cmd.output().expect("run conscope replay"), "conscope replay")
}

/// Every stored (kafka_partition, kafka_offset), in order.
async fn history_keys(db: &TestDb) -> Vec<(i32, i64)> {
    let c = db.connect().await.expect("connect");
    c.query(
        "SELECT kafka_partition, kafka_offset FROM price_history ORDER BY 1, 2",
        &[],
    )
    .await
    .expect("history")
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// The lines `0..n` of one replayed input, as price_history keys.
fn lines_of(partition: f64, n: i64) -> Vec<(i32, i64)> {
    (0..n).map(|o| (partition as i32, o)).collect()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(harness::unique(name));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Every window's figures but its late-record count, in key order.
async fn windows_digest(db: &TestDb) -> Option<String> {
    let c = db.connect().await.expect("connect");
    c.query_one(
        "SELECT string_agg(concat_ws(',', event_id, source, width_seconds, window_start, window_end,
                           observations, distinct_listings, min_price, max_price, sum_price,
                           first_price, last_price, drops, rises), ';'
                           ORDER BY event_id, source, width_seconds, window_start)
           FROM price_windows",
        &[],
    )
    .await
    .expect("windows digest")
    .get(0)
}

async fn state_digest(db: &TestDb) -> (i64, i64, String) {
    let c = db.connect().await.expect("connect");
    let row = c
        .query_one(
            "SELECT (SELECT count(*) FROM price_history),
                    (SELECT count(*) FROM price_alerts),
                    (SELECT coalesce(sum(last_price * observations + lowest_price), 0)::text FROM listing_state)",
            &[],
        )
        .await
        .expect("digest");
    (row.get(0), row.get(1), row.get(2))
}

#[tokio::test]
async fn replaying_a_file_twice_or_in_two_parts_stores_every_line_once() {
    let db = TestDb::migrated().await.expect("db");
    let config = harness::write_config(&harness::config(&db, 1));
    let (first, whole) = (scratch_dir("replay_a"), scratch_dir("replay_b"));
    let full = whole.join("feed.jsonl");
    gen_feed(&config, &full, 3_000);
    // The same file, as it was when only its first 2,000 lines had been written.
    let text = std::fs::read_to_string(&full).expect("feed");
    let head: String = text.lines().take(2_000).map(|l| format!("{l}\n")).collect();
    let part = first.join("feed.jsonl");
    std::fs::write(&part, head).expect("write part");

    let a = replay_with(&config, &part, Some("feed"), &["--compare-copy"]);
    assert_eq!(json_num(&a, "rows_written"), 2_000.0);
    assert_eq!(json_num(&a, "start_line"), 0.0);
    assert_eq!(
        json_num(&a, "bare_copy.bare.rows"),
        2_000.0,
        "the bare COPY loads the same rows"
    );
    assert!(json_num(&a, "events_per_s") > 0.0 && json_num(&a, "ratio_to_bare_copy") > 0.0);
    assert_eq!(json_num(&a, "bare_copy.with_foreign_key.rows"), 2_000.0);
    assert!(json_num(&a, "ratio_to_bare_copy_with_fk") > 0.0);
    assert!(
        json_num(&a, "partition") < 0.0,
        "replayed rows never take a Kafka partition"
    );

    let again = replay_as(&config, &part, Some("feed"));
    assert_eq!(
        json_num(&again, "rows_written"),
        0.0,
        "a re-run of the same file adds nothing"
    );
    assert_eq!(json_num(&again, "already_stored"), 2_000.0);
    assert!(again["bare_copy"].is_null());
    assert_eq!(db.count("SELECT count(*) FROM price_history").await, 2_000);

    // The grown file (elsewhere, under the same --name): only the new lines are stored.
    let rest = replay_as(&config, &full, Some("feed"));
    assert_eq!(json_num(&rest, "start_line"), 2_000.0);
    assert_eq!(json_num(&rest, "rows_written"), 1_000.0);
    assert!(
        rest["bare_copy"].is_null(),
        "the bare-COPY comparison runs only with --compare-copy"
    );
    assert_eq!(json_num(&rest, "partition"), json_num(&a, "partition"));
    assert_eq!(
        history_keys(&db).await,
        lines_of(json_num(&a, "partition"), 3_000),
        "every line of the feed stored once"
    );

    // In two parts or at once, the same alerts and listing state.
    let other = TestDb::migrated().await.expect("db");
    let other_config = harness::write_config(&harness::config(&other, 1));
    let once = replay(&other_config, &full);
    assert_eq!(json_num(&once, "rows_written"), 3_000.0);
    assert_eq!(
        json_num(&once, "alerts"),
        json_num(&a, "alerts") + json_num(&rest, "alerts"),
        "the warm-started cache carries prices across runs"
    );
    assert_eq!(state_digest(&db).await, state_digest(&other).await);

    // Windows: every line counted once per width, each window agreeing with the rows it covers,
    // and the same windows whether the file came in two parts (the second merged into windows
    // the first had written) or at once.
    for d in [&db, &other] {
        let c = d.connect().await.expect("connect");
        let per_width: Vec<(i32, i64)> = c
            .query(
                "SELECT width_seconds, sum(observations)::int8 FROM price_windows GROUP BY 1 ORDER BY 1",
                &[],
            )
            .await
            .expect("windows")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(per_width, [(60, 3_000), (3_600, 3_000)]);
        let disagreeing = d
            .count(
                r#"SELECT count(*) FROM price_windows w
                   CROSS JOIN LATERAL (
                         SELECT count(*) AS n, min(h.price) AS lo, max(h.price) AS hi,
                                count(DISTINCT h.listing_key)::int4 AS listings
                           FROM price_history h
                          WHERE h.event_id = w.event_id AND h.source = w.source
                            AND h."timestamp" >= w.window_start AND h."timestamp" < w.window_end) x
                  WHERE (w.observations, w.min_price, w.max_price, w.distinct_listings)
                        IS DISTINCT FROM (x.n, x.lo, x.hi, x.listings)"#,
            )
            .await;
        assert_eq!(disagreeing, 0, "each window holds exactly the rows of its span");
    }
    let (two_parts, at_once) = (windows_digest(&db).await, windows_digest(&other).await);
    assert!(two_parts.is_some());
    assert_eq!(two_parts, at_once);
    assert!(
        db.count("SELECT coalesce(sum(late_records), 0)::int8 FROM price_windows")
            .await
            > 0,
        "the second part merged records into windows the first part had written"
    );

    for p in [config, other_config] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(first);
    let _ = std::fs::remove_dir_all(whole);
}

/// `(history offset, state offset)` of a replayed file.
async fn replay_offsets(db: &TestDb, consumer: &str) -> (i64, i64) {
    let c = db.connect().await.expect("connect");
    let at = |topic: &'static str| {
        let c = &c;
        async move {
            c.query_opt(
                "SELECT next_offset FROM kafka_offsets WHERE consumer = $1 AND topic = $2",
                &[&consumer, &topic],
            )
            .await
            .expect("offsets")
            .map_or(0, |r| r.get(0))
        }
    };
    (at("replay").await, at("replay_state").await)
}

#[tokio::test]
async fn a_replay_killed_between_its_two_writers_resumes_without_a_lost_or_doubled_observation() {
    const LINES: i64 = 60_000;
    let db = TestDb::migrated().await.expect("db");
    let config = harness::write_config(&harness::config(&db, 1));
    let dir = scratch_dir("replay_kill");
    let file = dir.join("feed.jsonl");
    gen_feed(&config, &file, LINES as u64);
    let consumer = "replay:feed";
    let args = [
        "--name",
        "feed",
        "--batch-records",
        "500",
        "--state-records",
        "4000",
    ];

    // Kill the replay (SIGKILL: no chance to finish a transaction) each time its history has
    // moved on by another 6,000 lines, and look at where each writer got.
    let (mut kills, mut lagging, mut last) = (0, 0, 0);
    while kills < 6 {
        let mut child = harness::conscope(&config)
            .arg("replay")
            .arg(&file)
            .args(args)
            .arg("--json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start conscope replay");
        let finished = loop {
            if child.try_wait().expect("poll").is_some() {
                break true;
            }
            if replay_offsets(&db, consumer).await.0 >= last + 6_000 {
                child.kill().expect("kill");
                child.wait().expect("reap");
                break false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        let (history, state) = replay_offsets(&db, consumer).await;
        assert!(
            state <= history,
            "the state writer is never ahead: {state} > {history}"
        );
        last = history;
        if finished {
            break;
        }
        kills += 1;
        lagging += usize::from(state < history);
    }
    assert!(kills >= 2, "the replay was killed mid-file at least twice");
    assert!(
        lagging >= 1,
        "at least one kill left listing_state behind the history (it lags by design)"
    );

    let end = replay_as(&config, &file, Some("feed"));
    assert_eq!(replay_offsets(&db, consumer).await, (LINES, LINES));
    assert_eq!(json_num(&end, "rows_written") as i64 + last, LINES);

    // Every line stored once, and every listing's state what its stored history says.
    assert_eq!(
        history_keys(&db).await,
        lines_of(json_num(&end, "partition"), LINES),
        "every line stored once"
    );
    assert_eq!(
        db.count("SELECT coalesce(sum(observations), 0)::int8 FROM listing_state")
            .await,
        LINES,
        "no observation lost or counted twice"
    );
    let disagreeing = db
        .count(
            r#"SELECT count(*) FROM listing_state s
               JOIN (SELECT listing_key, count(*) AS n, min(price) AS lowest,
                            min("timestamp") AS first_seen, max("timestamp") AS last_seen,
                            (array_agg(price ORDER BY kafka_offset DESC))[1] AS last_price
                       FROM price_history GROUP BY listing_key) h USING (listing_key)
              WHERE (s.observations, s.lowest_price, s.first_seen, s.last_seen, s.last_price)
                    IS DISTINCT FROM (h.n, h.lowest, h.first_seen, h.last_seen, h.last_price)"#,
        )
        .await;
    assert_eq!(disagreeing, 0, "listing_state agrees with price_history");

    // And the same as a replay that was never stopped.
    let other = TestDb::migrated().await.expect("db");
    let other_config = harness::write_config(&harness::config(&other, 1));
    let once = harness::conscope(&other_config)
        .arg("replay")
        .arg(&file)
        .args(args)
        .arg("--json")
        .output()
        .expect("run conscope replay");
    json_ok(once, "conscope replay");
    assert_eq!(state_digest(&db).await, state_digest(&other).await);
    assert_eq!(windows_digest(&db).await, windows_digest(&other).await);

    for p in [config, other_config] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn two_files_with_one_basename_in_two_folders_replay_independently() {
    let db = TestDb::migrated().await.expect("db");
    let config = harness::write_config(&harness::config(&db, 1));
    let dir = scratch_dir("replay_names");
    let feed = dir.join("feed.jsonl");
    gen_feed(&config, &feed, 1_000);
    let text = std::fs::read_to_string(&feed).expect("feed");
    let lines: Vec<&str> = text.lines().collect();
    let (a, b) = (dir.join("a"), dir.join("b"));
    for (d, part) in [(&a, &lines[..600]), (&b, &lines[600..])] {
        std::fs::create_dir_all(d).expect("dir");
        let body: String = part.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(d.join("feed.jsonl"), body).expect("write part");
    }

    let first = replay(&config, &a.join("feed.jsonl"));
    let second = replay(&config, &b.join("feed.jsonl"));
    assert_eq!(json_num(&first, "rows_written"), 600.0);
    assert_eq!(
        (json_num(&second, "start_line"), json_num(&second, "rows_written")),
        (0.0, 400.0),
        "another file of the same basename is read from its first line"
    );
    assert_ne!(first["consumer"], second["consumer"]);
    let canonical = std::fs::canonicalize(a.join("feed.jsonl")).expect("canonical");
    assert_eq!(
        first["consumer"].as_str(),
        Some(
            format!(
                "replay:{} ({} bytes)",
                canonical.display(),
                lines[..600].iter().map(|l| l.len() + 1).sum::<usize>()
            )
            .as_str()
        )
    );
    let mut expected = lines_of(json_num(&first, "partition"), 600);
    expected.extend(lines_of(json_num(&second, "partition"), 400));
    expected.sort();
    assert_eq!(history_keys(&db).await, expected);

    // The same file again, unchanged: it resumes, nothing is added.
    let again = replay(&config, &a.join("feed.jsonl"));
    assert_eq!(
        (json_num(&again, "start_line"), json_num(&again, "rows_written")),
        (600.0, 0.0)
    );
    assert_eq!(history_keys(&db).await, expected);

    // Stdin: refused without --name (a usage error, before anything is stored) ...
    let refused = harness::conscope(&config)
        .args(["replay", "-", "--json"])
        .stdin(std::fs::File::open(&feed).expect("feed"))
        .output()
        .expect("run conscope replay -");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--name"), "{stderr}");
    assert_eq!(history_keys(&db).await, expected);

    // ... and, named, stored once and resumed under that name.
    let piped = |name: &str| {
        let output = harness::conscope(&config)
            .args(["replay", "-", "--json", "--name", name])
            .stdin(std::fs::File::open(&feed).expect("feed"))
            .output()
            .expect("run conscope replay -");
        json_ok(output, "conscope replay -")
    };
    let fresh = piped("whole feed");
    assert_eq!(json_num(&fresh, "rows_written"), 1_000.0);
    assert_eq!(fresh["consumer"], "replay:whole feed");
    let resumed = piped("whole feed");
    assert_eq!(
        (
            json_num(&resumed, "already_stored"),
            json_num(&resumed, "rows_written")
        ),
        (1_000.0, 0.0)
    );
    expected.extend(lines_of(json_num(&fresh, "partition"), 1_000));
    expected.sort();
    assert_eq!(history_keys(&db).await, expected);

    let _ = std::fs::remove_file(config);
    let _ = std::fs::remove_dir_all(dir);
}
