//! The detector benchmark: parse + detect on realistic data, beside a bare parse of the same bytes.
//!
//! Data: the first ConScope's PriceEvent JSON (naive `isoformat()` timestamps, ~400 bytes),
//! over 1M distinct listings already in the cache; of the measured events about 10% are drops,
//! 10% rises and the rest unchanged re-polls. Throughput is per core (criterion runs one thread).
//!
//! `cargo bench --bench detector` (under `cargo test` it runs once on a small data set).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use conscope::config::DetectConfig;
use conscope::detect::stage::Detector;
use conscope::detect::{PriceCache, Rules};
use conscope::ingest::parse::Parser;
use conscope::metrics::Metrics;
use conscope::runtime::messages::{InRecord, IngestBatch};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// The engine's allocator, as `conscope` itself uses it.
#[global_allocator]
static ALLOC: conscope::alloc::Allocator = conscope::alloc::Allocator;

/// Records per ingest batch: a 1 MiB fetch of ~450-byte records holds about this many.
const FETCH_RECORDS: usize = 2_000;

fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn event_json(listing: u64, price: f64) -> Vec<u8> {
    let show = listing % 97;
    format!(
        r#"{{"event_id": "show_{show}_2027", "event_name": "Touring Artist {show} | World Tour", "venue": "Arena {show}", "event_date": "2027-05-{day:02}T20:00:00", "source": "stubhub", "section": "{section}", "row": "{row}", "seat": "{seat}", "price": {price:.2}, "fees": {fees:.2}, "total_price": {total:.2}, "timestamp": "2026-11-21T10:{min:02}:{sec:02}.{micro:06}", "listing_id": "SH-{listing}", "listing_url": "https://www.stubhub.com/event/{show}/listing/{listing}", "quantity": 2, "delivery_method": "mobile", "seller_notes": null}}"#,
        day = 1 + show % 28,
        section = 100 + listing % 230,
        row = (b'A' + (listing % 26) as u8) as char,
        seat = 1 + listing % 30,
        fees = price * 0.15,
        total = price * 1.15,
        min = listing % 60,
        sec = (listing / 60) % 60,
        micro = listing % 1_000_000,
    )
    .into_bytes()
}

struct Data {
    cache: Arc<PriceCache>,
    /// Listings the measured events touch, with their baseline price in cents.
    touched: Vec<(String, i64)>,
    events: Vec<Vec<u8>>,
    bytes: usize,
}

fn data(listings: u64, measured: usize) -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let cache = Arc::new(PriceCache::with_capacity(listings as usize));
    let mut parser = Parser::new();
    let detector = Detector::new(cache.clone(), rules());
    let mut baseline = Vec::with_capacity(listings as usize);
    for l in 0..listings {
        let price = (rng.gen_range(40.0..900.0f64) * 100.0).round() / 100.0;
        baseline.push(price);
        let event = parser.parse(&event_json(l, price)).expect("valid");
        detector.process(record(event, l as i64));
    }
    let mut events = Vec::with_capacity(measured);
    let mut touched = Vec::with_capacity(measured);
    let mut bytes = 0;
    for _ in 0..measured {
        let l = rng.gen_range(0..listings);
        touched.push((
            format!("stubhub:SH-{l}"),
            (baseline[l as usize] * 100.0).round() as i64,
        ));
        let roll: f64 = rng.r#gen();
        let base = baseline[l as usize];
        let price = if roll < 0.1 {
            base * 0.8
        } else if roll < 0.2 {
            base * 1.2
        } else {
            base
        };
        let e = event_json(l, (price * 100.0).round() / 100.0);
        bytes += e.len();
        events.push(e);
    }
    Data {
        cache,
        touched,
        events,
        bytes,
    }
}

/// Put the touched listings back to their baseline price, so every iteration sees the same mix.
fn restore_baseline(d: &Data) {
    for (key, price) in &d.touched {
        if let Some(mut s) = d.cache.get(key) {
            s.last_price = *price;
            d.cache.load(key, s);
        }
    }
}

fn rules() -> Rules {
    Rules::from_config(&DetectConfig::default())
}

fn record(event: conscope::model::PriceEvent, offset: i64) -> InRecord {
    InRecord {
        partition: 0,
        offset,
        kafka_ts: DateTime::<Utc>::UNIX_EPOCH,
        event: Arc::new(event),
    }
}

