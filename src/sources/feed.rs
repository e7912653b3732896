//! The simulated marketplace: stable listings whose prices take a random walk.
//!
//! A fixed catalogue of shows; every listing belongs to one show and one section, whose tier
//! sets its base price (floor and lower bowl cost more). Each observation picks a listing and
//! either repeats its price (a re-poll), drops it, or raises it, with the configured
//! probabilities and a step of 2%..`max_step`. Now and then a listing sells out and a new one
//! appears in its place. Everything is drawn from a ChaCha8 generator seeded by `seed`: the same
//! seed gives the same listings, prices and moves.
//!
//! A restarted `conscope run` would start the walk again from the seed's first prices, which the
//! engine (warm-started with the walked prices) would take for a burst of drops and rises; so the
//! source [`Feed::resume`]s its listings at their stored prices first. (Prices it produced
//! that were not yet committed when it stopped are not stored: after a kill, those few
//! listings may show one change back.)

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::SimulatedConfig;
use crate::model::{Cents, PriceEvent, PriceEventFields};

/// The cheapest a simulated listing gets ($1.00).
const FLOOR: Cents = Cents(100);
/// The dearest a simulated listing gets ($50,000.00).
const CEILING: Cents = Cents(5_000_000);

/// What one observation did to its listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    New,
    Same,
    Drop,
    Rise,
}

const SHOWS: &[(&str, &str, &str, f64)] = &[
    (
        "taylor_swift_metlife",
        "Taylor Swift | The Eras Tour",
        "MetLife Stadium",
        3.0,
    ),
    ("phoebe_bridgers_kia_forum", "Phoebe Bridgers", "Kia Forum", 1.0),
    (
        "beyonce_sofi",
        "Beyoncé | Cowboy Carter Tour",
        "SoFi Stadium",
        2.4,
    ),
    (
        "knicks_celtics_msg",
        "Knicks vs Celtics",
        "Madison Square Garden",
        1.6,
    ),
    (
        "hamilton_richard_rodgers",
        "Hamilton",
        "Richard Rodgers Theatre",
        1.8,
    ),
    (
        "coldplay_wembley",
        "Coldplay | Music of the Spheres",
        "Wembley Stadium",
        1.4,
    ),
    ("dodgers_giants", "Dodgers vs Giants", "Dodger Stadium", 0.7),
    ("billie_eilish_o2", "Billie Eilish", "The O2", 1.3),
];

/// (section, base price in dollars, rows)
const TIERS: &[(&str, f64, u32)] = &[
    ("Floor A", 420.0, 20),
    ("Floor B", 350.0, 25),
    ("112", 260.0, 26),
    ("118", 240.0, 26),
    ("215", 160.0, 20),
    ("228", 140.0, 20),
    ("318", 90.0, 15),
    ("330", 75.0, 15),
];

const SOURCES: &[&str] = &["mock", "stubhub", "vivid"];
const SELL_OUT_PROBABILITY: f64 = 0.002;

#[derive(Debug, Clone)]
struct Listing {
    id: u64,
    show: usize,
    tier: usize,
    row: u32,
    seat: u32,
    source: usize,
    price: Cents,
    seen: bool,
}

/// The feed's generator state.
#[derive(Debug)]
pub struct Feed {
    rng: ChaCha8Rng,
    listings: Vec<Listing>,
    next_id: u64,
    seed: u64,
    drop_p: f64,
    rise_p: f64,
    max_step: f64,
    cursor: usize,
    show_dates: Vec<DateTime<Utc>>,
}

impl Feed {
    pub fn new(cfg: &SimulatedConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let base = Utc
            .with_ymd_and_hms(2027, 3, 1, 20, 0, 0)
            .single()
            .unwrap_or_else(Utc::now);
        let show_dates = (0..SHOWS.len())
            .map(|i| base + Duration::days(i as i64 * 9 + rng.gen_range(0..5)))
            .collect();
        let mut feed = Self {
            rng,
            listings: Vec::with_capacity(cfg.listings as usize),
            next_id: 0,
            seed: cfg.seed,
            drop_p: cfg.drop_probability,
            rise_p: cfg.rise_probability,
            max_step: cfg.max_step,
            cursor: 0,
            show_dates,
        };
        for _ in 0..cfg.listings {
            let listing = feed.new_listing();
            feed.listings.push(listing);
        }
        feed
    }

    fn new_listing(&mut self) -> Listing {
        let show = self.rng.gen_range(0..SHOWS.len());
        let tier = self.rng.gen_range(0..TIERS.len());
        let (_, base, rows) = TIERS[tier];
        let price = base * SHOWS[show].3 * self.rng.gen_range(0.8..1.25);
        self.next_id += 1;
        Listing {
            id: self.next_id,
            show,
            tier,
            row: self.rng.gen_range(1..=rows),
            seat: self.rng.gen_range(1..=30),
            source: self.rng.gen_range(0..SOURCES.len()),
            price: Cents::from_dollars(price).unwrap_or(FLOOR).max(FLOOR),
            seen: false,
        }
    }

