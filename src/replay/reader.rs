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
//! meaning between runs. Lines from `start` to `history_from` (see [`Resume`]) had their history
//! stored by an earlier run but not their listing state and alerts: they are detected again —
//! which also brings the price cache to where it was — and go in `state_only` batches of their
//! own, kept out of the windows. At the end of the input every open window is closed: the file
//! is all there is.

use std::io::BufRead;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::model::Alert;
use crate::pipeline::detect::stage::{Detector, WindowUpdate, feed_windows};
use crate::pipeline::detect::windows::Windows;
use crate::pipeline::ingest::parse::Parser;
use crate::pipeline::messages::{InRecord, Processed};

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
    /// Lines whose history an earlier run committed but whose listing state and alerts it did
    /// not: only the state writer takes this batch (see [`Resume`]).
    pub state_only: bool,
}

/// Where a run picks up a file: the two writers each store how far they got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// The first line not yet in `listing_state` (the state writer's offset): reading starts here.
    pub start: i64,
    /// The first line not yet in `price_history` (the history writer's offset). Lines from
    /// `start` up to here are detected again, to bring the listing state and alerts up to date,
    /// but their history and windows are not written twice.
    pub history_from: i64,
}

impl Resume {
    /// From the two stored offsets. The state writer commits a batch only after the history
    /// writer has, so its offset is never ahead (were it, the history's would count).
    pub fn new(history: i64, state: i64) -> Self {
        Self {
            start: state.min(history),
            history_from: history,
        }
    }

    /// Resume at line `start` with nothing to catch up.
    pub fn at(start: i64) -> Self {
        Self::new(start, start)
    }
}

/// What the reader saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadSummary {
    pub lines: u64,
    /// Lines an earlier run stored completely (before [`Resume::start`]).
    pub already_stored: u64,
    /// Lines read again only to bring `listing_state` up to date (see [`Resume`]).
    pub state_caught_up: u64,
    pub blank: u64,
    pub invalid: u64,
    /// Seconds spent parsing and detecting (the rest of the thread's time is reading and waiting).
    pub parse_detect_seconds: f64,
}

/// Hands full batches to the writer.
struct Handover<'a> {
    tx: &'a mpsc::Sender<ReplayBatch>,
    batch_records: usize,
    /// The offset after the last batch handed over.
    sent: i64,
}

impl Handover<'_> {
    /// Hand `batch` over (feeding its records to the windows first, unless they are there
    /// already) and start the next one; false when the writer has gone.
    fn send(
        &mut self,
        batch: &mut ReplayBatch,
        windows: &mut Windows,
        bytes_read: u64,
        next_state_only: bool,
    ) -> bool {
        let next = empty_batch(self.batch_records, batch.next_offset, next_state_only);
        let mut full = std::mem::replace(batch, next);
        full.bytes_read = bytes_read;
        if !full.state_only {
            full.windows = feed_windows(windows, &full.records);
        }
        self.sent = full.next_offset;
        self.tx.blocking_send(full).is_ok()
    }
}

fn empty_batch(capacity: usize, next_offset: i64, state_only: bool) -> ReplayBatch {
    ReplayBatch {
        records: Vec::with_capacity(capacity),
        alerts: Vec::new(),
        next_offset,
        bytes_read: 0,
        windows: WindowUpdate::default(),
        state_only,
    }
}

