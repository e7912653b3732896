//! The batch writer: one transaction per batch, so rows and offsets commit together.
//!
//! In one transaction, in this order:
//! 1. upsert `events` (only rows whose details changed are touched);
//! 2. binary `COPY` of the `price_history` rows;
//! 3. upsert `listing_state` with each listing's final state in the batch ([`ListingStates`]);
//! 4. insert `price_alerts` `ON CONFLICT (alert_id) DO NOTHING` ([`AlertRows`]);
//! 5. `kafka_offsets.next_offset = GREATEST(next_offset, $n)` per partition.
//!
//! A crash before the commit leaves nothing of the batch; after it, everything. Replaying the
//! uncommitted records then produces the same rows and alert ids.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use futures::pin_mut;
use rust_decimal::Decimal;
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::model::Alert;
use crate::model::money::dollars;
use crate::pipeline::messages::Processed;
use crate::store::StoreError;
use crate::store::offsets::{ENGINE_CONSUMER, store_offsets};

/// Write one batch and its offsets in `tx` (the caller commits).
pub async fn write_batch(
    tx: &Transaction<'_>,
    topic: &str,
    records: &[Processed],
    alerts: &[Alert],
    offsets: &BTreeMap<i32, i64>,
) -> Result<(), StoreError> {
    write_records(tx, records, alerts).await?;
    store_offsets(tx, ENGINE_CONSUMER, topic, offsets).await?;
    Ok(())
}

/// Steps 1–4 of [`write_batch`]: every row derived from `records` and `alerts`, without the
/// offsets. Writing consecutive runs of records one after the other gives the same rows as
/// writing them at once (the split in [`super::split`] relies on it).
pub async fn write_records(
    tx: &Transaction<'_>,
    records: &[Processed],
    alerts: &[Alert],
) -> Result<(), StoreError> {
    write_history(tx, records, alerts).await?;
    let mut states = ListingStates::default();
    states.add(records);
    upsert_listing_states(tx, &states).await?;
    insert_alerts(tx, alerts).await
}

/// A batch's history: its events' details (its alerts' events included) and its
/// `price_history` rows (steps 1–2 of [`write_batch`]).
pub async fn write_history(
    tx: &Transaction<'_>,
    records: &[Processed],
    alerts: &[Alert],
) -> Result<(), StoreError> {
    upsert_events(tx, records, alerts).await?;
    copy_history(tx, records).await
}

/// One listing's `listing_state` row as a run of records leaves it.
#[derive(Debug, Clone)]
struct StateRow {
    event_id: CompactString,
    source: CompactString,
    last_price: i64,
    lowest_price: i64,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    /// Observations the run adds.
    observations: i64,
}

/// Each listing's final state over consecutive records, folded batch after batch: the rows of
/// one `listing_state` upsert. A listing seen by many records is written once.
#[derive(Debug, Default)]
pub struct ListingStates {
    rows: HashMap<CompactString, StateRow>,
}

impl ListingStates {
    /// Fold in `records`, which follow every record folded so far.
    pub fn add<'a>(&mut self, records: impl IntoIterator<Item = &'a Processed>) {
        for p in records {
            let e = &p.record.event;
            let last_seen =
                DateTime::<Utc>::from_timestamp_millis(p.state.last_seen_ms).unwrap_or(e.timestamp);
            match self.rows.get_mut(p.listing_key.as_str()) {
                Some(row) => {
                    if row.event_id != e.event_id() {
                        row.event_id = e.event_id().into();
                    }
                    row.last_price = p.state.last_price;
                    row.lowest_price = p.state.lowest_price;
                    row.first_seen = row.first_seen.min(e.timestamp);
                    row.last_seen = last_seen;
                    row.observations += 1;
                }
                None => {
                    self.rows.insert(
                        p.listing_key.clone(),
                        StateRow {
                            event_id: e.event_id().into(),
                            source: e.source().into(),
                            last_price: p.state.last_price,
                            lowest_price: p.state.lowest_price,
                            first_seen: e.timestamp,
                            last_seen,
                            observations: 1,
                        },
                    );
                }
            }
        }
    }

    /// Listings to write.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

