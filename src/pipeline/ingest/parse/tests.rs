use proptest::prelude::*;

use super::*;
use crate::model::PriceEventFields;

const FIRST_CONSCOPE: &str = r#"{"event_id": "taylor_swift_metlife_2025", "event_name": "Taylor Swift | The Eras Tour", "venue": "MetLife Stadium", "event_date": "2025-05-26T19:00:00", "source": "stubhub", "section": "112", "row": "F", "seat": "7", "price": 342.5, "fees": 51.38, "total_price": 393.88, "timestamp": "2026-11-21T10:00:00.123456", "listing_id": "SH-88123", "listing_url": "https://example.com/l/88123", "quantity": 2, "delivery_method": "mobile", "seller_notes": null}"#;

fn parse(s: &[u8]) -> Result<Arc<PriceEvent>, ParseError> {
    Parser::new().parse(s)
}

#[test]
fn first_conscope_record_is_accepted_as_is() {
    let e = parse(FIRST_CONSCOPE.as_bytes()).expect("valid");
    assert_eq!(e.event_id(), "taylor_swift_metlife_2025");
    assert_eq!(e.price, 34_250);
    assert_eq!(e.fees, Some(5_138));
    assert_eq!(e.total_price, 39_388);
    assert_eq!(e.quantity, 2);
    assert_eq!(e.listing_key(), "stubhub:SH-88123");
    assert_eq!(e.timestamp.to_rfc3339(), "2026-11-21T10:00:00.123456+00:00");
    assert_eq!(e.seller_notes(), None);
}

#[test]
fn unknown_fields_are_ignored_and_numeric_strings_accepted() {
    let e = parse(
        br#"{"event_id":"e","event_name":"n","venue":"v","source":"mock","price":"99.99","seat":12,
            "timestamp":"2026-11-21T10:00:00+02:00","brand_new_field":{"nested":[1,2,3]}}"#,
    )
    .expect("valid");
    assert_eq!(e.price, 9_999);
    assert_eq!(e.total_price, 9_999);
    assert_eq!(e.seat(), "12");
    assert_eq!(e.timestamp.to_rfc3339(), "2026-11-21T08:00:00+00:00");
    assert_eq!(e.listing_key(), "e_mock___12");
}

