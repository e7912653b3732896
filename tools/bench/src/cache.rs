//! `conscope-bench cache`: bytes per tracked listing in the price cache, measured as the growth
//! of this process's resident memory while a fresh [`PriceCache`] takes `listings` keys shaped
//! like the simulated feed's (`stubhub:SIM42-123456`), each observed once as the engine does.
//!
//! Run it as its own command (a fresh process), so nothing else moves the RSS meanwhile.

use serde::Serialize;

use conscope::pipeline::detect::PriceCache;
use conscope::usage;

#[derive(Debug, Clone, Serialize)]
pub struct CacheFigures {
    pub listings: usize,
    /// Average key length, bytes (the key is a `Box<str>` on the heap).
    pub key_bytes: f64,
    /// Resident-memory growth per listing once filled.
    pub bytes_per_listing: f64,
    /// The same at the highest point while filling (a growing table briefly holds old and new
    /// arrays); from `ru_maxrss`, so meaningful in a fresh process only.
    pub peak_bytes_per_listing: f64,
    pub rss_before_mib: f64,
    pub rss_after_mib: f64,
}

const SOURCES: [&str; 3] = ["mock", "stubhub", "vivid"];

pub fn measure(listings: u64, seed: u64) -> CacheFigures {
    let before = usage::rss_kib();
    let cache = PriceCache::new();
    let mut key = String::with_capacity(64);
    let mut key_bytes = 0u64;
    for id in 1..=listings {
        use std::fmt::Write;
        key.clear();
        let _ = write!(key, "{}:SIM{seed}-{id}", SOURCES[(id % 3) as usize]);
        key_bytes += key.len() as u64;
        cache.observe(&key, 10_000 + (id % 5_000) as i64, id as i64);
    }
    let after = usage::rss_kib();
    // The process's lifetime peak: in a fresh `bench cache` process, the peak of this fill.
    let peak = usage::own().max_rss_kib.max(after);
    let n = cache.len().max(1) as f64;
    CacheFigures {
        listings: cache.len(),
        key_bytes: key_bytes as f64 / n,
        bytes_per_listing: (after.saturating_sub(before) * 1024) as f64 / n,
        peak_bytes_per_listing: (peak.saturating_sub(before) * 1024) as f64 / n,
        rss_before_mib: usage::mib(before),
        rss_after_mib: usage::mib(after),
    }
}
