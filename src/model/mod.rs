//! The shapes that flow through ConScope: [`PriceEvent`] (the raw_prices wire format of the first
//! ConScope), [`Change`] (what detect found), [`Alert`] (what the price_alerts topic carries).
//!
//! Prices are held as whole cents so that "unchanged" is exact and the noise floor is not at
//! the mercy of float rounding; they are dollars with two decimals on the wire and in SQL.
//! [`money`] owns every conversion: [`Cents`] at the edges (sources, web, alert text, store),
//! bare `i64` cents in the records the detector touches per event.

pub mod limits;
pub mod money;
mod texts;
pub mod window;

pub use money::{Cents, cents, opt_cents};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use texts::Text;
pub(crate) use texts::Texts;

/// One observed price of one listing, as the first ConScope's producers wrote it.
///
/// The eleven texts live in one buffer and are read through accessors ([`Self::event_id`] …):
/// a parsed record's buffer is a copy of the record itself and each text a span of it, so
/// parsing copies a record once instead of building eleven strings. Sources and tests build an
/// event from its [`PriceEventFields`]; the JSON (serde) is that of the fields.
#[derive(Clone)]
pub struct PriceEvent {
    pub(crate) texts: Texts,
    /// When the show happens; naive times are taken as UTC.
    pub event_date: Option<DateTime<Utc>>,
    pub price: i64,
    pub fees: Option<i64>,
    pub total_price: i64,
    /// When the price was observed (event time).
    pub timestamp: DateTime<Utc>,
    pub quantity: i32,
}

/// The fields of a [`PriceEvent`], owned: what sources and tests build an event from, and the
/// event's JSON shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PriceEventFields<S = CompactString> {
    pub event_id: S,
    pub event_name: S,
    pub venue: S,
    /// When the show happens; naive times are taken as UTC.
    pub event_date: Option<DateTime<Utc>>,
    pub source: S,
    pub section: S,
    pub row: S,
    pub seat: S,
    #[serde(with = "cents")]
    pub price: i64,
    #[serde(with = "opt_cents")]
    pub fees: Option<i64>,
    #[serde(with = "cents")]
    pub total_price: i64,
    /// When the price was observed (event time).
    pub timestamp: DateTime<Utc>,
    pub listing_id: Option<S>,
    pub listing_url: Option<S>,
    pub quantity: i32,
    pub delivery_method: Option<S>,
    pub seller_notes: Option<S>,
}

impl PriceEvent {
    pub fn event_id(&self) -> &str {
        self.texts.req(Text::EventId)
    }

    pub fn event_name(&self) -> &str {
        self.texts.req(Text::EventName)
    }

    pub fn venue(&self) -> &str {
        self.texts.req(Text::Venue)
    }

    pub fn source(&self) -> &str {
        self.texts.req(Text::Source)
    }

    pub fn section(&self) -> &str {
        self.texts.req(Text::Section)
    }

    pub fn row(&self) -> &str {
        self.texts.req(Text::Row)
    }

    pub fn seat(&self) -> &str {
        self.texts.req(Text::Seat)
    }

    /// The source's id of the listing, if the record had one (the parser drops an empty one).
    pub fn listing_id(&self) -> Option<&str> {
        self.texts.get(Text::ListingId)
    }

    pub fn listing_url(&self) -> Option<&str> {
        self.texts.get(Text::ListingUrl)
    }

    pub fn delivery_method(&self) -> Option<&str> {
        self.texts.get(Text::DeliveryMethod)
    }

    pub fn seller_notes(&self) -> Option<&str> {
        self.texts.get(Text::SellerNotes)
    }

    /// The event's fields, borrowed: its JSON, and what it is compared and printed by.
    pub fn fields(&self) -> PriceEventFields<&str> {
        PriceEventFields {
            event_id: self.event_id(),
            event_name: self.event_name(),
            venue: self.venue(),
            event_date: self.event_date,
            source: self.source(),
            section: self.section(),
            row: self.row(),
            seat: self.seat(),
            price: self.price,
            fees: self.fees,
            total_price: self.total_price,
            timestamp: self.timestamp,
            listing_id: self.listing_id(),
            listing_url: self.listing_url(),
            quantity: self.quantity,
            delivery_method: self.delivery_method(),
            seller_notes: self.seller_notes(),
        }
    }

    /// The event's fields, owned (to change one and build a new event).
    pub fn to_fields(&self) -> PriceEventFields {
        let f = self.fields();
        let own = |s: Option<&str>| s.map(CompactString::from);
        PriceEventFields {
            event_id: f.event_id.into(),
            event_name: f.event_name.into(),
            venue: f.venue.into(),
            event_date: f.event_date,
            source: f.source.into(),
            section: f.section.into(),
            row: f.row.into(),
            seat: f.seat.into(),
            price: f.price,
            fees: f.fees,
            total_price: f.total_price,
            timestamp: f.timestamp,
            listing_id: own(f.listing_id),
            listing_url: own(f.listing_url),
            quantity: f.quantity,
            delivery_method: own(f.delivery_method),
            seller_notes: own(f.seller_notes),
        }
    }

