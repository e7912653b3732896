//! What flows on each channel between the engine's stages.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::model::window::{WindowKey, WindowRow};
use crate::model::{Alert, Change, ListingState, PriceEvent};

/// One valid raw_prices record.
#[derive(Debug, Clone)]
pub struct InRecord {
    pub partition: i32,
    pub offset: i64,
    /// The Kafka record timestamp (producer time), the start of the latency measurement.
    pub kafka_ts: DateTime<Utc>,
    /// Behind a pointer: a record passes through ingest, detect, persist and publish, and each
    /// hand-over then moves a pointer instead of the event's ~330 bytes. Shared: an alert the
    /// record raises holds the same event instead of a copy.
    pub event: Arc<PriceEvent>,
}

/// ingest → detect: the valid records of one fetch from one partition. Records that failed to
/// parse were already sent to the DLQ; `next_offset` covers them too.
#[derive(Debug)]
pub struct IngestBatch {
    pub partition: i32,
    pub records: Vec<InRecord>,
    /// The offset after the last record of this fetch (valid or not).
    pub next_offset: i64,
    pub fetched_at: Instant,
}

/// One record after detection.
#[derive(Debug, Clone)]
pub struct Processed {
    pub record: InRecord,
    pub listing_key: compact_str::CompactString,
    pub change: Change,
    /// The listing's cached state after this record.
    pub state: ListingState,
}

// Detect writes one of these per record: at 128 bytes or less the compiler moves it with a few
// vector stores instead of a call to memcpy.
const _: () = assert!(std::mem::size_of::<Processed>() <= 128);

/// detect → persist: detected records, the alerts they raised, the windows they closed, and how
/// far their partition got (`None` for a batch of windows closed by the idle timer alone).
#[derive(Debug)]
pub struct DetectedBatch {
    pub offset: Option<(i32, i64)>,
    pub records: Vec<Processed>,
    pub alerts: Vec<Alert>,
    pub windows: Vec<WindowRow>,
    /// Written windows to recompute because late records arrived for them (with the count).
    pub late_windows: Vec<(WindowKey, i32)>,
    /// The windows' watermark after this batch (milliseconds).
    pub watermark: Option<i64>,
    pub fetched_at: Instant,
}

/// persist → publish: what one committed transaction made durable.
#[derive(Debug, Default)]
pub struct CommittedBatch {
    pub records: Vec<Processed>,
    pub alerts: Vec<Alert>,
    /// (partition, next offset) now stored.
    pub offsets: Vec<(i32, i64)>,
}
