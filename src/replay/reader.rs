//! The replay's first stage, on a blocking thread: read lines, parse, detect, and hand batches
//! of detected records to the writer over a bounded channel.
//!
//! ```text
//!  BufRead ──line n──► skip n < start (already stored) · skip blank · Parser ──► Detector
//!                                   bad lines counted (first ones logged) │
//!                                           windows (what each batch closed) │
//!                                              ReplayBatch (≤ batch_records) ▼ mpsc (cap 2)
//! ```
//!
//! Every line is an offset, blank and invalid ones included, so a line's number never changes
//! meaning between runs. At the end of the input every open window is closed: the file is all
//! there is.

use std::io::BufRead;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::detect::stage::{Detector, WindowUpdate, feed_windows};
use crate::detect::windows::Windows;
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
    /// The windows these records closed (at the end of the input: every open window).
    pub windows: WindowUpdate,
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
    windows: &mut Windows,
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
        windows: WindowUpdate::default(),
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
            let mut full = std::mem::replace(
                &mut batch,
                ReplayBatch {
                    records: Vec::with_capacity(batch_records),
                    alerts: Vec::new(),
                    next_offset: offset,
                    bytes_read,
                    windows: WindowUpdate::default(),
                },
            );
            full.windows = feed_windows(windows, &full.records);
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
    // The tail, also when it holds only skipped lines (their offsets must be stored too) or
    // only the windows still open.
    batch.windows = feed_windows(windows, &batch.records);
    batch.windows.closed.extend(windows.close_all(Instant::now()));
    batch.windows.watermark = windows.watermark();
    if !batch.records.is_empty() || offset > sent || !batch.windows.closed.is_empty() {
        batch.bytes_read = bytes_read;
        let _ = tx.blocking_send(batch);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{DetectConfig, WindowsConfig};
    use crate::detect::{PriceCache, Rules};

    fn line(listing: &str, price: f64) -> String {
        format!(
            r#"{{"event_id":"e1","event_name":"Show","venue":"Hall","source":"mock","price":{price},"timestamp":"2026-11-21T10:00:00","listing_id":"{listing}"}}"#
        )
    }

    fn run(input: &str, start: i64, batch: usize) -> (ReadSummary, Vec<ReplayBatch>) {
        let no_windows = WindowsConfig {
            enabled: false,
            ..WindowsConfig::default()
        };
        run_with(input, start, batch, &mut Windows::new(&no_windows, None))
    }

    fn run_with(
        input: &str,
        start: i64,
        batch: usize,
        windows: &mut Windows,
    ) -> (ReadSummary, Vec<ReplayBatch>) {
        let detector = Detector::new(
            Arc::new(PriceCache::new()),
            Rules::from_config(&DetectConfig::default()),
        );
        let (tx, mut rx) = mpsc::channel(100);
        let summary = read(input.as_bytes(), start, -7, &detector, windows, batch, &tx).expect("read");
        drop(tx);
        let mut batches = Vec::new();
        while let Ok(b) = rx.try_recv() {
            batches.push(b);
        }
        (summary, batches)
    }

    #[test]
    fn the_end_of_the_input_writes_every_open_window() {
        let input = format!("{}\n{}\n{}\n", line("A", 100.0), line("B", 80.0), line("A", 90.0));
        let mut windows = Windows::new(&WindowsConfig::default(), None);
        let (_, batches) = run_with(&input, 0, 2, &mut windows);
        assert_eq!(batches.len(), 2);
        assert!(
            batches[0].windows.closed.is_empty(),
            "within the lateness, the first batch closes nothing"
        );
        let closed = &batches[1].windows.closed;
        let widths: Vec<i64> = closed.iter().map(|w| w.key.width_ms).collect();
        assert_eq!(widths, [60_000, 3_600_000], "one window per width");
        for w in closed {
            assert_eq!(
                (w.observations, w.distinct_listings, w.min, w.max),
                (3, 2, 8_000, 10_000)
            );
        }
        assert_eq!(windows.open_windows(), 0);
        assert!(batches[1].windows.watermark.is_some());
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
