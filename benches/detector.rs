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
use conscope::metrics::Metrics;
use conscope::model::Cents;
use conscope::pipeline::detect::stage::Detector;
use conscope::pipeline::detect::{PriceCache, Rules};
use conscope::pipeline::ingest::parse::Parser;
use conscope::pipeline::messages::{InRecord, IngestBatch};
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

/// Dollars rounded to the nearest cent.
fn to_cent(dollars: f64) -> Cents {
    Cents::from_dollars(dollars).expect("a finite price")
}

fn data(listings: u64, measured: usize) -> Data {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let cache = Arc::new(PriceCache::with_capacity(listings as usize));
    let mut parser = Parser::new();
    let detector = Detector::new(cache.clone(), rules());
    let mut baseline = Vec::with_capacity(listings as usize);
    for l in 0..listings {
        let price = to_cent(rng.gen_range(40.0..900.0f64)).to_dollars();
        baseline.push(price);
        let event = parser.parse(&event_json(l, price)).expect("valid");
        detector.process(record(event, l as i64), &mut Vec::new());
    }
    let mut events = Vec::with_capacity(measured);
    let mut touched = Vec::with_capacity(measured);
    let mut bytes = 0;
    for _ in 0..measured {
        let l = rng.gen_range(0..listings);
        touched.push((format!("stubhub:SH-{l}"), to_cent(baseline[l as usize]).0));
        let roll: f64 = rng.r#gen();
        let base = baseline[l as usize];
        let price = if roll < 0.1 {
            base * 0.8
        } else if roll < 0.2 {
            base * 1.2
        } else {
            base
        };
        let e = event_json(l, to_cent(price).to_dollars());
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

fn record(event: Arc<conscope::model::PriceEvent>, offset: i64) -> InRecord {
    InRecord {
        partition: 0,
        offset,
        kafka_ts: DateTime::<Utc>::UNIX_EPOCH,
        event,
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
        det.process(record(event, l as i64), &mut Vec::new());
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
        let mut tape = TapeParser::default();
        b.iter(|| tape.run(&d.events))
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
            |()| parse_detect(&d.events, &mut parser, &det, &metrics),
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
    paired_ratio(&d, if full_run() { 40 } else { 2 });
}

/// The ratio of parse + detect to the ceiling, timed in pairs. This machine's speed drifts by
/// tens of percent from one minute to the next, and criterion times one benchmark after the
/// other; so each pair times a tape pass and a parse + detect pass over the same events back to
/// back (baseline restored between them, outside the timing), and the pairs' ratios are summed
/// up by their median.
fn paired_ratio(d: &Data, pairs: usize) {
    let det = Detector::new(d.cache.clone(), rules());
    let metrics = Metrics::default();
    let mut parser = Parser::new();
    let mut tape = TapeParser::default();
    let mut ratios = Vec::with_capacity(pairs);
    let mut rates = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let start = Instant::now();
        tape.run(&d.events);
        let ceiling = start.elapsed();
        restore_baseline(d);
        let start = Instant::now();
        let detected = parse_detect(&d.events, &mut parser, &det, &metrics);
        let both = start.elapsed();
        drop(detected);
        ratios.push(ceiling.as_secs_f64() / both.as_secs_f64());
        rates.push(d.events.len() as f64 / both.as_secs_f64() / 1e6);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (ratio, low, high) = median(&mut ratios);
    let (rate, slow, fast) = median(&mut rates);
    println!(
        "paired: parse_detect at {ratio:.2}x the bare tape parse (median of {pairs} pairs; \
         range {low:.2}-{high:.2}x), {rate:.2} M events/s (range {slow:.2}-{fast:.2})"
    );
}

/// simd-json's tape over each record, with the buffers and the tape reused as the engine's
/// parser reuses them, and no field access: the parse ceiling.
#[derive(Default)]
struct TapeParser {
    buffers: Option<simd_json::Buffers>,
    scratch: Vec<u8>,
    tape: Option<simd_json::Tape<'static>>,
}

impl TapeParser {
    fn run(&mut self, events: &[Vec<u8>]) {
        let buffers = self.buffers.get_or_insert_with(|| simd_json::Buffers::new(1024));
        let mut tape = self.tape.take().unwrap_or_else(|| simd_json::Tape(Vec::new()));
        for e in events {
            self.scratch.clear();
            self.scratch.extend_from_slice(e);
            let mut t = tape.reset();
            simd_json::fill_tape(&mut self.scratch, buffers, &mut t).expect("valid");
            black_box(t.0.len());
            tape = t.reset();
        }
        self.tape = Some(tape);
    }
}

/// Parse + detect as the engine's ingest and detect stages run: records parsed into ingest
/// batches of [`FETCH_RECORDS`], each classified by the detect stage's own call. The detected
/// batches are returned, for the caller to free outside the timing (persist frees them in the
/// engine).
fn parse_detect(
    events: &[Vec<u8>],
    parser: &mut Parser,
    det: &Detector,
    metrics: &Metrics,
) -> Vec<conscope::pipeline::messages::DetectedBatch> {
    let mut detected = Vec::with_capacity(events.len() / FETCH_RECORDS + 1);
    let mut offset = 0i64;
    for chunk in events.chunks(FETCH_RECORDS) {
        let mut records = Vec::with_capacity(chunk.len());
        for e in chunk {
            records.push(record(parser.parse(e).expect("valid"), offset));
            offset += 1;
        }
        detected.push(det.process_batch(batch(records, offset), metrics));
    }
    detected
}

criterion_group!(benches, detector);
criterion_main!(benches);