    pub fn listings(&self) -> usize {
        self.listings.len()
    }

    /// The listing id prefix of this feed's listings (`SIM<seed>-`), followed by a number.
    pub fn id_prefix(&self) -> String {
        format!("SIM{}-", self.seed)
    }

    /// Continue from an earlier run of the same seed: each listing found in `stored` (last
    /// price in cents by listing number, the number after [`Self::id_prefix`]) takes that price
    /// and counts as seen, and listings that appear later are numbered after every stored one,
    /// so a replacement never takes the id of an earlier run's listing. Returns how many
    /// listings were resumed.
    pub fn resume(&mut self, stored: &HashMap<u64, i64>) -> usize {
        let mut resumed = 0;
        for l in &mut self.listings {
            if let Some(&price) = stored.get(&l.id) {
                l.price = Cents(price);
                l.seen = true;
                resumed += 1;
            }
        }
        if let Some(&highest) = stored.keys().max() {
            self.next_id = self.next_id.max(highest);
        }
        resumed
    }

    /// The next observation, stamped `now`.
    pub fn next_event(&mut self, now: DateTime<Utc>) -> (PriceEvent, Move) {
        // Walk the listings in a shuffled-by-chance order: mostly sequential, sometimes a jump,
        // so every listing is re-polled regularly.
        self.cursor = if self.rng.gen_bool(0.9) {
            (self.cursor + 1) % self.listings.len()
        } else {
            self.rng.gen_range(0..self.listings.len())
        };
        let i = self.cursor;
        if self.listings[i].seen && self.rng.gen_bool(SELL_OUT_PROBABILITY) {
            // Sold out: a new listing takes its place.
            self.listings[i] = self.new_listing();
        }
        let roll: f64 = self.rng.r#gen();
        let step = self.rng.gen_range(0.02..self.max_step.max(0.021));
        let l = &mut self.listings[i];
        let mv = if !l.seen {
            l.seen = true;
            Move::New
        } else if roll < self.drop_p {
            l.price = l.price.scaled(1.0 - step).max(FLOOR);
            Move::Drop
        } else if roll < self.drop_p + self.rise_p {
            l.price = l.price.scaled(1.0 + step).min(CEILING);
            Move::Rise
        } else {
            Move::Same
        };
        let l = l.clone();
        (self.event_of(&l, now), mv)
    }

    fn event_of(&self, l: &Listing, now: DateTime<Utc>) -> PriceEvent {
        let (event_id, name, venue, _) = SHOWS[l.show];
        let fees = l.price.percent(15);
        let listing_id = format!("{}{}", self.id_prefix(), l.id);
        PriceEvent::from(PriceEventFields {
            event_id: event_id.into(),
            event_name: name.into(),
            venue: venue.into(),
            event_date: Some(self.show_dates[l.show]),
            source: SOURCES[l.source].into(),
            section: TIERS[l.tier].0.into(),
            row: l.row.to_string().into(),
            seat: l.seat.to_string().into(),
            price: l.price.0,
            fees: Some(fees.0),
            total_price: l.price.0 + fees.0,
            timestamp: now,
            listing_url: Some(format!("https://tickets.example/{event_id}/{listing_id}").into()),
            listing_id: Some(listing_id.into()),
            quantity: 1,
            delivery_method: Some("mobile".into()),
            seller_notes: None,
        })
    }
}

