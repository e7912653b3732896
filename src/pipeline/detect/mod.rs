//! Change detection: the price cache ([`cache`]), the alert rules ([`rules`]) and the detect
//! stage task ([`stage`]) that runs them over ingested batches.
//!
//! ```text
//!  IngestBatch ──► for each record: cache.observe(key, price) ──► Change ──► rules ──► Alert?
//!                                   (updated on every event)
//!                    └──► windows (event time, watermark) ──► closed WindowRows
//! ```

pub mod cache;
mod prefetch;
pub mod rules;
pub mod stage;
pub mod windows;

pub use cache::{ListingState, PriceCache};
pub use rules::Rules;
