//! The price cache: the last price, lowest price and last-seen time of every listing.
//!
//! Shared because the detect stage writes it while the web layer reads it; a [`DashMap`] shards
//! it so readers lock one shard for one lookup. Guards are held only inside these methods and
//! never across an `.await`. The cache is updated on every event — drop or not — so a drop is
//! reported once, not on every later poll — except by an event older than the listing's last
//! one, which changes nothing (see [`PriceCache::observe`]).

use compact_str::CompactString;
use dashmap::{DashMap, SharedValue};

pub use crate::model::ListingState;
use crate::model::money::change_percent;
use crate::model::{Change, ChangeKind};

/// aHash instead of SipHash: lookups are the hot path. Keys are `CompactString`s, which keep
/// keys up to 24 bytes inline: no heap allocation per listing, and one cache miss less per
/// lookup with a million listings.
#[derive(Debug, Default)]
pub struct PriceCache {
    map: DashMap<CompactString, ListingState, ahash::RandomState>,
}

impl PriceCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n: usize) -> Self {
        Self {
            map: DashMap::with_capacity_and_hasher(n, ahash::RandomState::new()),
        }
    }

    /// Compare `price` with the listing's cached state, update the state, and say what changed.
    ///
    /// An observation older than the listing's `last_seen` (one that arrived out of order) is
    /// [`ChangeKind::OutOfOrder`] and leaves the state as it was: the current price is the
    /// latest observation's, whatever order the observations came in. One seen at the same
    /// instant as the last counts as in order.
    pub fn observe(&self, key: &str, price: i64, seen_ms: i64) -> (Change, ListingState) {
        self.observe_hashed(key, self.hash(key), price, seen_ms)
    }

    /// [`Self::observe`] with the key's [`Self::hash`] already known (the batch path hashes
    /// every key once, to prefetch, and uses the same hash for the lookup).
    pub fn observe_hashed(&self, key: &str, hash: u64, price: i64, seen_ms: i64) -> (Change, ListingState) {
        let shard = &self.map.shards()[self.map.determine_shard(hash as usize)];
        let mut table = shard.write();
        if let Some((_, state)) = table.get_mut(hash, |(k, _)| k.as_str() == key) {
            let state = state.get_mut();
            if seen_ms < state.last_seen_ms {
                return (OUT_OF_ORDER, *state);
            }
            let previous = state.last_price;
            state.last_price = price;
            state.lowest_price = state.lowest_price.min(price);
            state.last_seen_ms = seen_ms;
            let change_cents = price - previous;
            let kind = match change_cents {
                0 => ChangeKind::Unchanged,
                c if c < 0 => ChangeKind::Drop,
                _ => ChangeKind::Increase,
            };
            let change = Change {
                kind,
                previous_cents: Some(previous),
                change_cents,
                change_pct: change_percent(change_cents, previous),
            };
            return (change, *state);
        }
        let state = ListingState {
            last_price: price,
            lowest_price: price,
            last_seen_ms: seen_ms,
        };
        let hasher = self.map.hasher();
        table.insert(hash, (key.into(), SharedValue::new(state)), |(k, _)| {
            hasher.hash_one(k.as_str())
        });
        let change = Change {
            kind: ChangeKind::New,
            previous_cents: None,
            change_cents: 0,
            change_pct: 0.0,
        };
        (change, state)
    }

    /// The hash a lookup of `key` uses, for [`Self::prefetch`].
    pub fn hash(&self, key: &str) -> u64 {
        self.map.hasher().hash_one(key)
    }

    /// Where each shard's table lies now, for [`Self::prefetch`]. Taken once per batch; a
    /// table that grows afterwards only makes later prefetches useless, never wrong.
    pub fn layout(&self) -> CacheLayout {
        CacheLayout {
            shards: self
                .map
                .shards()
                .iter()
                .map(|shard| {
                    let table = shard.read();
                    (table.data_end().as_ptr() as usize, table.buckets() - 1)
                })
                .collect(),
        }
    }

    /// Start loading the cache lines a lookup of the key with this `hash` will touch, so that
    /// the lookup a few records later finds them in the CPU cache instead of waiting on memory.
    pub fn prefetch(&self, layout: &CacheLayout, hash: u64) {
        let shard = self.map.determine_shard(hash as usize);
        if let Some(&(data_end, mask)) = layout.shards.get(shard) {
            // hashbrown probes from `hash & mask`: the control bytes sit at `data_end + pos`
            // and bucket i at `data_end - (i + 1) * size`. The entry is nearly always one of the
            // first few buckets of the probe (PROBE_BUCKETS covers them at the load factors
            // hashbrown keeps), so those lines are fetched too.
            let pos = hash as usize & mask;
            let bucket = std::mem::size_of::<(CompactString, dashmap::SharedValue<ListingState>)>();
            super::prefetch::read(data_end.wrapping_add(pos));
            let last = data_end.wrapping_sub((pos + PROBE_BUCKETS) * bucket);
            let first = data_end.wrapping_sub((pos + 1) * bucket);
            let mut line = last & !63;
            while line <= first {
                super::prefetch::read(line);
                line += 64;
            }
        }
    }

    /// Put a listing's persisted state back (warm start).
    pub fn load(&self, key: &str, state: ListingState) {
        self.map.insert(key.into(), state);
    }

    pub fn get(&self, key: &str) -> Option<ListingState> {
        self.map.get(key).map(|r| *r)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn clear(&self) {
        self.map.clear();
    }
}