async fn upsert_events(
    tx: &Transaction<'_>,
    records: &[Processed],
    alerts: &[Alert],
) -> Result<(), StoreError> {
    let mut latest: BTreeMap<&str, (&str, &str, Option<DateTime<Utc>>)> = BTreeMap::new();
    for e in records
        .iter()
        .map(|p| &*p.record.event)
        .chain(alerts.iter().map(|a| &*a.event))
    {
        latest.insert(e.event_id(), (e.event_name(), e.venue(), e.event_date));
    }
    if latest.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = latest.keys().copied().collect();
    let names: Vec<&str> = latest.values().map(|v| v.0).collect();
    let venues: Vec<&str> = latest.values().map(|v| v.1).collect();
    let dates: Vec<Option<DateTime<Utc>>> = latest.values().map(|v| v.2).collect();
    tx.execute(
        "INSERT INTO events (event_id, event_name, venue, event_date)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[])
         ON CONFLICT (event_id) DO UPDATE
            SET event_name = EXCLUDED.event_name, venue = EXCLUDED.venue,
                event_date = COALESCE(EXCLUDED.event_date, events.event_date), last_updated = now()
          WHERE (events.event_name, events.venue, events.event_date)
                IS DISTINCT FROM (EXCLUDED.event_name, EXCLUDED.venue,
                                  COALESCE(EXCLUDED.event_date, events.event_date))",
        &[&ids, &names, &venues, &dates],
    )
    .await
    .map_err(StoreError::query("upsert events"))?;
    Ok(())
}

const HISTORY_TYPES: [Type; 19] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::NUMERIC,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::INT4,
    Type::NUMERIC,
    Type::TEXT,
    Type::INT4,
    Type::INT8,
    Type::TEXT,
    Type::TEXT,
];

async fn copy_history(tx: &Transaction<'_>, records: &[Processed]) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    let sink = tx
        .copy_in(
            "COPY price_history (event_id, listing_key, source, section, \"row\", seat, price, fees,
                 total_price, \"timestamp\", listing_id, listing_url, quantity, previous_price,
                 change_kind, kafka_partition, kafka_offset, delivery_method, seller_notes)
                 FROM STDIN (FORMAT binary)",
        )
        .await
        .map_err(StoreError::query("start COPY price_history"))?;
    let writer = BinaryCopyInWriter::new(sink, &HISTORY_TYPES);
    pin_mut!(writer);
    for p in records {
        let e = &p.record.event;
        let price = dollars(e.price);
        let fees = e.fees.map(dollars);
        let total = dollars(e.total_price);
        let previous = p.change.previous_cents.map(dollars);
        let row: [&(dyn ToSql + Sync); 19] = [
            &e.event_id(),
            &p.listing_key.as_str(),
            &e.source(),
            &e.section(),
            &e.row(),
            &e.seat(),
            &price,
            &fees,
            &total,
            &e.timestamp,
            &e.listing_id(),
            &e.listing_url(),
            &e.quantity,
            &previous,
            &p.change.kind.as_str(),
            &p.record.partition,
            &p.record.offset,
            &e.delivery_method(),
            &e.seller_notes(),
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(StoreError::query("COPY price_history"))?;
    }
    writer
        .finish()
        .await
        .map_err(StoreError::query("finish COPY price_history"))?;
    Ok(())
}

