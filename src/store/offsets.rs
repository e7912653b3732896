//! Stored offsets, the warm-start load of the price cache, and the publish outbox mark.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use tokio_postgres::Client;

use super::StoreError;
use super::writer::cents_of;
use crate::detect::{ListingState, PriceCache};

/// Stored offsets of one consumer on one topic: partition → (next_offset, published_offset).
pub async fn load(
    client: &Client,
    consumer: &str,
    topic: &str,
) -> Result<BTreeMap<i32, (i64, i64)>, StoreError> {
    let rows = client
        .query(
            "SELECT \"partition\", next_offset, published_offset FROM kafka_offsets
              WHERE consumer = $1 AND topic = $2",
            &[&consumer, &topic],
        )
        .await
        .map_err(StoreError::query("load kafka_offsets"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, i32>(0), (r.get::<_, i64>(1), r.get::<_, i64>(2))))
        .collect())
}

/// Record that everything below `offset` on `partition` has been produced downstream.
pub async fn mark_published(
    client: &Client,
    consumer: &str,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Result<(), StoreError> {
    let partitions: Vec<i32> = offsets.iter().map(|o| o.0).collect();
    let published: Vec<i64> = offsets.iter().map(|o| o.1).collect();
    client
        .execute(
            "UPDATE kafka_offsets o SET published_offset = GREATEST(o.published_offset, t.n)
               FROM UNNEST($3::int4[], $4::int8[]) AS t (p, n)
              WHERE o.consumer = $1 AND o.topic = $2 AND o.\"partition\" = t.p",
            &[&consumer, &topic, &partitions, &published],
        )
        .await
        .map_err(StoreError::query("mark published offsets"))?;
    Ok(())
}

/// Warm start: put every persisted listing state into `cache`. Returns how many.
///
/// Only listings of `partitions` would be needed, but the listing → partition mapping is the
/// producer's; loading all keeps the rule simple, and listings of other partitions are never
/// looked up by this instance.
pub async fn load_cache(client: &Client, cache: &PriceCache) -> Result<usize, StoreError> {
    use futures::TryStreamExt;
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
        cache.load(
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