fn batch(records: Vec<InRecord>, next_offset: i64) -> IngestBatch {
    IngestBatch {
        partition: 0,
        records,
        next_offset,
        fetched_at: Instant::now(),
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn detector(c: &mut Criterion) {
    let (listings, measured) = if full_run() {
        (1_000_000, 200_000)
    } else {
        (2_000, 1_000)
    };
    // Memory per tracked listing: fill a fresh cache and measure the resident-memory growth,
    // first, while the process has no freed memory the allocator could hand out again.
    let before = rss_kib();
    let cache = PriceCache::new();
    let det = Detector::new(Arc::new(cache), rules());
    let mut parser = Parser::new();
    for l in 0..listings {
        let event = parser.parse(&event_json(l, 100.0)).expect("valid");
        det.process(record(event, l as i64));
    }
    let after = rss_kib();
    println!(
        "price cache: {} listings, {:.0} bytes per listing (resident memory growth; keys like `stubhub:SH-123456`)",
        det.cache.len(),
        (after.saturating_sub(before) * 1024) as f64 / det.cache.len() as f64
    );
    drop(det);

    let d = data(listings, measured);
    println!(
        "data: {} listings in the cache, {} measured events, {:.0} bytes per event on average",
        d.cache.len(),
        d.events.len(),
        d.bytes as f64 / d.events.len() as f64
    );
    let mut group = c.benchmark_group("detector");
    group.throughput(Throughput::Elements(d.events.len() as u64));
    group.sample_size(10);

    // The parse ceiling: simd-json's tape over the same bytes, no field extraction, with the
    // buffers and the tape reused as the parser reuses them.
    group.bench_function("bare_parse_tape", |b| {
        let mut buffers = simd_json::Buffers::new(1024);
        let mut scratch = Vec::with_capacity(1024);
        let mut tape = simd_json::Tape(Vec::new());
        b.iter(|| {
            for e in &d.events {
                scratch.clear();
                scratch.extend_from_slice(e);
                let mut t = std::mem::replace(&mut tape, simd_json::Tape(Vec::new())).reset();
                simd_json::fill_tape(&mut scratch, &mut buffers, &mut t).expect("valid");
                black_box(t.0.len());
                tape = t.reset();
            }
        })
    });

    group.bench_function("parse_validate", |b| {
        let mut parser = Parser::new();
        b.iter(|| {
            for e in &d.events {
                black_box(parser.parse(e).expect("valid"));
            }
        })
    });

    // Parse + detect, as the engine's ingest and detect stages run: ingest parses a fetch's
    // records into a batch, detect classifies the batch and hands the detected batch on. Each
    // iteration restores the baseline prices first (outside the timing), so every iteration sees
    // the same mix of drops, rises and re-polls. The detected batches are returned, so that
    // freeing them falls outside the timing: in the engine, persist frees them after its COPY.
    group.bench_function("parse_detect", |b| {
        let det = Detector::new(d.cache.clone(), rules());
        let metrics = Metrics::default();
        let mut parser = Parser::new();
        b.iter_batched(
            || restore_baseline(&d),
            |()| {
                let mut detected = Vec::with_capacity(d.events.len() / FETCH_RECORDS + 1);
                let mut offset = 0i64;
                for chunk in d.events.chunks(FETCH_RECORDS) {
                    let mut records = Vec::with_capacity(chunk.len());
                    for e in chunk {
                        records.push(record(parser.parse(e).expect("valid"), offset));
                        offset += 1;
                    }
                    detected.push(det.process_batch(batch(records, offset), &metrics));
                }
                detected
            },
            BatchSize::PerIteration,
        )
    });
    // Detect alone, on records parsed beforehand: what the cache and the rules cost.
    group.bench_function("detect_only", |b| {
        let det = Detector::new(d.cache.clone(), rules());
        let metrics = Metrics::default();
        let mut parser = Parser::new();
        let parsed: Vec<InRecord> = d
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| record(parser.parse(e).expect("valid"), i as i64))
            .collect();
        b.iter_batched(
            || {
                restore_baseline(&d);
                parsed
                    .chunks(FETCH_RECORDS)
                    .map(<[InRecord]>::to_vec)
                    .collect::<Vec<_>>()
            },
            |batches| {
                batches
                    .into_iter()
                    .map(|records| {
                        let next = records.last().map_or(0, |r| r.offset + 1);
                        det.process_batch(batch(records, next), &metrics)
                    })
                    .collect::<Vec<_>>()
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, detector);
criterion_main!(benches);
