//! The dashboard in headless Chromium, loaded from a running `conscope` over generated data:
//! the rendered numbers are compared with SQL, the event filter and range are switched, and
//! the README's screenshots are saved to `docs/screenshots/`. Skipped with a notice when
//! Chromium is absent, unless `CONSCOPE_BROWSER_TESTS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{free_port, wait_ready};
use crate::harness::{self, Running, TestDb};

const BROWSER_ENV: &str = "CONSCOPE_BROWSER_TESTS";

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Run headless Chromium on `url` with `extra` (screenshot or DOM dump); stdout is returned.
fn browse(bin: &Path, profile: &Path, url: &str, extra: &[&str]) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1000",
            // Virtual time lets the page's fetches and first refresh finish before the capture.
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `attr` on the element whose id is `id` in a serialized DOM.
fn attr(dom: &str, id: &str, attr: &str) -> String {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("#{id} not in the page"));
    let start = dom[..at].rfind('<').expect("tag start");
    let end = at + dom[at..].find('>').expect("tag end");
    let tag = &dom[start..end];
    let key = format!(" {attr}=\"");
    let from = tag
        .find(&key)
        .unwrap_or_else(|| panic!("#{id} has no {attr}: {tag}"))
        + key.len();
    let len = tag[from..].find('"').expect("closing quote");
    tag[from..from + len].replace("&amp;", "&")
}

async fn scalar(c: &tokio_postgres::Client, sql: &str, event: &str) -> i64 {
    c.query_one(sql, &[&event]).await.expect(sql).get(0)
}

#[tokio::test]
async fn dashboard_in_headless_chromium_shows_the_numbers_from_postgres() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var(BROWSER_ENV).as_deref() != Ok("1"),
            "{BROWSER_ENV}=1 but Chromium is not installed (apt-get install -y chromium)"
        );
        eprintln!("SKIPPED dashboard browser test: Chromium not found; set {BROWSER_ENV}=1 to require it");
        return;
    };
    let db = TestDb::migrated().await.expect("db");
    let c = db.connect().await.expect("connect");
    c.batch_execute(include_str!("../../data/generate_history.sql"))
        .await
        .expect("generator");
    c.query_one("SELECT conscope_generate_history(4, 30, 7, 900)", &[])
        .await
        .expect("generate");
    let mut cfg = harness::config(&db, 1);
    let port = free_port();
    cfg.web.listen = format!("127.0.0.1:{port}");
    let path = harness::write_config(&cfg);
    let run = Running::start(&path);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, &run, Duration::from_secs(60)).await;

    let profile = std::env::temp_dir().join(harness::unique("chromium_profile"));
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&shots).expect("screenshots folder");

    // All events, 24 hours: the stat cards are global.
    let dom = browse(&bin, &profile, &format!("{base}/?range=24h"), &["--dump-dom"]);
    assert!(
        dom.contains("data-loaded="),
        "the page never finished a refresh:\n{dom}"
    );
    let num = |id: &str| attr(&dom, id, "data-value");
    assert_eq!(num("stat-events"), "4");
    assert_eq!(num("stat-listings"), "120");
    let observations: i64 = c
        .query_one("SELECT sum(observations)::int8 FROM listing_state", &[])
        .await
        .expect("sum")
        .get(0);
    assert_eq!(num("stat-observations"), observations.to_string());
    let (mean, min, max): (f64, f64, f64) = {
        let r = c
            .query_one(
                "SELECT avg(last_price)::float8, min(last_price)::float8, max(last_price)::float8
                   FROM listing_state",
                &[],
            )
            .await
            .expect("prices");
        (r.get(0), r.get(1), r.get(2))
    };
    for (id, want) in [("stat-mean", mean), ("stat-min", min), ("stat-max", max)] {
        let shown: f64 = num(id).parse().expect("number");
        assert!((shown - want).abs() < 1e-6, "{id}: {shown} vs {want}");
    }
    assert!(
        dom.contains("data-range=\"24h\" class=\"active\""),
        "24h is the active range"
    );

    // Event filter and range switched through the URL the controls write.
    let in_range = "SELECT count(*) FROM price_history WHERE event_id = $1
                     AND \"timestamp\" >= now() - interval '6 hours'";
    let drops_in_range = "SELECT count(*) FROM price_alerts WHERE event_id = $1
                           AND alert_type = 'price_drop' AND alert_timestamp >= now() - interval '6 hours'";
    let (obs_before, drops_before) = (
        scalar(&c, in_range, "gen_2").await,
        scalar(&c, drops_in_range, "gen_2").await,
    );
    let url = format!("{base}/?event=gen_2&range=6h");
    let dom = browse(&bin, &profile, &url, &["--dump-dom"]);
    let (obs_after, drops_after) = (
        scalar(&c, in_range, "gen_2").await,
        scalar(&c, drops_in_range, "gen_2").await,
    );
    // Rows age out of the 6-hour window while the page loads: the page shows a count in between.
    let shown: i64 = attr(&dom, "chart-summary", "data-value")
        .parse()
        .expect("observations");
    assert!(
        (obs_after..=obs_before).contains(&shown),
        "{obs_after} <= {shown} <= {obs_before}"
    );
    assert!(shown > 500, "a real chart, not an empty one: {shown}");
    let total: i64 = attr(&dom, "price-histogram", "data-total")
        .parse()
        .expect("histogram");
    assert_eq!(total, shown, "the histogram counts the same observations");
    let markers: i64 = attr(&dom, "price-chart", "data-markers")
        .parse()
        .expect("markers");
    assert!(
        (drops_after..=drops_before).contains(&markers),
        "{drops_after} <= {markers} <= {drops_before}"
    );
    assert!(markers > 0, "the generated data has drops in 6 hours");
    let rows: i64 = attr(&dom, "drops-table", "data-rows").parse().expect("rows");
    assert_eq!(
        rows,
        markers.min(200),
        "the table lists the event's drops in range"
    );
    assert!(dom.contains("data-range=\"6h\" class=\"active\""));
    assert!(
        dom.contains("Night Lights Live"),
        "gen_2's name in the chart title"
    );
    assert_eq!(
        attr(&dom, "stat-listings", "data-value"),
        "30",
        "cards follow the event filter"
    );
    assert!(
        dom.contains("href=\"https://tickets.example/gen_2/"),
        "drops link to listings"
    );

    // Screenshots for the README, with the simulated feed running so the engine panel is live:
    // everything over a day, and one event over a week.
    drop(run);
    cfg.sources.simulated.enabled = true;
    cfg.sources.simulated.rate = 150.0;
    let path = harness::write_config(&cfg);
    let run = Running::start(&path);
    wait_ready(&base, &run, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (name, url) in [
        ("dashboard.png", format!("{base}/?range=24h")),
        ("dashboard-event-7d.png", format!("{base}/?event=gen_3&range=7d")),
    ] {
        let file = shots.join(name);
        browse(
            &bin,
            &profile,
            &url,
            &[&format!("--screenshot={}", file.display())],
        );
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 20_000, "{name} looks empty ({size} bytes)");
    }
    let _ = std::fs::remove_dir_all(&profile);
    drop(run);
}