    /// The cache key of this listing.
    ///
    /// A non-empty `listing_id` is stable and source-specific, so the key is
    /// `{source}:{listing_id}`. Records without one (old producers) fall back to the first
    /// ConScope's key, `{event_id}_{source}_{section}_{row}_{seat}`.
    pub fn listing_key(&self) -> CompactString {
        match self.listing_id() {
            // Built by hand: this runs once per record on the hot path. Keys up to 24 bytes
            // (`stubhub:SH-12345678`) stay inline: no allocation.
            Some(id) if !id.is_empty() => {
                let source = self.source();
                let mut key = CompactString::with_capacity(source.len() + 1 + id.len());
                key.push_str(source);
                key.push(':');
                key.push_str(id);
                key
            }
            _ => compact_str::format_compact!(
                "{}_{}_{}_{}_{}",
                self.event_id(),
                self.source(),
                self.section(),
                self.row(),
                self.seat()
            ),
        }
    }
}

impl<S: AsRef<str>> From<&PriceEventFields<S>> for PriceEvent {
    fn from(f: &PriceEventFields<S>) -> Self {
        fn opt<S: AsRef<str>>(s: &Option<S>) -> Option<&str> {
            s.as_ref().map(AsRef::as_ref)
        }
        let texts = Texts::build(
            "",
            [
                Some(f.event_id.as_ref()),
                Some(f.event_name.as_ref()),
                Some(f.venue.as_ref()),
                Some(f.source.as_ref()),
                Some(f.section.as_ref()),
                Some(f.row.as_ref()),
                Some(f.seat.as_ref()),
                opt(&f.listing_id),
                opt(&f.listing_url),
                opt(&f.delivery_method),
                opt(&f.seller_notes),
            ],
        );
        Self {
            texts,
            event_date: f.event_date,
            price: f.price,
            fees: f.fees,
            total_price: f.total_price,
            timestamp: f.timestamp,
            quantity: f.quantity,
        }
    }
}

impl From<PriceEventFields> for PriceEvent {
    fn from(f: PriceEventFields) -> Self {
        Self::from(&f)
    }
}

impl PartialEq for PriceEvent {
    fn eq(&self, other: &Self) -> bool {
        self.fields() == other.fields()
    }
}

impl std::fmt::Debug for PriceEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.fields().fmt(f)
    }
}

impl Serialize for PriceEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.fields().serialize(s)
    }
}

impl<'de> Deserialize<'de> for PriceEvent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PriceEventFields::<CompactString>::deserialize(d).map(Self::from)
    }
}

/// How a price compares with the listing's previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// First sighting: the baseline, never an alert.
    New,
    Unchanged,
    Drop,
    Increase,
    /// Observed before the listing's last-seen time (a listing scattered over partitions, a
    /// backfill): stored in history, but neither the current price, the lowest price nor the
    /// alert state moves.
    OutOfOrder,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Unchanged => "unchanged",
            Self::Drop => "drop",
            Self::Increase => "increase",
            Self::OutOfOrder => "out_of_order",
        }
    }
}

/// The result of comparing one event with the cached state of its listing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub kind: ChangeKind,
    pub previous_cents: Option<i64>,
    /// New minus previous price, in cents (negative for a drop).
    pub change_cents: i64,
    /// Change as a percent of the previous price (negative for a drop).
    pub change_pct: f64,
}

/// A detected price alert: the event, the change, and the rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Deterministic: [`alert_id`] of (listing key, partition, offset, rule).
    pub alert_id: String,
    pub alert_type: CompactString,
    pub rule: CompactString,
    pub listing_key: CompactString,
    /// Shared with the record that raised the alert.
    #[serde(flatten)]
    pub event: Arc<PriceEvent>,
    #[serde(with = "cents")]
    pub old_price: i64,
    #[serde(with = "cents")]
    pub new_price: i64,
    /// Old minus new price (positive for a drop), dollars.
    #[serde(with = "cents")]
    pub drop_amount: i64,
    pub drop_percent: f64,
    pub alert_timestamp: DateTime<Utc>,
    pub source_partition: i32,
    pub source_offset: i64,
}

/// The id of an alert, derived only from what caused it, so re-detecting the same record after a
/// crash yields the same id (32 hex characters of SHA-256).
pub fn alert_id(listing_key: &str, partition: i32, offset: i64, rule: &str) -> String {
    let mut h = Sha256::new();
    h.update(listing_key.as_bytes());
    h.update([0]);
    h.update(partition.to_be_bytes());
    h.update(offset.to_be_bytes());
    h.update(rule.as_bytes());
    let digest = h.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for b in &digest[..16] {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 0xf)] as char);
    }
    id
}

/// What the cache remembers of one listing (24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListingState {
    pub last_price: i64,
    pub lowest_price: i64,
    /// Event time of the last observation, milliseconds since the epoch.
    pub last_seen_ms: i64,
}