/// Upsert each listing's state (step 3 of [`write_batch`]).
///
/// A row whose `last_seen` is older than the stored one (a replay of old history beside the
/// engine, or another writer that saw the listing later) moves neither the price nor the lowest
/// price; it still adds its observations and may move `first_seen` earlier. The same rule as the
/// price cache's ([`crate::pipeline::detect::PriceCache::observe`]), so live state never rewinds.
pub async fn upsert_listing_states(tx: &Transaction<'_>, states: &ListingStates) -> Result<(), StoreError> {
    if states.is_empty() {
        return Ok(());
    }
    let rows = &states.rows;
    let keys: Vec<&str> = rows.keys().map(CompactString::as_str).collect();
    let events: Vec<&str> = rows.values().map(|r| r.event_id.as_str()).collect();
    let sources: Vec<&str> = rows.values().map(|r| r.source.as_str()).collect();
    let prices: Vec<Decimal> = rows.values().map(|r| dollars(r.last_price)).collect();
    let lows: Vec<Decimal> = rows.values().map(|r| dollars(r.lowest_price)).collect();
    let firsts: Vec<DateTime<Utc>> = rows.values().map(|r| r.first_seen).collect();
    let lasts: Vec<DateTime<Utc>> = rows.values().map(|r| r.last_seen).collect();
    let counts: Vec<i64> = rows.values().map(|r| r.observations).collect();
    tx.execute(
        "INSERT INTO listing_state (listing_key, event_id, source, last_price, lowest_price,
                                    first_seen, last_seen, observations)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::numeric[], $5::numeric[],
                              $6::timestamptz[], $7::timestamptz[], $8::int8[])
         ON CONFLICT (listing_key) DO UPDATE
            SET last_price = CASE WHEN EXCLUDED.last_seen >= listing_state.last_seen
                                  THEN EXCLUDED.last_price ELSE listing_state.last_price END,
                lowest_price = CASE WHEN EXCLUDED.last_seen >= listing_state.last_seen
                                    THEN LEAST(listing_state.lowest_price, EXCLUDED.lowest_price)
                                    ELSE listing_state.lowest_price END,
                first_seen = LEAST(listing_state.first_seen, EXCLUDED.first_seen),
                last_seen = GREATEST(listing_state.last_seen, EXCLUDED.last_seen),
                observations = listing_state.observations + EXCLUDED.observations,
                updated_at = now()",
        &[&keys, &events, &sources, &prices, &lows, &firsts, &lasts, &counts],
    )
    .await
    .map_err(StoreError::query("upsert listing_state"))?;
    Ok(())
}

/// Alerts as the columns of one `price_alerts` insert. It owns their values, not their events,
/// so alerts can wait to be written without keeping whole events alive.
#[derive(Debug, Default)]
pub struct AlertRows {
    ids: Vec<String>,
    events: Vec<String>,
    types: Vec<String>,
    rules: Vec<String>,
    times: Vec<DateTime<Utc>>,
    keys: Vec<String>,
    old: Vec<Decimal>,
    new: Vec<Decimal>,
    drop: Vec<Decimal>,
    percents: Vec<f64>,
    sections: Vec<String>,
    rows: Vec<String>,
    seats: Vec<String>,
    sources: Vec<String>,
    listing_ids: Vec<Option<String>>,
    urls: Vec<Option<String>>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    /// The alert's JSON (the price_alerts message), cast to jsonb by Postgres.
    payloads: Vec<String>,
}