/// What an out-of-order observation changes: nothing (no previous price of its own, no move).
const OUT_OF_ORDER: Change = Change {
    kind: ChangeKind::OutOfOrder,
    previous_cents: None,
    change_cents: 0,
    change_pct: 0.0,
};

/// Buckets from the probe start whose cache lines [`PriceCache::prefetch`] fetches.
const PROBE_BUCKETS: usize = 3;

/// Each shard's table address and bucket mask at one moment (see [`PriceCache::layout`]).
#[derive(Debug, Default)]
pub struct CacheLayout {
    shards: Vec<(usize, usize)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sighting_is_new_then_changes_are_classified() {
        let cache = PriceCache::new();
        assert_eq!(cache.observe("a", 10_000, 1).0.kind, ChangeKind::New);
        assert_eq!(cache.observe("a", 10_000, 2).0.kind, ChangeKind::Unchanged);
        let (drop, state) = cache.observe("a", 8_000, 3);
        assert_eq!(drop.kind, ChangeKind::Drop);
        assert_eq!(drop.previous_cents, Some(10_000));
        assert_eq!(drop.change_cents, -2_000);
        assert!((drop.change_pct + 20.0).abs() < 1e-9);
        assert_eq!(state.lowest_price, 8_000);
        let (rise, state) = cache.observe("a", 9_000, 4);
        assert_eq!(rise.kind, ChangeKind::Increase);
        assert_eq!(state.lowest_price, 8_000);
    }

    #[test]
    fn the_batch_path_and_the_map_agree_on_where_a_listing_lives() {
        let cache = PriceCache::with_capacity(16);
        // Inserted through the map (warm start), found by the hashed path, and the reverse.
        cache.load(
            "stubhub:SH-1",
            ListingState {
                last_price: 100,
                lowest_price: 90,
                last_seen_ms: 1,
            },
        );
        let key = "stubhub:SH-1";
        let (change, _) = cache.observe_hashed(key, cache.hash(key), 80, 2);
        assert_eq!(
            (change.kind, change.previous_cents),
            (ChangeKind::Drop, Some(100))
        );
        for i in 0..10_000 {
            let k = format!("k{i}");
            cache.observe_hashed(&k, cache.hash(&k), 500 + i, 1);
        }
        assert_eq!(cache.len(), 10_001, "the tables grew without losing a listing");
        assert_eq!(cache.get("k9999").map(|s| s.last_price), Some(10_499));
        assert_eq!(cache.get(key).map(|s| s.last_price), Some(80));
    }

    #[test]
    fn an_older_observation_moves_neither_the_price_nor_the_lowest_price() {
        let cache = PriceCache::new();
        cache.observe("a", 10_000, 2_000);
        let (late, state) = cache.observe("a", 5_000, 1_000);
        assert_eq!(late.kind, ChangeKind::OutOfOrder);
        assert_eq!(late.previous_cents, None);
        let kept = ListingState {
            last_price: 10_000,
            lowest_price: 10_000,
            last_seen_ms: 2_000,
        };
        assert_eq!(state, kept);
        assert_eq!(cache.get("a"), Some(kept));
        // The next in-order observation is compared with the latest price, not the late one.
        let (change, _) = cache.observe("a", 9_000, 3_000);
        assert_eq!(
            (change.kind, change.previous_cents),
            (ChangeKind::Drop, Some(10_000))
        );
    }

    #[test]
    fn an_observation_at_the_same_instant_is_in_order() {
        let cache = PriceCache::new();
        cache.observe("a", 10_000, 2_000);
        let (change, state) = cache.observe("a", 8_000, 2_000);
        assert_eq!(change.kind, ChangeKind::Drop);
        assert_eq!((state.last_price, state.lowest_price), (8_000, 8_000));
    }

    #[test]
    fn a_warm_started_listing_refuses_observations_older_than_its_stored_state() {
        let cache = PriceCache::new();
        let stored = ListingState {
            last_price: 7_000,
            lowest_price: 6_000,
            last_seen_ms: 5_000,
        };
        cache.load("a", stored);
        assert_eq!(cache.observe("a", 1_000, 4_999).0.kind, ChangeKind::OutOfOrder);
        assert_eq!(cache.get("a"), Some(stored));
    }

    #[test]
    fn the_cache_is_updated_on_a_drop_so_the_next_poll_is_unchanged() {
        let cache = PriceCache::new();
        cache.observe("a", 10_000, 1);
        assert_eq!(cache.observe("a", 5_000, 2).0.kind, ChangeKind::Drop);
        assert_eq!(cache.observe("a", 5_000, 3).0.kind, ChangeKind::Unchanged);
    }
}
