//! The simulated source inside `conscope run`.

use std::time::{Duration, Instant};

use crate::harness::{self, Running, TestDb};

/// Wait until price_history holds at least `rows` rows.
async fn wait_rows(db: &TestDb, rows: i64, run: &Running) {
    let started = Instant::now();
    while db.count("SELECT count(*) FROM price_history").await < rows {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{rows} rows not reached\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stop a run with SIGTERM; it must drain and exit 0.
fn stop(mut run: Running) {
    run.sigterm();
    let status = run.child.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "{}", run.logs());
}

#[tokio::test]
async fn a_restarted_run_continues_the_simulated_prices_instead_of_walking_from_the_seed_again() {
    let db = TestDb::migrated().await.expect("db");
    let mut cfg = harness::config(&db, 2);
    harness::create_topics(&cfg).await.expect("topics");
    let sim = &mut cfg.sources.simulated;
    sim.enabled = true;
    sim.rate = 2_000.0;
    sim.listings = 200;
    sim.seed = 11;
    let path = harness::write_config(&cfg);

    // The first run walks every listing's price about fifty times.
    let run = Running::start(&path);
    wait_rows(&db, 10_000, &run).await;
    stop(run);
    let c = db.connect().await.expect("connect");
    let (partitions, last): (Vec<i32>, Vec<i64>) = c
        .query(
            "SELECT kafka_partition, max(kafka_offset) FROM price_history GROUP BY 1",
            &[],
        )
        .await
        .expect("boundary")
        .iter()
        .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1)))
        .unzip();
    let before = db.count("SELECT count(*) FROM price_history").await;

    // The second run, same seed: each listing of the first run is looked at again.
    let run = Running::start(&path);
    wait_rows(&db, before + 3_000, &run).await;
    let logs = run.logs();
    stop(run);
    let started = logs
        .lines()
        .find(|l| l.contains("simulated feed started"))
        .map(|l| {
            l.replace("\u{1b}[0m", "")
                .replace("\u{1b}[2m", "")
                .replace("\u{1b}[3m", "")
        });
    assert!(
        started.as_deref().is_some_and(|l| l.contains("resumed=200")),
        "every first listing resumed: {started:?}"
    );

    // How each earlier listing's first row after the restart compares with its stored price.
    let first_looks = c
        .query(
            "SELECT DISTINCT ON (h.listing_key) h.change_kind
               FROM price_history h
               JOIN UNNEST($1::int4[], $2::int8[]) AS b(p, o)
                 ON h.kafka_partition = b.p AND h.kafka_offset > b.o
              WHERE EXISTS (SELECT 1 FROM price_history e
                             WHERE e.listing_key = h.listing_key
                               AND e.kafka_partition = b.p AND e.kafka_offset <= b.o)
              ORDER BY h.listing_key, h.kafka_offset",
            &[&partitions, &last],
        )
        .await
        .expect("first looks");
    let kinds: Vec<String> = first_looks.iter().map(|r| r.get(0)).collect();
    let changed = kinds.iter().filter(|k| *k == "drop" || *k == "increase").count();
    assert!(
        kinds.len() >= 150,
        "most listings were looked at again: {}",
        kinds.len()
    );
    assert!(!kinds.iter().any(|k| k == "new"), "a stored listing is not new");
    // A walk from the seed's prices again would change nearly every listing at its first look;
    // a resumed walk changes a listing as often as any look does (drop + rise = 20%).
    assert!(
        changed * 10 < kinds.len() * 4,
        "{changed} of {} first looks were price changes",
        kinds.len()
    );
}
