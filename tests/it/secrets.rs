//! Secrets stay inside the process: a `postgres.url` whose password is full of URL punctuation,
//! used by a real `conscope run` against a Postgres that checks passwords, appears in none of
//! its outputs — `check-config`, the logs, `/api/engine`, `/metrics`, `/health/ready`,
//! `system_metrics` (table and topic), also while Postgres is down — nor in the errors when the
//! URL's database does not exist.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use conscope::config::Secret;
use tokio_postgres::NoTls;

use crate::harness::{self, PrivatePg, TestDb};

/// The role's password: every character that ends a URL component.
const PASSWORD: &str = "p/ss@w:rd?x";
/// The password as written in `postgres.url`: `@` escaped (it would end the user info), the
/// rest as typed.
const IN_URL: &str = "p/ss%40w:rd?x";

/// Every form in which the password, or a telling part of it, could show.
const FRAGMENTS: [&str; 7] = [
    PASSWORD,
    IN_URL,
    "p%2Fss%40w%3Ard%3Fx",
    "ss@w",
    "ss%40w",
    "w:rd",
    "rd?x",
];

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for fragment in FRAGMENTS {
        assert!(
            !text.contains(fragment),
            "{what} shows the password (`{fragment}`):\n{text}"
        );
    }
}

/// A private cluster that checks passwords over TCP (the admin `postgres` stays trusted).
async fn password_checking_postgres() -> PrivatePg {
    let pg = PrivatePg::start().expect("private postgres");
    std::fs::write(
        pg.dir.join("pg_hba.conf"),
        "local all all trust\n\
         host all postgres 127.0.0.1/32 trust\n\
         host all all 127.0.0.1/32 scram-sha-256\n",
    )
    .expect("pg_hba.conf");
    pg.pause().expect("stop");
    pg.resume().expect("start with password checks");
    pg
}