#[test]
fn bad_records_say_why() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty value"),
        (b"   ", "empty value"),
        (b"[1,2]", "expected a JSON object, found an array"),
        (b"\"text\"", "expected a JSON object, found a string"),
        (b"{\"event_id\":", "invalid JSON"),
        (b"\xff\xfe{}", "invalid JSON"),
        (br#"{"event_name":"n","venue":"v","source":"s","price":1,"timestamp":"2026-01-01T00:00:00"}"#, "missing required field `event_id`"),
        (br#"{"event_id":"e","event_name":"n","venue":"v","source":"s","price":0,"timestamp":"2026-01-01T00:00:00"}"#, "field `price` must be greater than 0"),
        (br#"{"event_id":"e","event_name":"n","venue":"v","source":"s","price":-3,"timestamp":"2026-01-01T00:00:00"}"#, "field `price` must be greater than 0"),
        (br#"{"event_id":"e","event_name":"n","venue":"v","source":"s","price":"abc","timestamp":"2026-01-01T00:00:00"}"#, "field `price` `abc` is not a number"),
        (br#"{"event_id":"e","event_name":"n","venue":"v","source":"s","price":"NaN","timestamp":"2026-01-01T00:00:00"}"#, "field `price` must be a finite number"),
        (br#"{"event_id":"e","event_name":"n","venue":"v","source":"s","price":5}"#, "missing required field `timestamp`"),
        (br#"{"event_id":"e","event_name":"n","venue":"v","source":"s","price":5,"timestamp":"yesterday"}"#, "field `timestamp` is not an ISO-8601 date-time"),
        (br#"{"event_id":7,"event_name":"n","venue":"v","source":"s","price":5,"timestamp":"2026-01-01T00:00:00"}"#, "field `event_id` must be a string, found a number"),
    ];
    for (input, expected) in cases {
        let err = parse(input).expect_err("must be refused").to_string();
        assert!(
            err.starts_with(expected),
            "{:?}: got {err:?}",
            String::from_utf8_lossy(input)
        );
    }
}

/// A valid record with `field` set to the JSON value `value` (added when absent).
fn with(field: &str, value: &str) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_str(FIRST_CONSCOPE).expect("json");
    v[field] = serde_json::from_str(value).expect("value json");
    serde_json::to_vec(&v).expect("serializes")
}

fn refusal(record: &[u8]) -> String {
    parse(record).expect_err("must be refused").to_string()
}

#[test]
fn records_postgres_would_refuse_are_refused_with_the_reason() {
    let long = format!("\"{}\"", "x".repeat(3_000));
    let cases = [
        (
            "section",
            r#""1\u00002""#.to_string(),
            "field `section` contains a NUL character (\\u0000)",
        ),
        (
            "seller_notes",
            r#""\u0000""#.to_string(),
            "field `seller_notes` contains a NUL character",
        ),
        (
            "event_name",
            r#""Caf\u00e9\u0000""#.to_string(),
            "field `event_name` contains a NUL character",
        ),
        (
            "timestamp",
            r#""-5000-01-01T00:00:00""#.to_string(),
            "field `timestamp` is before 2000-01-01",
        ),
        (
            "timestamp",
            r#""+262142-12-31T00:00:00""#.to_string(),
            "field `timestamp` is more than 5m ahead of the clock",
        ),
        (
            "timestamp",
            r#""9999-12-31T23:59:59""#.to_string(),
            "field `timestamp` is more than 5m ahead of the clock",
        ),
        (
            "timestamp",
            r#""1999-12-31T23:59:59Z""#.to_string(),
            "field `timestamp` is before 2000-01-01",
        ),
        (
            "event_id",
            long.clone(),
            "field `event_id` is 3000 bytes, over the 256-byte limit",
        ),
        (
            "listing_id",
            long.clone(),
            "field `listing_id` is 3000 bytes, over the 256-byte limit",
        ),
        (
            "venue",
            long.clone(),
            "field `venue` is 3000 bytes, over the 1024-byte limit",
        ),
        (
            "listing_url",
            format!("\"{}\"", "u".repeat(2_049)),
            "field `listing_url` is 2049 bytes, over the 2048-byte limit",
        ),
        (
            "event_date",
            r#""1899-05-01""#.to_string(),
            "field `event_date` must be from 2000-01-01 to before 2200-01-01",
        ),
        (
            "event_date",
            r#""+262142-12-31T00:00:00""#.to_string(),
            "field `event_date` must be from 2000-01-01",
        ),
    ];
    for (field, value, expected) in cases {
        let err = refusal(&with(field, &value));
        assert!(
            err.starts_with(expected),
            "{field} = {}: {err}",
            &value[..value.len().min(40)]
        );
    }
}

#[test]
fn texts_at_their_limit_and_old_history_are_accepted() {
    let id = format!("\"{}\"", "i".repeat(limits::ID_BYTES));
    assert_eq!(
        parse(&with("listing_id", &id))
            .expect("at the limit")
            .listing_id()
            .map(str::len),
        Some(256)
    );
    let old = parse(&with("timestamp", r#""2000-01-01T00:00:00Z""#)).expect("2000 is in range");
    assert_eq!(old.timestamp.timestamp(), limits::EARLIEST_SECS);
    assert!(
        parse(&with("timestamp", r#""2003-07-14T09:30:00""#)).is_ok(),
        "a replay of 2003"
    );
    assert!(parse(&with("event_date", r#""2199-12-31""#)).is_ok());
}

#[test]
fn an_observation_ahead_of_the_clock_is_refused_past_the_configured_skew() {
    let ahead = |minutes: i64| {
        let t = Utc::now() + TimeDelta::minutes(minutes);
        with("timestamp", &format!("\"{}\"", t.format("%Y-%m-%dT%H:%M:%S%.6f")))
    };
    assert!(parse(&ahead(1)).is_ok(), "a minute of clock skew is fine");
    assert!(refusal(&ahead(10)).contains("more than 5m ahead"));
    let mut lenient = Parser::with_max_future_skew(Duration::from_secs(3_600));
    assert!(lenient.parse(&ahead(10)).is_ok());
    assert!(lenient.parse(&ahead(90)).is_err());
    // The clock is read again when a record passes the last reading, so one refusal does not
    // make the parser refuse what a later clock allows.
    let mut p = Parser::new();
    assert!(p.parse(&ahead(1)).is_ok());
    assert!(p.parse(&ahead(-60)).is_ok());
}

#[test]
fn a_five_megabyte_value_is_refused_without_parsing() {
    let big = vec![b'a'; 5 * 1024 * 1024];
    assert_eq!(parse(&big), Err(ParseError::TooLarge(5 * 1024 * 1024)));
}

#[test]
fn deeply_nested_garbage_is_an_error_not_a_crash() {
    let mut s = "[".repeat(10_000);
    s.push_str(&"]".repeat(10_000));
    assert!(parse(s.as_bytes()).is_err());
    let mut s = "{\"a\":".repeat(5_000);
    s.push('1');
    s.push_str(&"}".repeat(5_000));
    assert!(parse(s.as_bytes()).is_err());
}

#[test]
fn naive_and_offset_timestamps_and_bare_dates() {
    assert_eq!(
        parse_time("2026-11-21T10:00:00").map(|t| t.timestamp()),
        Some(1_795_255_200)
    );
    assert_eq!(
        parse_time("2026-11-21 10:00:00.5").map(|t| t.timestamp_millis()),
        Some(1_795_255_200_500)
    );
    assert_eq!(
        parse_time("2026-11-21T10:00:00Z").map(|t| t.timestamp()),
        Some(1_795_255_200)
    );
    assert_eq!(
        parse_date("2026-11-21").map(|t| t.timestamp()),
        Some(1_795_219_200)
    );
    assert_eq!(parse_time("21/11/2026"), None);
    assert_eq!(
        parse_time("2026-11-21T10:00:00+02:00").map(|t| t.timestamp()),
        Some(1_795_248_000)
    );
    assert_eq!(
        parse_time("2026-11-21T10:00:00.123456789-01:30").map(|t| t.timestamp_nanos_opt()),
        Some(Some(1_795_260_600_123_456_789))
    );
    assert_eq!(parse_time("2026-02-30T10:00:00"), None, "no such day");
    assert_eq!(parse_time("2026-11-21T25:00:00"), None, "no such hour");
    assert_eq!(parse_time("2027-02-29T10:00:00"), None, "not a leap year");
    assert_eq!(
        parse_time("2100-02-29T10:00:00"),
        None,
        "a century is not a leap year"
    );
    assert_eq!(
        parse_time("2000-02-29T00:00:00").map(|t| t.timestamp()),
        Some(951_782_400),
        "a fourth century is"
    );
    assert_eq!(
        parse_time("1969-12-31T23:59:59.5Z").map(|t| t.timestamp_millis()),
        Some(-500),
        "before the epoch"
    );
}

/// Both paths, compared: the flat pass must either defer or agree with the tape exactly.
fn paths_agree(value: &[u8]) -> Result<(), TestCaseError> {
    let tape = Parser::new().parse_tape(value);
    if let Some(fields) = flat::scan(value) {
        prop_assert_eq!(
            finish(fields, &mut Memo::default(), &mut Clock::default()),
            tape,
            "{}",
            String::from_utf8_lossy(value)
        );
    }
    Ok(())
}

#[test]
fn the_common_shape_takes_the_flat_path_and_the_rest_the_tape() {
    let flat = |s: &str| flat::scan(s.as_bytes()).is_some();
    assert!(flat(FIRST_CONSCOPE));
    assert!(
        !flat(r#"  {"price":1,"unknown":[]}"#),
        "nested values take the tape"
    );
    assert!(!flat(r#"{"event_name":"Caf\u00e9"}"#), "escapes take the tape");
    assert!(!flat(r#"{"price":1e2}"#), "exponents take the tape");
    assert!(!flat(r#"{"price":"99.99"}"#), "numeric strings take the tape");
    assert!(
        !flat("{\"event_name\":\"a\tb\"}"),
        "control characters take the tape"
    );
    assert!(flat(r#"{"event_name":"Café ☕","other":-0.5,"flag":true}"#));
    assert!(flat("{}"));
    for bad in [
        r#"{"a":1,}"#,
        r#"{"a":01}"#,
        r#"{"a":1.}"#,
        r#"{"a":-}"#,
        r#"{"a" 1}"#,
        r#"{"a":1}x"#,
        r#"{"a":nul}"#,
    ] {
        assert!(!flat(bad), "{bad} is not JSON");
        assert!(parse(bad.as_bytes()).is_err(), "{bad} is not JSON");
    }
}

#[test]
fn both_paths_agree_on_edge_cases() -> Result<(), TestCaseError> {
    let edge = [
        FIRST_CONSCOPE.to_string(),
        FIRST_CONSCOPE.replace("342.5", "342.50000"),
        FIRST_CONSCOPE.replace("342.5", "342.505"),
        FIRST_CONSCOPE.replace("342.5", "-0"),
        FIRST_CONSCOPE.replace("342.5", "9999999999999"),
        FIRST_CONSCOPE.replace("342.5", "99999999.99"),
        FIRST_CONSCOPE.replace("342.5", "100000000"),
        FIRST_CONSCOPE.replace("342.5", "0.001"),
        FIRST_CONSCOPE.replace("\"quantity\": 2", "\"quantity\": 2.0"),
        FIRST_CONSCOPE.replace("\"quantity\": 2", "\"quantity\": -3"),
        FIRST_CONSCOPE.replace("\"quantity\": 2", "\"quantity\": null"),
        FIRST_CONSCOPE.replace("\"seat\": \"7\"", "\"seat\": 7"),
        FIRST_CONSCOPE.replace("\"seat\": \"7\"", "\"seat\": null"),
        FIRST_CONSCOPE.replace("\"venue\": \"MetLife Stadium\"", "\"venue\": \"  \""),
        FIRST_CONSCOPE.replace("\"venue\": \"MetLife Stadium\"", "\"venue\": null"),
        FIRST_CONSCOPE.replace("\"listing_id\": \"SH-88123\"", "\"listing_id\": \"\""),
        FIRST_CONSCOPE.replace("\"price\": 342.5", "\"price\": 342.5, \"price\": 12"),
        FIRST_CONSCOPE.replace(
            "\"timestamp\": \"2026-11-21T10:00:00.123456\"",
            "\"timestamp\": null",
        ),
        FIRST_CONSCOPE.replace(", ", ",\n  "),
        FIRST_CONSCOPE.replace("}", "} "),
    ];
    for e in &edge {
        paths_agree(e.as_bytes())?;
    }
    Ok(())
}

proptest! {
    /// The fixed-position reader gives what chrono's general parser gives, for any date and
    /// time (impossible days included), with or without fractions and offsets.
    #[test]
    fn the_fixed_position_timestamp_reader_agrees_with_chrono(
        y in 1i32..=9999, mo in 1u32..=12, d in 1u32..=31, h in 0u32..=23, mi in 0u32..=59,
        sec in 0u32..=59, frac in prop::option::of((1usize..=9, 0u32..1_000_000_000)),
        offset in prop::option::of((any::<bool>(), 0u32..=23, 0u32..=59)),
    ) {
        let mut text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{sec:02}");
        if let Some((digits, n)) = frac {
            text.push_str(&format!(".{:09}", n)[..=digits]);
        }
        let chrono_text = match offset {
            None => format!("{text}Z"),
            Some((plus, oh, om)) => {
                text.push_str(&format!("{}{oh:02}:{om:02}", if plus { '+' } else { '-' }));
                text.clone()
            }
        };
        let expected = DateTime::parse_from_rfc3339(&chrono_text).ok().map(|t| t.with_timezone(&Utc));
        prop_assert_eq!(parse_time(&text), expected, "{}", text);
    }

    /// One parser reads record after record: the day it remembers from one timestamp never
    /// changes what the next one means, whether its day is the same, another or no day at all.
    #[test]
    fn a_remembered_day_never_changes_the_next_timestamp(
        times in proptest::collection::vec((0usize..5, 0u32..24, 0u32..60, 0u32..1_000), 1..40),
    ) {
        const DAYS: [&str; 5] = ["2026-11-20", "2026-11-21", "2026-02-30", "2027-02-29", "2028-02-29"];
        let mut day = None;
        for (d, h, m, ms) in times {
            let text = format!("{}T{h:02}:{m:02}:07.{ms:03}", DAYS[d]);
            prop_assert_eq!(parse_time_with(&text, &mut day), parse_time(&text), "{}", text);
        }
    }

    /// Any record a byte or two away from a valid one: the paths agree on what it means or
    /// what is wrong with it.
    #[test]
    fn the_flat_path_agrees_with_the_tape_on_damaged_records(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), prop::sample::select(
            b" \t\n{}[]\",:.-+eE0123456789nultrfasx\\\xc3\xa9\x01".to_vec())), 1..3),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = FIRST_CONSCOPE.as_bytes().to_vec();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        paths_agree(&bytes)?;
    }

    #[test]
    fn serialized_events_parse_back(
        event_id in "[a-z_]{1,20}", section in "[A-Z0-9 ]{0,8}", seat in "[0-9]{0,3}",
        price_cents in 1i64..10_000_000, fees in proptest::option::of(0i64..100_000),
        secs in limits::EARLIEST_SECS..1_780_000_000, name in "\\PC{1,30}",
    ) {
        let event = PriceEvent::from(PriceEventFields {
            event_id: event_id.into(),
            event_name: if name.trim().is_empty() { "x".into() } else { name.into() },
            venue: "Venue".into(), event_date: None, source: "mock".into(), section: section.into(),
            row: "A".into(), seat: seat.into(),
            price: price_cents, fees, total_price: price_cents + fees.unwrap_or(0),
            timestamp: DateTime::from_timestamp(secs, 0).expect("in range"),
            listing_id: None, listing_url: None, quantity: 1, delivery_method: None, seller_notes: None,
        });
        let bytes = serde_json::to_vec(&event).expect("serializes");
        paths_agree(&bytes)?;
        prop_assert_eq!(&*parse(&bytes).expect("parses"), &event);
    }

    #[test]
    fn the_fast_timestamp_path_agrees_with_chrono(secs in 0i64..4_000_000_000, micros in 0u32..1_000_000, off_min in -720i32..840) {
        let t = DateTime::from_timestamp(secs, micros * 1000).expect("in range");
        let offset = chrono::FixedOffset::east_opt(off_min * 60).expect("offset");
        let with_offset = t.with_timezone(&offset).to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
        prop_assert_eq!(parse_time(&with_offset), Some(t));
        let naive = t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
        prop_assert_eq!(parse_time(&naive), Some(t));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        paths_agree(&bytes)?;
    }
}
