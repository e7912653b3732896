//! Any JSON-shaped record, however odd, through parse → detect → the rows persist writes →
//! the alert rules: nothing panics, and each record is either refused with a reason (its DLQ
//! `error` header) or becomes rows whose every value PostgreSQL accepts.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::alert::rules::{Observation as WatchObservation, Trigger, condition};
use crate::config::{DetectConfig, LatePolicy, WindowsConfig};
use crate::model::Alert;
use crate::model::limits;
use crate::pipeline::detect::stage::Detector;
use crate::pipeline::detect::windows::{Observation, Windows};
use crate::pipeline::detect::{PriceCache, Rules};
use crate::pipeline::ingest::parse::Parser;
use crate::pipeline::messages::{InRecord, Processed};

const FIELDS: [&str; 18] = [
    "event_id",
    "event_name",
    "venue",
    "event_date",
    "source",
    "section",
    "row",
    "seat",
    "price",
    "fees",
    "total_price",
    "timestamp",
    "listing_id",
    "listing_url",
    "quantity",
    "delivery_method",
    "seller_notes",
    "something_else",
];

/// `numeric(10,2)`'s range, in cents.
const NUMERIC_10_2: std::ops::RangeInclusive<i64> = -9_999_999_999..=9_999_999_999;
/// A btree index entry's limit (listing keys and event ids are indexed).
const BTREE_ENTRY_BYTES: usize = 2_704;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_:-]{1,12}",
        "\\PC{0,24}",
        any::<String>(),
        "[\\x00-\\x1f\\\\\"]{0,6}",
        (0usize..6_000).prop_map(|n| "x".repeat(n)),
        Just(String::new()),
        Just("  ".to_string()),
        Just("a\u{0}b".to_string()),
    ]
}

fn time_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(2026i64),
            1999i64..2002,
            -10_000i64..10_000,
            -300_000i64..300_000
        ],
        1u32..=13,
        0u32..=32,
        0u32..=25,
        prop::option::of(prop_oneof![
            Just("Z"),
            Just("+14:00"),
            Just("-23:59"),
            Just(".123456789")
        ]),
    )
        .prop_map(|(y, mo, d, h, tail)| {
            let year = if (0..=9999).contains(&y) {
                format!("{y:04}")
            } else {
                format!("{y:+}")
            };
            format!("{year}-{mo:02}-{d:02}T{h:02}:30:00{}", tail.unwrap_or(""))
        })
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just(1e-300),
            Just(1e300),
            Just(99_999_999.99),
            Just(100_000_000.0),
            Just(0.004)
        ]
        .prop_map(Value::from),
        text().prop_map(Value::String),
        time_text().prop_map(Value::String),
        any::<i64>().prop_map(|n| Value::String(n.to_string())),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,3}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A record: mostly valid fields (so many records get through to detect), some fields odd.
fn record() -> impl Strategy<Value = Vec<u8>> {
    let odd = prop::collection::vec((prop::sample::select(FIELDS.to_vec()), value()), 0..3);
    let listing = prop_oneof![Just("L1".to_string()), Just("L2".to_string()), text()];
    let price = prop_oneof![3 => 1i64..20_000, 1 => any::<i64>()];
    let when = prop_oneof![
        3 => (0i64..86_400).prop_map(|s| (Utc::now() - chrono::TimeDelta::seconds(s)).to_rfc3339()),
        1 => time_text(),
    ];
    (odd, listing, price, when).prop_map(|(odd, listing, price, when)| {
        let mut m = Map::new();
        for (k, v) in [
            ("event_id", Value::from("e1")),
            ("event_name", Value::from("Show")),
            ("venue", Value::from("Hall")),
            ("source", Value::from("mock")),
            ("price", Value::from(crate::model::Cents(price).to_dollars())),
            ("timestamp", Value::from(when)),
            ("listing_id", Value::from(listing)),
        ] {
            m.insert(k.to_string(), v);
        }
        for (k, v) in odd {
            m.insert(k.to_string(), v);
        }
        serde_json::to_vec(&Value::Object(m)).unwrap_or_default()
    })
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), TestCaseError> {
    prop_assert!(!s.contains('\0'), "{field} holds a NUL");
    prop_assert!(s.len() <= max, "{field} is {} bytes", s.len());
    Ok(())
}

fn check_time(field: &str, t: DateTime<Utc>, latest: DateTime<Utc>) -> Result<(), TestCaseError> {
    let earliest = DateTime::from_timestamp(limits::EARLIEST_SECS, 0).unwrap_or_default();
    prop_assert!(t >= earliest && t <= latest, "{field} {t} is out of range");
    Ok(())
}