impl AlertRows {
    pub fn add(&mut self, alerts: &[Alert]) {
        for a in alerts {
            let e = &a.event;
            self.ids.push(a.alert_id.clone());
            self.events.push(e.event_id().to_owned());
            self.types.push(a.alert_type.to_string());
            self.rules.push(a.rule.to_string());
            self.times.push(a.alert_timestamp);
            self.keys.push(a.listing_key.to_string());
            self.old.push(dollars(a.old_price));
            self.new.push(dollars(a.new_price));
            self.drop.push(dollars(a.drop_amount));
            self.percents.push(a.drop_percent);
            self.sections.push(e.section().to_owned());
            self.rows.push(e.row().to_owned());
            self.seats.push(e.seat().to_owned());
            self.sources.push(e.source().to_owned());
            self.listing_ids.push(e.listing_id().map(str::to_owned));
            self.urls.push(e.listing_url().map(str::to_owned));
            self.partitions.push(a.source_partition);
            self.offsets.push(a.source_offset);
            // An Alert always serialises: plain fields, string keys.
            self.payloads
                .push(serde_json::to_string(a).unwrap_or_else(|_| "null".into()));
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

async fn insert_alerts(tx: &Transaction<'_>, alerts: &[Alert]) -> Result<(), StoreError> {
    let mut rows = AlertRows::default();
    rows.add(alerts);
    insert_alert_rows(tx, &rows).await
}

/// Insert alerts `ON CONFLICT (alert_id) DO NOTHING` (step 4 of [`write_batch`]), in one
/// statement: a round trip per alert cost more than the rows did (about a third of a
/// 20,000-record batch's write time with 7% of records alerting).
pub async fn insert_alert_rows(tx: &Transaction<'_>, a: &AlertRows) -> Result<(), StoreError> {
    if a.is_empty() {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO price_alerts (alert_id, event_id, alert_type, rule, alert_timestamp, listing_key,
             old_price, new_price, drop_amount, drop_percent, section, \"row\", seat, source,
             listing_id, listing_url, kafka_partition, kafka_offset, payload)
         SELECT i, e, t, r, ts, k, o, n, d, pc, sc, rw, st, so, li, u, pa, of, pl::jsonb
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                       $6::text[], $7::numeric[], $8::numeric[], $9::numeric[], $10::float8[],
                       $11::text[], $12::text[], $13::text[], $14::text[], $15::text[],
                       $16::text[], $17::int4[], $18::int8[], $19::text[])
                AS x (i, e, t, r, ts, k, o, n, d, pc, sc, rw, st, so, li, u, pa, of, pl)
         ON CONFLICT (alert_id) DO NOTHING",
        &[
            &a.ids,
            &a.events,
            &a.types,
            &a.rules,
            &a.times,
            &a.keys,
            &a.old,
            &a.new,
            &a.drop,
            &a.percents,
            &a.sections,
            &a.rows,
            &a.seats,
            &a.sources,
            &a.listing_ids,
            &a.urls,
            &a.partitions,
            &a.offsets,
            &a.payloads,
        ],
    )
    .await
    .map_err(StoreError::query("insert price_alerts"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::DetectConfig;
    use crate::pipeline::detect::stage::Detector;
    use crate::pipeline::detect::{PriceCache, Rules};
    use crate::pipeline::ingest::parse::Parser;
    use crate::pipeline::messages::InRecord;

    fn detected(detector: &Detector, lines: &[(&str, f64, &str)]) -> Vec<Processed> {
        let mut parser = Parser::new();
        let mut alerts = Vec::new();
        lines
            .iter()
            .enumerate()
            .map(|(i, (listing, price, at))| {
                let json = format!(
                    r#"{{"event_id":"e1","event_name":"Show","venue":"Hall","source":"mock","price":{price},"timestamp":"{at}","listing_id":"{listing}"}}"#
                );
                let event = parser.parse(json.as_bytes()).expect("valid");
                let record = InRecord {
                    partition: 0,
                    offset: i as i64,
                    kafka_ts: event.timestamp,
                    event,
                };
                detector.process(record, &mut alerts)
            })
            .collect()
    }

    #[test]
    fn folded_batches_give_each_listing_its_final_state_and_all_its_observations() {
        let detector = Detector::new(
            Arc::new(PriceCache::new()),
            Rules::from_config(&DetectConfig::default()),
        );
        let first = detected(
            &detector,
            &[
                ("A", 100.0, "2026-11-21T10:00:00"),
                ("B", 50.0, "2026-11-21T10:00:01"),
                ("A", 90.0, "2026-11-21T10:01:00"),
            ],
        );
        let second = detected(&detector, &[("A", 95.0, "2026-11-21T10:02:00")]);
        let mut states = ListingStates::default();
        states.add(&first);
        states.add(&second);
        assert_eq!(states.len(), 2);
        let a = &states.rows["mock:A"];
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        assert_eq!((a.last_price, a.lowest_price, a.observations), (9_500, 9_000, 3));
        assert_eq!(
            (a.first_seen, a.last_seen),
            (at("2026-11-21T10:00:00Z"), at("2026-11-21T10:02:00Z"))
        );
        assert_eq!((a.event_id.as_str(), a.source.as_str()), ("e1", "mock"));
        let b = &states.rows["mock:B"];
        assert_eq!((b.last_price, b.lowest_price, b.observations), (5_000, 5_000, 1));
    }

    #[test]
    fn an_out_of_order_record_is_counted_but_leaves_the_folded_state() {
        let detector = Detector::new(
            Arc::new(PriceCache::new()),
            Rules::from_config(&DetectConfig::default()),
        );
        let processed = detected(
            &detector,
            &[
                ("A", 100.0, "2026-11-21T10:05:00"),
                ("A", 40.0, "2026-11-21T10:00:00"),
            ],
        );
        let mut states = ListingStates::default();
        states.add(&processed);
        let a = &states.rows["mock:A"];
        let at = |s: &str| s.parse::<DateTime<Utc>>().expect("time");
        assert_eq!(
            (a.last_price, a.lowest_price, a.observations),
            (10_000, 10_000, 2)
        );
        assert_eq!(
            (a.first_seen, a.last_seen),
            (at("2026-11-21T10:00:00Z"), at("2026-11-21T10:05:00Z"))
        );
    }
}
