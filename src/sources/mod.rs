//! Sources: producers of PriceEvents into raw_prices. The simulated marketplace feed
//! ([`simulated`]) runs inside `conscope run` when enabled and as `conscope simulate`.

pub mod feed;
pub mod simulated;