/// The first ConScope's JSON for `event` (naive `isoformat()` timestamps, dollars as numbers).
pub fn to_wire_json(event: &PriceEvent) -> Vec<u8> {
    let naive = |t: &DateTime<Utc>| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let value = serde_json::json!({
        "event_id": event.event_id(),
        "event_name": event.event_name(),
        "venue": event.venue(),
        "event_date": event.event_date.as_ref().map(naive),
        "source": event.source(),
        "section": event.section(),
        "row": event.row(),
        "seat": event.seat(),
        "price": Cents(event.price),
        "fees": event.fees.map(Cents),
        "total_price": Cents(event.total_price),
        "timestamp": naive(&event.timestamp),
        "listing_id": event.listing_id(),
        "listing_url": event.listing_url(),
        "quantity": event.quantity,
        "delivery_method": event.delivery_method(),
        "seller_notes": event.seller_notes(),
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ingest::parse::Parser;

    fn cfg(seed: u64) -> SimulatedConfig {
        SimulatedConfig {
            seed,
            listings: 500,
            ..SimulatedConfig::default()
        }
    }

    /// Last price and number of every listing a feed has shown, as listing_state keeps them.
    fn last_prices(feed: &mut Feed, events: usize) -> HashMap<u64, i64> {
        let prefix = feed.id_prefix();
        let mut last = HashMap::new();
        for _ in 0..events {
            let (e, _) = feed.next_event(DateTime::UNIX_EPOCH);
            let id = e
                .listing_id()
                .and_then(|id| id.strip_prefix(&prefix)?.parse().ok());
            last.insert(id.expect("a feed listing id"), e.price);
        }
        last
    }

    #[test]
    fn a_resumed_feed_continues_each_listing_from_its_stored_price() {
        let config = cfg(5);
        let mut first = Feed::new(&config);
        let stored = last_prices(&mut first, 20_000);
        let highest = stored.keys().max().copied().expect("listings");
        assert!(highest > 500, "some listings sold out and were replaced");

        let mut resumed = Feed::new(&config);
        assert_eq!(resumed.resume(&stored), 500, "every first listing was stored");
        let prefix = resumed.id_prefix();
        let (mut first_looks, mut new) = (0, 0);
        let mut looked = std::collections::HashSet::new();
        for _ in 0..5_000 {
            let (e, mv) = resumed.next_event(DateTime::UNIX_EPOCH);
            let id: u64 = e
                .listing_id()
                .and_then(|id| id.strip_prefix(&prefix)?.parse().ok())
                .expect("a feed listing id");
            let first_look = looked.insert(id);
            if id > highest {
                // A listing of this run, numbered after every stored one.
                assert_eq!(mv == Move::New, first_look, "listing {id}");
                new += usize::from(first_look);
                continue;
            }
            assert_ne!(mv, Move::New, "listing {id} was stored, so it counts as seen");
            if !first_look {
                continue;
            }
            // The first look since the resume moves from the stored price by at most one step.
            first_looks += 1;
            let ratio = e.price as f64 / stored[&id] as f64;
            match mv {
                Move::Same => assert_eq!(e.price, stored[&id], "listing {id}"),
                Move::Drop => assert!((0.97 - config.max_step..0.99).contains(&ratio), "{ratio}"),
                Move::Rise => assert!((1.01..1.03 + config.max_step).contains(&ratio), "{ratio}"),
                Move::New => unreachable!(),
            }
        }
        assert!(first_looks > 400, "{first_looks}");
        assert!(new > 0, "listings sold out and new ones appeared");
    }

    #[test]
    fn same_seed_same_feed() {
        let now = DateTime::UNIX_EPOCH;
        let mut a = Feed::new(&cfg(7));
        let mut b = Feed::new(&cfg(7));
        let mut c = Feed::new(&cfg(8));
        let run = |f: &mut Feed| -> Vec<(String, i64)> {
            (0..2_000)
                .map(|_| f.next_event(now).0)
                .map(|e| (e.listing_key().to_string(), e.price))
                .collect()
        };
        let ra = run(&mut a);
        assert_eq!(ra, run(&mut b));
        assert_ne!(ra, run(&mut c));
    }

    #[test]
    fn listings_keep_their_identity_and_moves_match_the_configured_rates() {
        let mut feed = Feed::new(&cfg(1));
        let mut last: std::collections::HashMap<compact_str::CompactString, i64> = Default::default();
        let (mut drops, mut rises, mut repolls) = (0u32, 0u32, 0u32);
        for _ in 0..50_000 {
            let (e, mv) = feed.next_event(DateTime::UNIX_EPOCH);
            let key = e.listing_key();
            if let Some(prev) = last.insert(key, e.price) {
                repolls += 1;
                match mv {
                    Move::Drop => {
                        drops += 1;
                        assert!(e.price <= prev);
                    }
                    Move::Rise => {
                        rises += 1;
                        assert!(e.price >= prev);
                    }
                    Move::Same => assert_eq!(e.price, prev),
                    Move::New => panic!("a known listing cannot be new"),
                }
            }
        }
        let drop_rate = f64::from(drops) / f64::from(repolls);
        let rise_rate = f64::from(rises) / f64::from(repolls);
        assert!((drop_rate - 0.1).abs() < 0.01, "drop rate {drop_rate}");
        assert!((rise_rate - 0.1).abs() < 0.01, "rise rate {rise_rate}");
    }

    #[test]
    fn wire_json_is_accepted_by_the_engine_parser() {
        let mut feed = Feed::new(&cfg(3));
        let mut parser = Parser::new();
        for _ in 0..100 {
            let (e, _) = feed.next_event(Utc::now());
            let parsed = parser.parse(&to_wire_json(&e)).expect("parses");
            assert_eq!(parsed.listing_key(), e.listing_key());
            assert_eq!(parsed.price, e.price);
        }
    }
}
