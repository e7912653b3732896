//! The marketplace pollers against local HTTP servers answering with the documented shapes
//! (null stats, missing priceRanges, 429 with Retry-After, 401, 500, slow answers, malformed
//! JSON), and the sources into the real broker and engine.

mod fake_api;
mod pipeline;
mod seatgeek;
mod ticketmaster;
