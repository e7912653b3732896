//! The warm start: what a starting engine reads back from committed state: the listing states
//! for the price cache, the window watermark, and the rows of the windows still open.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use rust_decimal::Decimal;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::StoreError;
use crate::model::ListingState;
use crate::model::money::cents_of;
use crate::model::{ChangeKind, window::Observation};

/// Every persisted listing state, handed to `load` one by one (the price cache's warm start).
/// Returns how many.
///
/// Only listings of `partitions` would be needed, but the listing → partition mapping is the
/// producer's; loading all keeps the rule simple, and listings of other partitions are never
/// looked up by this instance.
pub async fn listing_states(
    client: &Client,
    mut load: impl FnMut(&str, ListingState),
) -> Result<usize, StoreError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
    let rows = client
        .query_raw(
            "SELECT listing_key, last_price, lowest_price, last_seen FROM listing_state",
            params,
        )
        .await
        .map_err(StoreError::query("load listing_state"))?;
    futures::pin_mut!(rows);
    let mut n = 0;
    while let Some(row) = rows
        .try_next()
        .await
        .map_err(StoreError::query("load listing_state"))?
    {
        let key: &str = row.get(0);
        let last: Decimal = row.get(1);
        let low: Decimal = row.get(2);
        let seen: chrono::DateTime<chrono::Utc> = row.get(3);
        load(
            key,
            ListingState {
                last_price: cents_of(last),
                lowest_price: cents_of(low),
                last_seen_ms: seen.timestamp_millis(),
            },
        );
        n += 1;
    }
    Ok(n)
}

pub async fn load_watermark(client: &Client, instance: i32) -> Result<Option<i64>, StoreError> {
    let row = client
        .query_opt(
            "SELECT watermark FROM window_progress WHERE instance = $1",
            &[&instance],
        )
        .await
        .map_err(StoreError::query("load window watermark"))?;
    Ok(row.map(|r| r.get::<_, DateTime<Utc>>(0).timestamp_millis()))
}

/// The committed rows the open windows cover, handed to `replay` one by one: how windows are
/// rebuilt after a restart.
///
/// Open windows are those ending after the stored watermark, so only rows from the start of
/// the widest open window on are read, through the (event_id, timestamp) index.
pub async fn open_window_rows(
    client: &Client,
    watermark: Option<i64>,
    widest_ms: i64,
    partitions: &[i32],
    replay: impl FnMut(Observation<'_>),
) -> Result<u64, StoreError> {
    let Some(wm) = watermark else {
        // Nothing was ever written: every stored row belongs to an open window.
        return replay_rows(client, 0, partitions, replay).await;
    };
    let from = wm.div_euclid(widest_ms) * widest_ms;
    replay_rows(client, from, partitions, replay).await
}

async fn replay_rows(
    client: &Client,
    from_ms: i64,
    partitions: &[i32],
    mut replay: impl FnMut(Observation<'_>),
) -> Result<u64, StoreError> {
    // Prices are never older than the epoch; Postgres cannot hold chrono's minimum anyway.
    let from = DateTime::from_timestamp_millis(from_ms.max(0)).unwrap_or(DateTime::UNIX_EPOCH);
    let params: [&(dyn ToSql + Sync); 2] = [&from, &partitions];
    let rows = client
        .query_raw(
            "SELECT h.event_id, h.source, h.listing_key, h.price, h.\"timestamp\", h.kafka_partition,
                    h.kafka_offset, h.change_kind
               FROM price_history h
              WHERE h.event_id = ANY(ARRAY(SELECT event_id FROM events)) AND h.\"timestamp\" >= $1
                AND h.kafka_partition = ANY($2)",
            params,
        )
        .await
        .map_err(StoreError::query("rebuild open windows"))?;
    futures::pin_mut!(rows);
    let mut n = 0;
    while let Some(r) = rows
        .try_next()
        .await
        .map_err(StoreError::query("rebuild open windows"))?
    {
        let kind = match r.get::<_, &str>(7) {
            "drop" => ChangeKind::Drop,
            "increase" => ChangeKind::Increase,
            "unchanged" => ChangeKind::Unchanged,
            "out_of_order" => ChangeKind::OutOfOrder,
            _ => ChangeKind::New,
        };
        replay(Observation {
            event_id: r.get(0),
            source: r.get(1),
            listing_key: r.get(2),
            price: cents_of(r.get::<_, Decimal>(3)),
            ts_ms: r.get::<_, DateTime<Utc>>(4).timestamp_millis(),
            partition: r.get(5),
            offset: r.get(6),
            kind,
        });
        n += 1;
    }
    Ok(n)
}
