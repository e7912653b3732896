//! Tumbling windows as data: which window ([`WindowKey`]), one observation as windows take it
//! ([`Observation`]) and a finished window ([`WindowRow`]). Detect computes them
//! (`pipeline::detect::windows`), persist writes them, the warm start reads them back.

use crate::model::ChangeKind;

/// Which window: event, source, width and start (milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowKey {
    pub event_id: String,
    pub source: String,
    pub width_ms: i64,
    pub start_ms: i64,
}

impl WindowKey {
    /// Where the window ends (exclusive); the end of time for a window that would end past it.
    pub fn end_ms(&self) -> i64 {
        self.start_ms.saturating_add(self.width_ms)
    }
}

/// One observation as windows need it (from a live record or a stored row).
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub event_id: &'a str,
    pub source: &'a str,
    pub listing_key: &'a str,
    pub price: i64,
    pub ts_ms: i64,
    pub partition: i32,
    pub offset: i64,
    pub kind: ChangeKind,
}

/// A finished window, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRow {
    pub key: WindowKey,
    pub observations: i64,
    pub distinct_listings: i32,
    pub min: i64,
    pub max: i64,
    pub sum: i64,
    pub first_price: i64,
    pub last_price: i64,
    pub first_at_ms: i64,
    pub last_at_ms: i64,
    pub drops: i32,
    pub rises: i32,
    /// Records merged in after the watermark had passed the window's end.
    pub late_records: i32,
}
