//! Ingest: one task per owned raw_prices partition reads records with rskafka from the stored
//! offset, parses them ([`parse`]), sends the bad ones to the DLQ ([`dlq`]) and hands the good
//! ones on to detect in batches ([`reader`]).

pub mod parse;
pub mod reader;

pub use reader::{IngestError, run_partition};