/// Run `cmd` with stdout and stderr in one file; the child and the file.
fn spawn_logged(mut cmd: Command, name: &str) -> (Child, std::path::PathBuf) {
    let log = std::env::temp_dir().join(format!("{}.log", harness::unique(name)));
    let file = std::fs::File::create(&log).expect("log file");
    let child = cmd
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn conscope");
    (child, log)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let started = Instant::now();
    while child.try_wait().ok().flatten().is_none() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_postgres_password_with_url_punctuation_appears_in_no_output() {
    let pg = password_checking_postgres().await;
    let role = harness::unique("app");
    let database = harness::unique("conscope");
    let (admin, conn) = tokio_postgres::connect(&pg.admin_url(), NoTls)
        .await
        .expect("admin");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"))
        .await
        .expect("role");
    admin
        .batch_execute(&format!("CREATE DATABASE {database} OWNER {role}"))
        .await
        .expect("database");
    let url = format!("postgres://{role}:{IN_URL}@127.0.0.1:{}/{database}", pg.port);
    // The URL carries the real password: the server accepts it and refuses another.
    let _accepted = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("the password in the URL is the role's");
    let wrong = url.replace(IN_URL, "p/ss%40w:rd?y");
    assert!(tokio_postgres::connect(&wrong, NoTls).await.is_err());

    // The topics' names and the broker from the harness; Postgres is the private cluster.
    let scratch = TestDb::empty().await.expect("scratch db");
    let mut cfg = harness::config(&scratch, 1);
    cfg.postgres.url = Secret::new(url.clone());
    let port = harness::free_port();
    cfg.web.listen = format!("127.0.0.1:{port}");
    cfg.log.level = "debug,rskafka=info,h2=info,hyper=info".into();
    let path = harness::write_config(&cfg);

    // check-config prints the URL, redacted.
    let checked = harness::conscope(&path)
        .arg("check-config")
        .output()
        .expect("check-config");
    assert!(checked.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_no_secret("check-config", &printed);
    let shown = format!("postgres://{role}:<redacted>@127.0.0.1:{}/{database}", pg.port);
    assert!(printed.contains(&shown), "{printed}");

    // A real run: it connects with the password, migrates, processes records, reports.
    let client = harness::create_topics(&cfg).await.expect("topics");
    let raw = &cfg.kafka.topics.raw_prices.name;
    let a = |price| (b"mock:A".to_vec(), harness::event_json("show1", "A", price));
    harness::produce_to(&client, raw, 0, vec![a(100.0), a(80.0), a(50.0)])
        .await
        .expect("produce");
    let mut run_cmd = harness::conscope(&path);
    run_cmd.arg("run");
    let (mut run, log) = spawn_logged(run_cmd, "conscope_secret_run");
    let c = {
        let started = Instant::now();
        loop {
            match tokio_postgres::connect(&url, NoTls).await {
                Ok((c, conn)) => {
                    tokio::spawn(conn);
                    break c;
                }
                Err(e) => assert!(started.elapsed() < Duration::from_secs(10), "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let count = |sql: &'static str| {
        let c = &c;
        async move {
            c.query_one(sql, &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(0)
        }
    };
    let started = Instant::now();
    // Three rows stored, and a metrics snapshot taken after them.
    while count("SELECT count(*) FROM price_history").await < 3
        || count(
            "SELECT count(*) FROM system_metrics
              WHERE recorded_at > (SELECT max(created_at) FROM price_history)",
        )
        .await
            < 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(90) && run.try_wait().expect("poll").is_none(),
            "conscope run did not process the records:\n{}",
            read(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let base = format!("http://127.0.0.1:{port}");
    let engine = reqwest::get(format!("{base}/api/engine"))
        .await
        .expect("/api/engine");
    assert_eq!(engine.status(), 200);
    let engine = engine.text().await.expect("body");
    assert!(
        serde_json::from_str::<serde_json::Value>(&engine).is_ok_and(|v| v.is_object()),
        "{engine}"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("body");
    assert!(metrics.contains("conscope_"), "{metrics}");
    let snapshots: Vec<String> = c
        .query("SELECT snapshot::text FROM system_metrics", &[])
        .await
        .expect("system_metrics")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!snapshots.is_empty());
    // Postgres goes away under the running engine: what it reports then names the URL.
    pg.pause().expect("stop postgres");
    let started = Instant::now();
    let unready = loop {
        let res = reqwest::get(format!("{base}/health/ready"))
            .await
            .expect("/health/ready");
        if res.status() != 200 {
            break res.text().await.expect("body");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "still ready without Postgres:\n{}",
            read(&log)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let engine_down = reqwest::get(format!("{base}/api/engine"))
        .await
        .expect("/api/engine")
        .text()
        .await
        .expect("body");
    stop(&mut run);
    pg.resume().expect("start postgres");
    assert!(unready.contains("\"postgres\":{\"ok\":false"), "{unready}");
    assert_no_secret("/health/ready without Postgres", &unready);
    assert_no_secret("/api/engine without Postgres", &engine_down);
    let topic = harness::read_all(&client, &cfg.kafka.topics.system_metrics.name, 0)
        .await
        .expect("system_metrics topic");
    assert!(!topic.is_empty(), "snapshots were published");
    let published: String = topic
        .iter()
        .filter_map(|r| r.record.value.as_ref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let logs = read(&log);
    assert!(logs.contains("DEBUG"), "the run logged at debug level:\n{logs}");
    assert_no_secret("the logs of conscope run", &logs);
    assert_no_secret("/api/engine", &engine);
    assert_no_secret("/metrics", &metrics);
    assert_no_secret("the system_metrics table", &snapshots.join("\n"));
    assert_no_secret("the system_metrics topic", &published);

    // The same password, a database that does not exist: the errors name it, never the password.
    let missing = harness::unique("missing");
    let mut bad = cfg.clone();
    bad.postgres.url = Secret::new(url.replace(&database, &missing));
    bad.postgres.connect_timeout = Duration::from_secs(2);
    bad.postgres.backoff.max = Duration::from_millis(500);
    let bad_path = harness::write_config(&bad);
    let migrate = harness::conscope(&bad_path)
        .arg("migrate")
        .output()
        .expect("migrate");
    assert!(!migrate.status.success());
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&migrate.stdout),
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(said.contains(&missing), "the error names the database:\n{said}");
    assert_no_secret("conscope migrate's error", &said);
    // `run` may wait for the database to appear: read what it said about it, then stop it.
    let mut run_cmd = harness::conscope(&bad_path);
    run_cmd.arg("run");
    let (mut run, log) = spawn_logged(run_cmd, "conscope_secret_missing");
    let started = Instant::now();
    while !read(&log).contains(&missing) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "conscope run said nothing about the missing database:\n{}",
            read(&log)
        );
        if run.try_wait().expect("poll").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(&mut run);
    let said = read(&log);
    assert!(said.contains(&missing), "{said}");
    assert_no_secret("conscope run's errors", &said);

    for p in [&path, &bad_path] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_file(log);
}
