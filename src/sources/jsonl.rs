//! The simulated feed written as JSON lines (the first ConScope's wire format, one record a
//! line), the input of `conscope replay`; `conscope-bench gen` writes it to a file. Deterministic: the same seed and
//! sizes give the same bytes, stamped one millisecond apart from a fixed start.

use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::Serialize;

use crate::config::SimulatedConfig;
use crate::sources::feed::{Feed, Move, to_wire_json};

/// What was written.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenFigures {
    pub events: u64,
    pub bytes: u64,
    pub new: u64,
    pub drops: u64,
    pub rises: u64,
    pub unchanged: u64,
}

/// The observation time of the first line.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Write `events` observations of the feed `sim` to `out`.
pub fn write_feed(out: impl Write, sim: &SimulatedConfig, events: u64) -> std::io::Result<GenFigures> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut feed = Feed::new(sim);
    let mut figures = GenFigures::default();
    let t0 = start();
    for i in 0..events {
        let (event, mv) = feed.next_event(t0 + Duration::milliseconds(i as i64));
        let line = to_wire_json(&event);
        out.write_all(&line)?;
        out.write_all(b"\n")?;
        figures.events += 1;
        figures.bytes += line.len() as u64 + 1;
        match mv {
            Move::New => figures.new += 1,
            Move::Drop => figures.drops += 1,
            Move::Rise => figures.rises += 1,
            Move::Same => figures.unchanged += 1,
        }
    }
    out.flush()?;
    Ok(figures)
}

/// Write to `path`, or to stdout for `-`.
pub fn write_feed_to(path: &Path, sim: &SimulatedConfig, events: u64) -> std::io::Result<GenFigures> {
    if path == Path::new("-") {
        write_feed(std::io::stdout().lock(), sim, events)
    } else {
        write_feed(std::fs::File::create(path)?, sim, events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ingest::parse::Parser;

    #[test]
    fn the_same_seed_writes_the_same_bytes_and_every_line_parses() {
        let sim = SimulatedConfig {
            listings: 50,
            ..SimulatedConfig::default()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let fa = write_feed(&mut a, &sim, 300).expect("write");
        write_feed(&mut b, &sim, 300).expect("write");
        assert_eq!(a, b);
        assert_eq!(fa.events, 300);
        assert_eq!(fa.bytes as usize, a.len());
        assert_eq!(fa.new + fa.drops + fa.rises + fa.unchanged, 300);
        let mut parser = Parser::new();
        let lines: Vec<&[u8]> = a.split(|c| *c == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 300);
        for line in lines {
            parser.parse(line).expect("every generated line is valid");
        }
    }
}