/// Every value of the rows persist writes for `p` is one PostgreSQL accepts.
fn check_rows(p: &Processed, latest: DateTime<Utc>) -> Result<(), TestCaseError> {
    let e = &p.record.event;
    for (field, s, max) in [
        ("event_id", e.event_id(), limits::ID_BYTES),
        ("event_name", e.event_name(), limits::NAME_BYTES),
        ("venue", e.venue(), limits::NAME_BYTES),
        ("source", e.source(), limits::ID_BYTES),
        ("section", e.section(), limits::ID_BYTES),
        ("row", e.row(), limits::ID_BYTES),
        ("seat", e.seat(), limits::ID_BYTES),
        ("listing_id", e.listing_id().unwrap_or_default(), limits::ID_BYTES),
        (
            "listing_url",
            e.listing_url().unwrap_or_default(),
            limits::URL_BYTES,
        ),
        (
            "delivery_method",
            e.delivery_method().unwrap_or_default(),
            limits::ID_BYTES,
        ),
        (
            "seller_notes",
            e.seller_notes().unwrap_or_default(),
            limits::NOTES_BYTES,
        ),
        ("listing_key", p.listing_key.as_str(), BTREE_ENTRY_BYTES / 2),
    ] {
        check_text(field, s, max)?;
    }
    check_time("timestamp", e.timestamp, latest)?;
    if let Some(d) = e.event_date {
        prop_assert!(
            (limits::EARLIEST_SECS..limits::EVENT_DATE_END_SECS).contains(&d.timestamp()),
            "event_date {d}"
        );
    }
    prop_assert!(e.price > 0);
    for cents in [
        Some(e.price),
        e.fees,
        Some(e.total_price),
        p.change.previous_cents,
    ]
    .into_iter()
    .flatten()
    {
        prop_assert!(NUMERIC_10_2.contains(&cents), "{cents} cents");
    }
    prop_assert!((1..=10_000).contains(&e.quantity));
    prop_assert!(NUMERIC_10_2.contains(&p.state.lowest_price) && NUMERIC_10_2.contains(&p.state.last_price));
    let seen = DateTime::<Utc>::from_timestamp_millis(p.state.last_seen_ms);
    prop_assert!(seen.is_some_and(|t| t <= latest));
    Ok(())
}

fn check_alert(a: &Alert) -> Result<(), TestCaseError> {
    for cents in [a.old_price, a.new_price, a.drop_amount] {
        prop_assert!(NUMERIC_10_2.contains(&cents), "{cents} cents");
    }
    prop_assert!(a.drop_percent.is_finite());
    let json = serde_json::to_string(a).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(!json.contains("\\u0000"));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_record_is_refused_with_a_reason_or_becomes_rows_postgres_accepts(
        records in prop::collection::vec(record(), 1..12),
        triggers in prop::collection::vec((any::<i64>(), any::<f64>(), any::<i32>()), 1..3),
    ) {
        let mut parser = Parser::new();
        let detector = Detector::new(Arc::new(PriceCache::new()), Rules::from_config(&DetectConfig::default()));
        let mut windows = Windows::new(
            &WindowsConfig { late_records: LatePolicy::Merge, ..WindowsConfig::default() },
            None,
        );
        let now = Instant::now();
        for (offset, bytes) in records.iter().enumerate() {
            let event = match parser.parse(bytes) {
                Ok(event) => event,
                Err(reason) => {
                    prop_assert!(!reason.to_string().is_empty());
                    continue;
                }
            };
            // Read after the parse: the parser's bound is the clock at parse time plus the skew.
            let latest = Utc::now() + chrono::TimeDelta::from_std(limits::MAX_FUTURE_SKEW).unwrap_or_default();
            let mut alerts = Vec::new();
            let record = InRecord { partition: 0, offset: offset as i64, kafka_ts: event.timestamp, event };
            let p = detector.process(record, &mut alerts);
            check_rows(&p, latest)?;
            for a in &alerts {
                check_alert(a)?;
            }
            let e = &p.record.event;
            windows.observe(Observation {
                event_id: e.event_id(), source: e.source(), listing_key: &p.listing_key, price: e.price,
                ts_ms: e.timestamp.timestamp_millis(), partition: 0, offset: offset as i64, kind: p.change.kind,
            }, now);
            for row in windows.advance(now) {
                prop_assert!(row.min > 0 && row.max <= *NUMERIC_10_2.end());
            }
            prop_assert!(windows.watermark().is_none_or(|w| w <= latest.timestamp_millis()));
            for &(target, percent, days) in &triggers {
                for trigger in [
                    Trigger::AtOrBelow { target },
                    Trigger::DropPercent { percent },
                    Trigger::DropVsLow { percent, lookback_days: days },
                    Trigger::NewLowListing,
                    Trigger::NewLowEvent,
                ] {
                    let obs = WatchObservation {
                        price: e.price,
                        previous: p.change.previous_cents,
                        baseline: Some(p.state.lowest_price),
                    };
                    let _ = condition(&trigger, &obs, 100);
                    let _ = trigger.describe();
                }
            }
        }
    }
}
