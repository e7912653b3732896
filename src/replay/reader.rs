//! The replay's first stage, on a blocking thread: read lines, parse, detect, and hand batches
//! of detected records to the writer over a bounded channel.
//!
//! ```text
//!  BufRead ──line n──► skip n < start (already stored) · skip blank · Parser ──► Detector
//!                                   bad lines counted (first ones logged) │
//!                                              ReplayBatch (≤ batch_records) ▼ mpsc (cap 2)
//! ```
//!
//! Every line is an offset, blank and invalid ones included, so a line's number never changes
//! meaning between runs.

use std::io::BufRead;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::detect::stage::Detector;
use crate::ingest::parse::Parser;
use crate::model::Alert;
use crate::runtime::messages::{InRecord, Processed};

/// How many invalid lines are logged one by one; the rest are only counted.
const LOGGED_INVALID: u64 = 10;

/// reader → writer: detected records of consecutive lines.
#[derive(Debug)]
pub struct ReplayBatch {
    pub records: Vec<Processed>,
    pub alerts: Vec<Alert>,
    /// The line number after the last line this batch covers (the offset to store).
    pub next_offset: i64,
    /// Bytes of input read so far (for the progress bar).
    pub bytes_read: u64,
}

/// What the reader saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadSummary {
    pub lines: u64,
    pub already_stored: u64,
    pub blank: u64,
    pub invalid: u64,
    /// Seconds spent parsing and detecting (the rest of the thread's time is reading and waiting).
    pub parse_detect_seconds: f64,
}

/// Read `input` to its end from line `start`, sending batches of `batch_records` to `tx`.
/// Stops early (without error) when the writer has gone.
pub fn read(
    mut input: impl BufRead,
    start: i64,
    partition: i32,
    detector: &Detector,
    batch_records: usize,
    tx: &mpsc::Sender<ReplayBatch>,
) -> std::io::Result<ReadSummary> {
    let mut summary = ReadSummary::default();
    let mut parser = Parser::new();
    let mut line = Vec::with_capacity(1024);
    let mut batch = ReplayBatch {
        records: Vec::with_capacity(batch_records),
        alerts: Vec::new(),
        next_offset: start,
        bytes_read: 0,
    };
    let mut bytes_read = 0u64;
    let mut offset: i64 = 0;
    let mut sent = start;
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        bytes_read += n as u64;
        summary.lines += 1;
        let this = offset;
        offset += 1;
        if this < start {
            summary.already_stored += 1;
            continue;
        }
        batch.next_offset = offset;
        let text = line.trim_ascii();
        if text.is_empty() {
            summary.blank += 1;
            continue;
        }
        let began = Instant::now();
        match parser.parse(text) {
            Ok(event) => {
                let record = InRecord {
                    partition,
                    offset: this,
                    kafka_ts: event.timestamp,
                    event,
                };
                batch.records.push(detector.process(record, &mut batch.alerts));
            }
            Err(error) => {
                summary.invalid += 1;
                if summary.invalid <= LOGGED_INVALID {
                    tracing::warn!(line = this + 1, %error, "line skipped");
                }
            }
        }
        summary.parse_detect_seconds += began.elapsed().as_secs_f64();
        if batch.records.len() >= batch_records {
            batch.bytes_read = bytes_read;
            let full = std::mem::replace(
                &mut batch,
                ReplayBatch {
                    records: Vec::with_capacity(batch_records),
                    alerts: Vec::new(),
                    next_offset: offset,
                    bytes_read,
                },
            );
            sent = full.next_offset;
            if tx.blocking_send(full).is_err() {
                return Ok(summary);
            }
        }
    }
    if summary.invalid > LOGGED_INVALID {
        tracing::warn!(
            invalid = summary.invalid,
            logged = LOGGED_INVALID,
            "more invalid lines skipped"
        );
    }
    // The tail, also when it holds only skipped lines: their offsets must be stored too.
    if !batch.records.is_empty() || offset > sent {
        batch.bytes_read = bytes_read;
        let _ = tx.blocking_send(batch);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::DetectConfig;
    use crate::detect::{PriceCache, Rules};

    fn line(listing: &str, price: f64) -> String {
        format!(
            r#"{{"event_id":"e1","event_name":"Show","venue":"Hall","source":"mock","price":{price},"timestamp":"2026-11-21T10:00:00","listing_id":"{listing}"}}"#
        )
    }

    fn run(input: &str, start: i64, batch: usize) -> (ReadSummary, Vec<ReplayBatch>) {
        let detector = Detector::new(
            Arc::new(PriceCache::new()),
            Rules::from_config(&DetectConfig::default()),
        );
        let (tx, mut rx) = mpsc::channel(100);
        let summary = read(input.as_bytes(), start, -7, &detector, batch, &tx).expect("read");
        drop(tx);
        let mut batches = Vec::new();
        while let Ok(b) = rx.try_recv() {
            batches.push(b);
        }
        (summary, batches)
    }

    #[test]
    fn every_line_is_an_offset_and_bad_lines_are_counted_not_fatal() {
        let input = format!(
            "{}\n\n{}\nnot json\n{}\n",
            line("A", 100.0),
            line("A", 80.0),
            line("B", 10.0)
        );
        let (summary, batches) = run(&input, 0, 2);
        assert_eq!((summary.lines, summary.blank, summary.invalid), (5, 1, 1));
        let offsets: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.records.iter().map(|p| p.record.offset))
            .collect();
        assert_eq!(offsets, vec![0, 2, 4]);
        assert!(
            batches
                .iter()
                .all(|b| b.records.iter().all(|p| p.record.partition == -7))
        );
        assert_eq!(batches.last().map(|b| b.next_offset), Some(5));
        let alerts: usize = batches.iter().map(|b| b.alerts.len()).sum();
        assert_eq!(alerts, 1, "A drops 100 → 80");
    }

    #[test]
    fn lines_before_the_stored_offset_are_skipped() {
        let input = format!("{}\n{}\n{}\n", line("A", 100.0), line("A", 90.0), line("A", 50.0));
        let (summary, batches) = run(&input, 2, 10);
        assert_eq!(summary.already_stored, 2);
        let offsets: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.records.iter().map(|p| p.record.offset))
            .collect();
        assert_eq!(offsets, vec![2]);
        assert_eq!(batches.last().map(|b| b.next_offset), Some(3));
    }

    #[test]
    fn a_fully_stored_file_sends_nothing() {
        let input = format!("{}\n", line("A", 100.0));
        let (_, batches) = run(&input, 1, 10);
        assert!(batches.is_empty());
    }
}