/// A processed_prices record: the event with its previous price and the change.
///
/// Publish serialises `ProcessedPrice<&PriceEvent>`, borrowing the committed event instead of
/// copying it; consumers read the owned `ProcessedPrice`. The JSON is the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessedPrice<E = PriceEvent> {
    pub listing_key: CompactString,
    #[serde(flatten)]
    pub event: E,
    #[serde(with = "opt_cents")]
    pub previous_price: Option<i64>,
    /// New minus previous price, dollars (0 for a first sighting).
    #[serde(with = "cents")]
    pub change: i64,
    pub change_pct: f64,
    pub change_kind: ChangeKind,
    pub source_partition: i32,
    pub source_offset: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(listing_id: Option<&str>) -> PriceEvent {
        PriceEvent::from(PriceEventFields {
            event_id: "ts_metlife".into(),
            event_name: "Taylor Swift".into(),
            venue: "MetLife".into(),
            event_date: None,
            source: "mock".into(),
            section: "112".into(),
            row: "F".into(),
            seat: "7".into(),
            price: 14_200,
            fees: None,
            total_price: 14_200,
            timestamp: DateTime::UNIX_EPOCH,
            listing_id: listing_id.map(Into::into),
            listing_url: None,
            quantity: 1,
            delivery_method: None,
            seller_notes: None,
        })
    }

    #[test]
    fn an_event_reads_back_the_fields_it_was_built_from_and_keeps_their_json() {
        let mut fields = event(Some("L1")).to_fields();
        fields.listing_url = Some("https://tickets.example/ω".into());
        fields.seller_notes = Some(String::new().into());
        fields.fees = Some(1_275);
        let event = PriceEvent::from(&fields);
        assert_eq!(event.to_fields(), fields);
        assert_eq!(event.listing_url(), Some("https://tickets.example/ω"));
        assert_eq!(event.seller_notes(), Some(""));
        assert_eq!(event.delivery_method(), None);
        let json = serde_json::to_value(&event).expect("serialises");
        assert_eq!(json, serde_json::to_value(&fields).expect("serialises"));
        assert_eq!(json["fees"], 12.75);
        let back: PriceEvent = serde_json::from_value(json).expect("deserialises");
        assert_eq!(back, event);
    }

    #[test]
    fn listing_key_prefers_listing_id_and_falls_back_to_the_first_conscope_key() {
        assert_eq!(event(Some("L1")).listing_key(), "mock:L1");
        assert_eq!(event(Some("")).listing_key(), "ts_metlife_mock_112_F_7");
        assert_eq!(event(None).listing_key(), "ts_metlife_mock_112_F_7");
    }

    #[test]
    fn alert_id_depends_on_every_cause() {
        let base = alert_id("k", 0, 10, "default");
        assert_eq!(base, alert_id("k", 0, 10, "default"));
        assert_eq!(base.len(), 32);
        assert_ne!(base, alert_id("k", 1, 10, "default"));
        assert_ne!(base, alert_id("k", 0, 11, "default"));
        assert_ne!(base, alert_id("k", 0, 10, "other"));
        assert_ne!(base, alert_id("k2", 0, 10, "default"));
    }

    #[test]
    fn alert_ids_are_stable_across_versions() {
        // The first 16 bytes of SHA-256("k" 0x00 be32(0) be64(10) "default"), lowercase hex:
        // stored ids must keep matching re-detections after an upgrade.
        assert_eq!(
            alert_id("k", 0, 10, "default"),
            "7809f913dcd08ab93357d22dd8c3843c"
        );
    }

    #[test]
    fn a_processed_price_borrowing_its_event_reads_back_as_the_owned_one() {
        let e = event(Some("L1"));
        let owned = ProcessedPrice {
            listing_key: "mock:L1".into(),
            event: e.clone(),
            previous_price: Some(15_000),
            change: -800,
            change_pct: -5.333,
            change_kind: ChangeKind::Drop,
            source_partition: 2,
            source_offset: 41,
        };
        let borrowed = ProcessedPrice {
            listing_key: owned.listing_key.clone(),
            event: &e,
            previous_price: owned.previous_price,
            change: owned.change,
            change_pct: owned.change_pct,
            change_kind: owned.change_kind,
            source_partition: owned.source_partition,
            source_offset: owned.source_offset,
        };
        let json = serde_json::to_string(&borrowed).expect("serializes");
        assert_eq!(json, serde_json::to_string(&owned).expect("serializes"));
        assert!(
            json.contains(r#""price":142.0"#) && json.contains(r#""previous_price":150.0"#),
            "{json}"
        );
        let back: ProcessedPrice = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, owned);
    }

    #[test]
    fn cents_round_to_the_nearest_cent() {
        assert_eq!(Cents::from_dollars(142.5), Some(Cents(14_250)));
        assert_eq!(Cents::from_dollars(0.015), Some(Cents(2)));
        assert_eq!(Cents::from_dollars(f64::NAN), None);
    }
}
