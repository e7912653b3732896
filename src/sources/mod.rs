//! Sources: producers of PriceEvents into raw_prices. The simulated marketplace feed
//! ([`simulated`]) runs inside `conscope run` when enabled and as `conscope simulate`.
//! The marketplace pollers ([`seatgeek`], [`ticketmaster`]) read public APIs every interval and
//! run in the producing loop of [`poll`], with the HTTP plumbing of [`http`].

pub mod feed;
pub mod http;
pub mod jsonl;
pub mod poll;
pub mod quota;
pub mod seatgeek;
pub mod simulated;
pub mod ticketmaster;
