//! The engine's counters, declared once. Each line of the list below gives the field the stages
//! increment, the Prometheus name it is exported under (`_total` is appended when encoded), an
//! optional label, and the help text. [`Counters`], the snapshot's [`CounterValues`] and the
//! registry's entries are all generated from that list, so a new counter is one new line.
//!
//! Lines that share a name form one family told apart by their label
//! (`conscope_detect_changes_total{kind}`); the family's help is given on its first line.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Serialize;

macro_rules! counters {
    (@label) => { None };
    (@label $key:literal = $value:literal) => { Some(($key, $value)) };
    (@help) => { "" };
    (@help $help:literal) => { $help };
    ($(
        $(#[$doc:meta])*
        $field:ident: $name:literal $({ $key:literal = $value:literal })? $(, $help:literal)?;
    )*) => {
        /// Counters of the engine: `prometheus-client` counters, atomics that take no lock.
        #[derive(Debug, Default)]
        pub struct Counters {
            $( $(#[$doc])* pub $field: Counter, )*
        }

        /// Every counter's value at one instant (flattened into the [`Snapshot`](super::Snapshot)).
        #[derive(Debug, Clone, Default, PartialEq, Serialize)]
        pub struct CounterValues {
            $( pub $field: u64, )*
        }

        impl Counters {
            pub fn values(&self) -> CounterValues {
                CounterValues { $( $field: self.$field.get(), )* }
            }

            /// Each counter with how it is exported, in the order of the list.
            fn exported(&self) -> Vec<Exported> {
                vec![$(
                    Exported {
                        name: $name,
                        label: counters!(@label $($key = $value)?),
                        help: counters!(@help $($help)?),
                        counter: self.$field.clone(),
                    },
                )*]
            }
        }
    };
}

counters! {
    source_records: "conscope_source_records", "Price observations produced by built-in sources";
    source_errors: "conscope_source_errors", "Failed produce attempts of built-in sources";
    /// Polled events or price series left out because the API gave no usable price.
    source_skipped: "conscope_source_skipped_records",
        "Polled events or price series left out because the API gave no usable price";
    ingest_records: "conscope_ingest_records", "Records fetched from raw_prices";
    ingest_bytes: "conscope_ingest_bytes", "Bytes of record values fetched from raw_prices";
    ingest_errors: "conscope_ingest_errors", "Records that failed to parse or validate";
    dlq_records: "conscope_ingest_dlq_records", "Records sent to the dead-letter topic";
    offset_resets: "conscope_ingest_offset_resets",
        "Stored offsets reset to earliest (possible data loss)";
    detect_records: "conscope_detect_records", "Records compared with the price cache";
    detect_drops: "conscope_detect_changes" { "kind" = "drop" }, "Price changes found, by kind";
    detect_increases: "conscope_detect_changes" { "kind" = "increase" };
    detect_new: "conscope_detect_changes" { "kind" = "new" };
    /// Observations older than their listing's last one: stored, but they changed nothing.
    detect_out_of_order: "conscope_detect_changes" { "kind" = "out_of_order" };
    alerts_raised: "conscope_detect_alerts", "Alerts raised by the detect rules";
    windows_closed: "conscope_detect_windows_closed", "Aggregation windows closed and written";
    /// Records that arrived for a window already written (merged or dropped per config).
    windows_late_records: "conscope_detect_windows_late_records",
        "Records that arrived for a window already written (merged or dropped per config)";
    persist_batches: "conscope_persist_batches", "Transactions committed to Postgres";
    persist_records: "conscope_persist_records", "Records committed to Postgres";
    persist_errors: "conscope_persist_errors", "Failed batch writes (each retried)";
    publish_records: "conscope_publish_records",
        "Records produced to processed_prices and price_alerts";
    publish_errors: "conscope_publish_errors", "Failed produce attempts to the output topics";
    /// Alert-topic records the alert task evaluated (price_alerts and processed_prices).
    alert_records: "conscope_alert_records",
        "Alert-topic records evaluated (price_alerts and processed_prices)";
    /// Alerts raised by user watches.
    alert_watch_fired: "conscope_alert_watches_fired", "Alerts raised by user watches";
    /// Deliveries a notifier accepted (2xx), failed for good, and retried after 5xx/network errors.
    alert_deliveries_sent: "conscope_alert_deliveries" { "status" = "sent" },
        "Alert deliveries by outcome: sent (2xx) or failed for good";
    alert_deliveries_failed: "conscope_alert_deliveries" { "status" = "failed" };
    alert_delivery_retries: "conscope_alert_delivery_retries",
        "Deliveries retried after a 5xx, a network error or a 404/410 not yet persistent";
    /// Alerts sent again although an earlier request carrying them may have been taken: its
    /// answer was a 5xx or never came, or the process stopped before recording it.
    alert_possible_repeats: "conscope_alert_possible_repeats",
        "Alerts sent again after a request that may have been taken (5xx, no answer, or a stop before its answer was recorded)";
    /// 429 answers from notifiers, and the total time they asked us to wait.
    alert_rate_limited: "conscope_alert_webhook_429", "429 answers from notifiers";
    alert_retry_after_ms: "conscope_alert_retry_after_milliseconds",
        "Total wait asked for by notifiers' 429 answers (Retry-After)";
    task_restarts: "conscope_supervisor_restarts", "Restarts of failed supervised tasks";
}

/// One counter and the name, label and help it is exported with.
struct Exported {
    name: &'static str,
    label: Option<(&'static str, &'static str)>,
    help: &'static str,
    counter: Counter,
}

impl Counters {
    /// Register every counter with `registry`, in the order of the list; lines sharing a
    /// name become one family, registered where its first line is.
    pub(super) fn register(&self, registry: &mut Registry) {
        let exported = self.exported();
        let mut families: Vec<&str> = Vec::new();
        for e in &exported {
            if e.label.is_none() {
                registry.register(e.name, e.help, e.counter.clone());
            } else if !families.contains(&e.name) {
                families.push(e.name);
                let members = exported
                    .iter()
                    .filter(|m| m.name == e.name)
                    .filter_map(|m| Some((m.label?, m.counter.clone())))
                    .collect();
                registry.register(e.name, e.help, ByLabel(members));
            }
        }
    }
}

/// The counters of one family, each with its label.
#[derive(Debug)]
struct ByLabel(Vec<((&'static str, &'static str), Counter)>);

impl EncodeMetric for ByLabel {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (label, counter) in &self.0 {
            counter.encode(encoder.encode_family(&[*label])?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}
