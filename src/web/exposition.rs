//! `/metrics`: every engine metric in the Prometheus text format (version 0.0.4).
//!
//! Names follow `conscope_<stage>_<what>_<unit>`; counters end in `_total`. Families are
//! written stage by stage in pipeline order by [`render`]; a stage that grows counters adds its
//! families in its own block there (the alert stage's webhook deliveries and 429s go in the
//! block marked `alert`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::WebState;

/// Upper bounds (seconds) of the produce → commit latency histogram's buckets.
pub const LATENCY_BUCKETS_S: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A text-format writer: `# HELP`/`# TYPE` once per family, then its samples.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(
            self.out,
            "# HELP {name} {}",
            help.replace('\\', "\\\\").replace('\n', "\\n")
        );
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let v = v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
                let _ = write!(self.out, "{k}=\"{v}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The whole exposition, stage by stage.
pub fn render(s: &WebState) -> String {
    let m = &s.metrics;
    let c = &m.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed) as f64;
    let mut e = Exposition::default();
    e.family("conscope_build_info", "gauge", "ConScope version running")
        .sample(
            "conscope_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
    e.single(
        "conscope_process_uptime_seconds",
        "gauge",
        "Seconds since the web server started",
        s.started.elapsed().as_secs_f64(),
    );

    // source
    e.single(
        "conscope_source_records_total",
        "counter",
        "Price observations produced by built-in sources",
        n(&c.source_records),
    );
    e.single(
        "conscope_source_errors_total",
        "counter",
        "Failed produce attempts of built-in sources",
        n(&c.source_errors),
    );

    // ingest
    e.single(
        "conscope_ingest_records_total",
        "counter",
        "Records fetched from raw_prices",
        n(&c.ingest_records),
    );
    e.single(
        "conscope_ingest_bytes_total",
        "counter",
        "Bytes of record values fetched from raw_prices",
        n(&c.ingest_bytes),
    );
    e.single(
        "conscope_ingest_errors_total",
        "counter",
        "Records that failed to parse or validate",
        n(&c.ingest_errors),
    );
    e.single(
        "conscope_ingest_dlq_records_total",
        "counter",
        "Records sent to the dead-letter topic",
        n(&c.dlq_records),
    );
    e.single(
        "conscope_ingest_offset_resets_total",
        "counter",
        "Stored offsets reset to earliest (possible data loss)",
        n(&c.offset_resets),
    );
    let offsets = m.partition_offsets();
    e.family(
        "conscope_ingest_lag_records",
        "gauge",
        "Consumer lag per raw_prices partition: high watermark minus committed next offset",
    );
    for (p, (hw, done)) in &offsets {
        e.sample(
            "conscope_ingest_lag_records",
            &[("partition", &p.to_string())],
            (hw - done).max(0) as f64,
        );
    }
    e.family(
        "conscope_ingest_high_watermark_offset",
        "gauge",
        "Latest offset seen on each raw_prices partition",
    );
    for (p, (hw, _)) in &offsets {
        e.sample(
            "conscope_ingest_high_watermark_offset",
            &[("partition", &p.to_string())],
            *hw as f64,
        );
    }
    e.family(
        "conscope_ingest_committed_offset",
        "gauge",
        "Next offset to read, as committed to Postgres, per raw_prices partition",
    );
    for (p, (_, done)) in &offsets {
        e.sample(
            "conscope_ingest_committed_offset",
            &[("partition", &p.to_string())],
            *done as f64,
        );
    }

    // pipeline channels
    let snap = m.snapshot();
    e.family(
        "conscope_pipeline_channel_used_batches",
        "gauge",
        "Batches waiting in each channel between stages",
    );
    for (name, fill) in &snap.channels {
        e.sample(
            "conscope_pipeline_channel_used_batches",
            &[("channel", name)],
            fill.used as f64,
        );
    }
    e.family(
        "conscope_pipeline_channel_capacity_batches",
        "gauge",
        "Capacity of each channel between stages",
    );
    for (name, fill) in &snap.channels {
        e.sample(
            "conscope_pipeline_channel_capacity_batches",
            &[("channel", name)],
            fill.capacity as f64,
        );
    }

    // detect
    e.single(
        "conscope_detect_records_total",
        "counter",
        "Records compared with the price cache",
        n(&c.detect_records),
    );
    e.family(
        "conscope_detect_changes_total",
        "counter",
        "Price changes found, by kind",
    )
    .sample(
        "conscope_detect_changes_total",
        &[("kind", "drop")],
        n(&c.detect_drops),
    )
    .sample(
        "conscope_detect_changes_total",
        &[("kind", "increase")],
        n(&c.detect_increases),
    )
    .sample(
        "conscope_detect_changes_total",
        &[("kind", "new")],
        n(&c.detect_new),
    )
    .sample(
        "conscope_detect_changes_total",
        &[("kind", "out_of_order")],
        n(&c.detect_out_of_order),
    );
    e.single(
        "conscope_detect_alerts_total",
        "counter",
        "Alerts raised by the detect rules",
        n(&c.alerts_raised),
    );
    e.single(
        "conscope_detect_cache_listings",
        "gauge",
        "Listings held in this instance's price cache",
        s.cache.len() as f64,
    );

    // persist
    e.single(
        "conscope_persist_batches_total",
        "counter",
        "Transactions committed to Postgres",
        n(&c.persist_batches),
    );
    e.single(
        "conscope_persist_records_total",
        "counter",
        "Records committed to Postgres",
        n(&c.persist_records),
    );
    e.single(
        "conscope_persist_errors_total",
        "counter",
        "Failed batch writes (each retried)",
        n(&c.persist_errors),
    );
    let h = m.latency_buckets(&LATENCY_BUCKETS_S);
    let name = "conscope_persist_commit_latency_seconds";
    e.family(
        name,
        "histogram",
        "Latency from the Kafka produce timestamp to the Postgres commit",
    );
    for (le, count) in h.bounds_s.iter().zip(&h.cumulative) {
        e.sample(&format!("{name}_bucket"), &[("le", &number(*le))], *count as f64);
    }
    e.sample(&format!("{name}_bucket"), &[("le", "+Inf")], h.count as f64)
        .sample(&format!("{name}_sum"), &[], h.sum_s)
        .sample(&format!("{name}_count"), &[], h.count as f64);

    // publish
    e.single(
        "conscope_publish_records_total",
        "counter",
        "Records produced to processed_prices and price_alerts",
        n(&c.publish_records),
    );
    e.single(
        "conscope_publish_errors_total",
        "counter",
        "Failed produce attempts to the output topics",
        n(&c.publish_errors),
    );

    // alert: notifier families (conscope_alert_deliveries_total{channel,status},
    // conscope_alert_webhook_429_total{channel}) belong here, next to their counters.
    e.single(
        "conscope_alert_delivery_retries_total",
        "counter",
        "Deliveries retried after a 5xx, a network error or a 404/410 not yet persistent",
        n(&c.alert_delivery_retries),
    );
    e.single(
        "conscope_alert_possible_repeats_total",
        "counter",
        "Alerts sent again after a request that may have been taken (5xx, no answer, or a stop before its answer was recorded)",
        n(&c.alert_possible_repeats),
    );

    // supervisor
    e.single(
        "conscope_supervisor_restarts_total",
        "counter",
        "Restarts of failed supervised tasks",
        n(&c.task_restarts),
    );

    // outages of the broker and of Postgres, waited out by the stages
    let outages = [("kafka", &m.kafka_outage), ("postgres", &m.postgres_outage)];
    e.family(
        "conscope_pipeline_outages_total",
        "counter",
        "Outages of a dependency seen by the engine (first failing call to last recovered one)",
    );
    for (d, o) in outages {
        e.sample(
            "conscope_pipeline_outages_total",
            &[("dependency", d)],
            o.count() as f64,
        );
    }
    e.family(
        "conscope_pipeline_outage_in_progress",
        "gauge",
        "1 while a dependency is unavailable and the engine waits for it",
    );
    for (d, o) in outages {
        let now = if o.now().is_some() { 1.0 } else { 0.0 };
        e.sample("conscope_pipeline_outage_in_progress", &[("dependency", d)], now);
    }
    e.family(
        "conscope_pipeline_outage_seconds_total",
        "counter",
        "Total time a dependency was unavailable, the outage in progress included",
    );
    for (d, o) in outages {
        e.sample(
            "conscope_pipeline_outage_seconds_total",
            &[("dependency", d)],
            o.total().as_secs_f64(),
        );
    }
    e.finish()
}

pub async fn metrics(State(s): State<WebState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], render(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Exposition::default();
        e.family("x_total", "counter", "help")
            .sample("x_total", &[("a", "q\"b\\n\nx")], 2.0);
        assert_eq!(
            e.finish(),
            "# HELP x_total help\n# TYPE x_total counter\nx_total{a=\"q\\\"b\\\\n\\nx\"} 2\n"
        );
    }
}
