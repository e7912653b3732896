//! The foundation: migrations, configuration errors, topics, start-up failures, secrets.

use std::time::{Duration, Instant};

use conscope::config::Secret;
use conscope::store::migrate::{self, MIGRATIONS, Migration};

use crate::harness::{self, TestDb};

#[tokio::test]
async fn migrations_apply_twice_and_record_checksums() {
    let db = TestDb::empty().await.expect("db");
    let mut c = db.connect().await.expect("connect");
    let first = migrate::apply(&mut c, MIGRATIONS).await.expect("first apply");
    assert_eq!(first.applied.len(), MIGRATIONS.len());
    let second = migrate::apply(&mut c, MIGRATIONS).await.expect("second apply");
    assert!(second.applied.is_empty());
    assert_eq!(second.already.len(), MIGRATIONS.len());
    let rows = c
        .query(
            "SELECT file, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("query");
    for (row, m) in rows.iter().zip(MIGRATIONS) {
        assert_eq!(row.get::<_, String>(0), m.file);
        assert_eq!(row.get::<_, String>(1), migrate::checksum(m.sql));
    }
    for table in [
        "events",
        "price_history",
        "listing_state",
        "price_alerts",
        "alert_deliveries",
        "watches",
        "price_windows",
        "kafka_offsets",
        "system_metrics",
    ] {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = $1",
                &[&table],
            )
            .await
            .expect("query")
            .get(0);
        assert_eq!(n, 1, "table {table} exists");
    }
    // The first ConScope's dashboards query the old name.
    c.query("SELECT alert_id, drop_percent FROM price_drop_alerts", &[])
        .await
        .expect("legacy view");
}

#[tokio::test]
async fn a_migration_edited_after_it_was_applied_is_refused() {
    let db = TestDb::migrated().await.expect("db");
    let mut c = db.connect().await.expect("connect");
    let edited = [Migration {
        file: MIGRATIONS[0].file,
        sql: "SELECT 1; -- edited",
    }];
    let err = migrate::apply(&mut c, &edited)
        .await
        .expect_err("edited migration");
    let text = err.to_string();
    assert!(
        text.contains("001_core.sql") && text.contains("edited after it was applied"),
        "{text}"
    );
}

