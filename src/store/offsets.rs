//! Stored offsets: loading them, storing them with a batch, and the publish outbox mark.

use std::collections::BTreeMap;

use tokio_postgres::{Client, Transaction};

use super::StoreError;

/// Name under which the engine's raw_prices offsets are stored in `kafka_offsets`.
pub const ENGINE_CONSUMER: &str = "engine";

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

/// `next_offset = GREATEST(next_offset, $n)`: offsets never move backwards.
pub async fn store_offsets(
    tx: &Transaction<'_>,
    consumer: &str,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<(), StoreError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let partitions: Vec<i32> = offsets.keys().copied().collect();
    let next: Vec<i64> = offsets.values().copied().collect();
    tx.execute(
        "INSERT INTO kafka_offsets (consumer, topic, \"partition\", next_offset)
         SELECT $1, $2, p, n FROM UNNEST($3::int4[], $4::int8[]) AS t (p, n)
         ON CONFLICT (consumer, topic, \"partition\") DO UPDATE
            SET next_offset = GREATEST(kafka_offsets.next_offset, EXCLUDED.next_offset),
                updated_at = now()",
        &[&consumer, &topic, &partitions, &next],
    )
    .await
    .map_err(StoreError::query("store kafka_offsets"))?;
    Ok(())
}