/// Read `input` to its end from line `resume.start`, sending batches of `batch_records` to `tx`.
/// Lines are parsed and validated by `parser` (built with the configured
/// `ingest.max_future_skew`). Stops early (without error) when the writer has gone.
pub fn read(
    mut input: impl BufRead,
    mut parser: Parser,
    (resume, partition): (Resume, i32),
    detector: &Detector,
    windows: &mut Windows,
    batch_records: usize,
    tx: &mpsc::Sender<ReplayBatch>,
) -> std::io::Result<ReadSummary> {
    let Resume { start, history_from } = resume;
    let mut summary = ReadSummary::default();
    let mut line = Vec::with_capacity(1024);
    let mut batch = empty_batch(batch_records, start, start < history_from);
    let mut bytes_read = 0u64;
    let mut offset: i64 = 0;
    let mut out = Handover {
        tx,
        batch_records,
        sent: start,
    };
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
        if this == history_from && batch.state_only {
            // The catch-up ends here: its lines go alone, so no batch mixes the two kinds.
            let before = bytes_read - n as u64;
            if batch.next_offset > out.sent && !out.send(&mut batch, windows, before, false) {
                return Ok(summary);
            }
            batch.state_only = false;
        }
        if batch.state_only {
            summary.state_caught_up += 1;
        }
        batch.next_offset = offset;
        let text = line.trim_ascii();
        if text.is_empty() {
            summary.blank += u64::from(!batch.state_only);
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
            // Caught-up lines were counted (and logged) by the run that stored their history.
            Err(_) if batch.state_only => {}
            Err(error) => {
                summary.invalid += 1;
                if summary.invalid <= LOGGED_INVALID {
                    tracing::warn!(line = this + 1, %error, "line skipped");
                }
            }
        }
        summary.parse_detect_seconds += began.elapsed().as_secs_f64();
        if batch.records.len() >= batch_records {
            let state_only = batch.state_only && offset < history_from;
            if !out.send(&mut batch, windows, bytes_read, state_only) {
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
    if !batch.state_only {
        batch.windows = feed_windows(windows, &batch.records);
        batch.windows.closed.extend(windows.close_all(Instant::now()));
        batch.windows.watermark = windows.watermark();
    }
    if !batch.records.is_empty() || offset > out.sent || !batch.windows.closed.is_empty() {
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
    use crate::pipeline::detect::{PriceCache, Rules};

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
        run_with(
            input,
            Resume::at(start),
            batch,
            &mut Windows::new(&no_windows, None),
        )
    }

    fn run_with(
        input: &str,
        resume: Resume,
        batch: usize,
        windows: &mut Windows,
    ) -> (ReadSummary, Vec<ReplayBatch>) {
        let detector = Detector::new(
            Arc::new(PriceCache::new()),
            Rules::from_config(&DetectConfig::default()),
        );
        let (tx, mut rx) = mpsc::channel(100);
        let summary = read(
            input.as_bytes(),
            Parser::new(),
            (resume, -7),
            &detector,
            windows,
            batch,
            &tx,
        )
        .expect("read");
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
        let (_, batches) = run_with(&input, Resume::at(0), 2, &mut windows);
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

    fn offsets(batch: &ReplayBatch) -> Vec<i64> {
        batch.records.iter().map(|p| p.record.offset).collect()
    }

    #[test]
    fn the_state_offset_is_where_reading_starts_and_never_past_the_history() {
        assert_eq!(
            Resume::new(900, 600),
            Resume {
                start: 600,
                history_from: 900
            }
        );
        assert_eq!(Resume::new(900, 900), Resume::at(900));
        assert_eq!(
            Resume::new(900, 1_000).start,
            900,
            "a state ahead counts as caught up"
        );
    }

    #[test]
    fn lines_whose_state_is_missing_are_detected_again_in_batches_of_their_own() {
        // Lines 0-1 fully stored; 2-4 have their history but not their state; 5-6 are new.
        let prices = [100.0, 90.0, 80.0, 85.0, 60.0, 70.0, 50.0];
        let input: String = prices.iter().map(|p| format!("{}\n", line("A", *p))).collect();
        let mut windows = Windows::new(&WindowsConfig::default(), None);
        let resume = Resume {
            start: 2,
            history_from: 5,
        };
        let (summary, batches) = run_with(&input, resume, 2, &mut windows);
        assert_eq!((summary.already_stored, summary.state_caught_up), (2, 3));
        let shape: Vec<(bool, Vec<i64>, i64)> = batches
            .iter()
            .map(|b| (b.state_only, offsets(b), b.next_offset))
            .collect();
        assert_eq!(
            shape,
            [
                (true, vec![2, 3], 4),
                (true, vec![4], 5),
                (false, vec![5, 6], 7),
                (false, vec![], 7),
            ],
            "no batch mixes lines whose history is stored with new ones"
        );
        // The caught-up lines still move the cache, so the new lines are judged against them.
        let kinds: Vec<&str> = batches
            .iter()
            .flat_map(|b| b.records.iter().map(|p| p.change.kind.as_str()))
            .collect();
        assert_eq!(kinds, ["new", "increase", "drop", "increase", "drop"]);
        let alerts: Vec<usize> = batches.iter().map(|b| b.alerts.len()).collect();
        assert_eq!(alerts, [0, 1, 1, 0], "85 → 60 and 70 → 50 are drops");
        // Only the new lines reach the windows: the stored ones are in them already.
        assert!(
            batches
                .iter()
                .filter(|b| b.state_only)
                .all(|b| b.windows.closed.is_empty())
        );
        let counted: i64 = batches
            .iter()
            .flat_map(|b| b.windows.closed.iter())
            .filter(|w| w.key.width_ms == 60_000)
            .map(|w| w.observations)
            .sum();
        assert_eq!(counted, 2);
    }
}