#[tokio::test]
async fn a_failing_migration_leaves_the_database_as_it_was_and_names_the_file() {
    let db = TestDb::migrated().await.expect("db");
    let mut c = db.connect().await.expect("connect");
    let mut with_bad: Vec<Migration> = MIGRATIONS.to_vec();
    with_bad.push(Migration {
        file: "900_broken.sql",
        sql: "CREATE TABLE half_done (id int); SELECT no_such_column FROM events;",
    });
    let err = migrate::apply(&mut c, &with_bad)
        .await
        .expect_err("broken migration");
    let text = err.to_string();
    assert!(text.contains("900_broken.sql"), "{text}");
    assert!(text.contains("no_such_column"), "{text}");
    let half: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'half_done'",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert_eq!(half, 0, "the failed migration's first statement was rolled back");
    let recorded: i64 = c
        .query_one("SELECT count(*) FROM schema_migrations WHERE version = 900", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(recorded, 0);
}

/// What `conscope check-config` printed on stderr, having refused `path` with exit code 2.
fn check_config_refused(path: &std::path::Path) -> String {
    let out = harness::conscope(path).arg("check-config").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_config_names_every_mistake_and_exits_2() {
    let path = std::env::temp_dir().join(format!("{}.toml", harness::unique("bad")));
    std::fs::write(&path, "[kafka]\nbrokers = []\n[postgres]\npool_size = 0\n").expect("write");
    let err = check_config_refused(&path);
    assert!(err.contains("kafka.brokers: must not be empty"), "{err}");
    assert!(err.contains("postgres.pool_size: must be at least 2"), "{err}");
}

#[test]
fn unknown_keys_and_bad_usage_exit_2() {
    let path = std::env::temp_dir().join(format!("{}.toml", harness::unique("typo")));
    std::fs::write(&path, "[pipeline]\nbatch_size = 5\n").expect("write");
    let err = check_config_refused(&path);
    assert!(err.contains("pipeline") && err.contains("batch_size"), "{err}");

    let out = harness::conscope(&path)
        .arg("no-such-command")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_config_and_logs_never_show_secrets() {
    let mut cfg = conscope::config::Config::default();
    // Nothing listens on port 1: the start-up error must still not show the password.
    cfg.postgres.url = Secret::new("postgres://app:hunter2-secret@127.0.0.1:1/conscope");
    cfg.postgres.connect_timeout = Duration::from_secs(2);
    cfg.web.api_token = Secret::new("token-very-secret");
    let path = harness::write_config(&cfg);
    let out = harness::conscope(&path)
        .arg("check-config")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("postgres://app:<redacted>@127.0.0.1:1/conscope"),
        "{printed}"
    );
    assert!(
        !printed.contains("hunter2") && !printed.contains("token-very-secret"),
        "{printed}"
    );

    let out = harness::conscope(&path).arg("run").output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logs.contains("cannot connect to PostgreSQL"), "{logs}");
    assert!(
        !logs.contains("hunter2") && !logs.contains("token-very-secret"),
        "{logs}"
    );
}

#[test]
fn a_failing_command_prints_its_root_cause_once_and_exits_1() {
    let mut cfg = conscope::config::Config::default();
    let port = harness::free_port();
    cfg.postgres.url = Secret::new(format!("postgres://app:pw-secret@127.0.0.1:{port}/conscope"));
    cfg.postgres.connect_timeout = Duration::from_secs(2);
    let path = harness::write_config(&cfg);
    let out = harness::conscope(&path).arg("migrate").output().expect("migrate");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "error: cannot connect to PostgreSQL at postgres://app:<redacted>@127.0.0.1:{port}/conscope: "
        )),
        "{err}"
    );
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");
    assert!(!err.contains("pw-secret"), "{err}");
}

#[test]
fn an_unreadable_config_file_names_it_and_its_cause_once() {
    let path = std::env::temp_dir().join(format!("{}.toml", harness::unique("missing")));
    let err = check_config_refused(&path);
    assert!(
        err.contains(&format!("error: cannot read config file {}: ", path.display())),
        "{err}"
    );
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[tokio::test]
async fn topics_create_is_idempotent() {
    let db = TestDb::migrated().await.expect("db");
    let cfg = harness::config(&db, 3);
    let path = harness::write_config(&cfg);
    let first = harness::conscope(&path)
        .args(["topics", "create"])
        .output()
        .expect("run");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(
        text.contains(&format!(
            "created  {} (3 partitions)",
            cfg.kafka.topics.raw_prices.name
        )),
        "{text}"
    );
    let second = harness::conscope(&path)
        .args(["topics", "create"])
        .output()
        .expect("run");
    assert!(second.status.success());
    let text = String::from_utf8_lossy(&second.stdout);
    assert_eq!(text.matches("existed").count(), 5, "{text}");
    let list = harness::conscope(&path)
        .args(["topics", "list"])
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&format!("{}\t3", cfg.kafka.topics.raw_prices.name))
    );
}

#[tokio::test]
async fn run_against_an_unreachable_broker_exits_naming_it_within_the_timeout() {
    let db = TestDb::empty().await.expect("db");
    let mut cfg = harness::config(&db, 1);
    cfg.kafka.brokers = vec!["127.0.0.1:1".into()];
    cfg.kafka.request_timeout = Duration::from_secs(3);
    let path = harness::write_config(&cfg);
    let started = Instant::now();
    let out = harness::conscope(&path).arg("run").output().expect("run");
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach Kafka broker 127.0.0.1:1 within 3s"),
        "{err}"
    );
    // The timeout plus process start-up and migrations, never a hang.
    assert!(took < Duration::from_secs(20), "took {took:?}");
}
