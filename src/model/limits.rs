//! The bounds a record must keep to be stored (docs/architecture.md, "Validation"): what
//! ingest's parser enforces, what sources and the DLQ size their work by.

use std::time::Duration;

/// Values larger than this are refused without parsing (a 5 MB blob must not stall a partition).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Ids and short texts: `event_id`, `source`, `listing_id`, `section`, `row`, `seat`,
/// `delivery_method` (well under a btree index entry's 2,704 bytes, even as the fallback
/// listing key that joins five of them).
pub const ID_BYTES: usize = 256;
/// `event_name` and `venue`.
pub const NAME_BYTES: usize = 1024;
/// `listing_url`.
pub const URL_BYTES: usize = 2048;
/// `seller_notes`.
pub const NOTES_BYTES: usize = 4096;
/// Observation times and show dates before this are refused: 2000-01-01T00:00:00Z.
pub const EARLIEST_SECS: i64 = 946_684_800;
/// Show dates from this on are refused: 2200-01-01T00:00:00Z.
pub const EVENT_DATE_END_SECS: i64 = 7_258_118_400;
/// Default of `ingest.max_future_skew`: how far ahead of the clock an observation may be.
pub const MAX_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);
