//! Printing the benchmark's figures: aligned text for people, one JSON document with `--json`.

use std::io::Write;

use serde::Serialize;

use crate::BenchError;
use crate::cache::CacheFigures;
use crate::run::BenchFigures;

/// Print `value` as pretty JSON on stdout.
pub fn print_json(value: &impl Serialize) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| BenchError::Invalid(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|source| BenchError::Io {
        what: "writing to stdout".into(),
        source,
    })
}

pub fn print_run(f: &BenchFigures, json: bool) -> Result<(), BenchError> {
    if json {
        return print_json(f);
    }
    let p = &f.pipeline;
    let l = &p.latency;
    let mut lines = vec![
        format!(
            "conscope-bench: {} mode, {} events over {} listings, {} partitions (topic {})",
            f.mode, f.events, f.listings, f.partitions, f.raw_topic
        ),
        format!(
            "load average before {:.2} {:.2} {:.2}, after {:.2} {:.2} {:.2}",
            f.load_before[0],
            f.load_before[1],
            f.load_before[2],
            f.load_after[0],
            f.load_after[1],
            f.load_after[2]
        ),
        format!(
            "produce           {:>10.0} events/s   ({:.1} s{})",
            f.produce.events_per_s,
            f.produce.seconds,
            f.produce
                .rate_target
                .map_or(String::new(), |r| format!(", paced at {r:.0}/s"))
        ),
        format!(
            "end to end        {:>10.0} events/s   ({:.1} s until every event was committed)",
            p.events_per_s, p.seconds
        ),
        format!(
            "persisted         {:>10.0} rows/s     ({} price_history rows, {} listing_state rows)",
            p.rows_per_s, p.rows_persisted, p.listing_state_rows
        ),
        format!(
            "bare fetch        {:>10.0} records/s  ({} records in {} fetches, {:.1} s): ConScope at {:.2}x",
            f.bare_fetch.records_per_s,
            f.bare_fetch.records,
            f.bare_fetch.fetches,
            f.bare_fetch.seconds,
            f.ratio_to_bare_fetch
        ),
        match (&f.librdkafka, f.ratio_to_librdkafka) {
            (None, _) => "librdkafka        not measured (--no-librdkafka)".to_string(),
            (Some(c), Some(ratio)) => format!(
                "librdkafka        {:>10.0} records/s  ({} records in {:.1} s, librdkafka {}): ConScope at {:.2}x",
                c.records_per_s,
                c.records,
                c.seconds,
                c.librdkafka.as_deref().unwrap_or("?"),
                ratio
            ),
            (Some(c), None) => format!(
                "librdkafka        not measured: {}",
                c.error.as_deref().unwrap_or("no records")
            ),
        },
        format!(
            "produce → commit  p50 {:.1} ms · p95 {:.1} ms · p99 {:.1} ms · max {:.1} ms ({} records{})",
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            l.max_ms,
            l.count,
            if f.mode == "backlog" {
                "; backlog mode: includes the wait in the topic before the run"
            } else {
                ""
            }
        ),
        match &p.broker_latency {
            Some(b) => format!(
                "produce → fetch   p50 {:.1} ms · p95 {:.1} ms · p99 {:.1} ms · max {:.1} ms (bare consumer tailing the topic: the broker's share)",
                b.p50_ms, b.p95_ms, b.p99_ms, b.max_ms
            ),
            None => String::new(),
        },
        format!(
            "alerts            {} raised, {} stored",
            p.alerts_raised, p.alert_rows
        ),
        format!(
            "CPU               {:.1} s ({:.2} cores) · peak RSS {:.1} MiB · RSS at the end {:.1} MiB · {} listings cached",
            p.cpu_seconds, p.cores_used, p.peak_rss_mib, p.rss_end_mib, p.cached_listings
        ),
    ];
    if let Some(s) = &f.stall {
        lines.push(format!(
            "postgres stall    {} s{}: RSS {:.1} MiB before, at most {:.1} MiB during, {:.1} MiB at its end",
            s.seconds,
            s.window.as_ref().map_or(String::new(), |w| format!(
                " (t = {:.1}..{:.1} s)",
                w.from_s, w.to_s
            )),
            s.rss_before_mib,
            s.rss_max_during_mib,
            s.rss_last_during_mib
        ));
        for sample in &s.samples {
            lines.push(format!(
                "  t={:>6.1}s  rss {:>7.1} MiB  committed {:>9}{}",
                sample.t_s,
                sample.rss_mib,
                sample.committed,
                if sample.stalled {
                    "  (postgres stalled)"
                } else {
                    ""
                }
            ));
        }
    }
    if let Some(py) = &f.python {
        lines.push(match &py.error {
            Some(e) if py.events == 0 => format!("python consumer   did not run: {e}"),
            _ => format!(
                "python consumer   {:>10.1} events/s   ({} events in {:.1} s, {} alerts, {:.1} CPU s, consumer group: {}){}",
                py.events_per_s,
                py.events,
                py.seconds,
                py.alerts,
                py.cpu_seconds,
                py.consumer_group,
                py.error.as_ref().map_or(String::new(), |e| format!(" — {e}"))
            ),
        });
        if py.events_per_s > 0.0 {
            lines.push(format!(
                "                  ConScope end to end is {:.0}x the Python consumer",
                p.events_per_s / py.events_per_s
            ));
        }
    }
    lines.push(if f.kept {
        format!("kept database {}", f.database)
    } else {
        format!("dropped database {}", f.database)
    });
    lines.push(format!(
        "the topics {}… stay on the broker (Tansu 0.6.0 would delete every topic with them)",
        f.raw_topic
    ));
    for problem in &f.cleanup_problems {
        lines.push(format!("warning: {problem}"));
    }
    let mut out = std::io::stdout().lock();
    for line in lines.into_iter().filter(|l| !l.is_empty()) {
        writeln!(out, "{line}").map_err(|source| BenchError::Io {
            what: "writing to stdout".into(),
            source,
        })?;
    }
    Ok(())
}

pub fn print_cache(f: &CacheFigures, json: bool) -> Result<(), BenchError> {
    if json {
        return print_json(f);
    }
    println!(
        "price cache: {} listings (keys {:.1} bytes on average): {:.0} bytes per listing resident, \
         {:.0} at the peak while filling (RSS {:.1} → {:.1} MiB)",
        f.listings,
        f.key_bytes,
        f.bytes_per_listing,
        f.peak_bytes_per_listing,
        f.rss_before_mib,
        f.rss_after_mib
    );
    Ok(())
}
