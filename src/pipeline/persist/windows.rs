//! price_windows writes inside a batch transaction: closed windows, written windows recomputed
//! for late records, and the watermark. The warm start reads them back (`store::warm`); the web
//! layer through `store::queries::windows`.

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use tokio_postgres::types::ToSql;

use crate::model::money::dollars;
use crate::model::window::{WindowKey, WindowRow};
use crate::store::StoreError;

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The head of both window writes: the columns of a price_windows row.
macro_rules! insert_window {
    () => {
        "INSERT INTO price_windows (event_id, source, width_seconds, window_start, window_end, observations,
             distinct_listings, min_price, max_price, sum_price, mean_price, first_price, last_price,
             drops, rises, first_at, last_at, instance, late_records) "
    };
}

/// A window written again replaces its figures; each write says what becomes of `late_records`.
macro_rules! on_window_conflict {
    () => {
        "ON CONFLICT (event_id, width_seconds, window_start, source, instance) DO UPDATE SET
             observations = EXCLUDED.observations, distinct_listings = EXCLUDED.distinct_listings,
             min_price = EXCLUDED.min_price, max_price = EXCLUDED.max_price, sum_price = EXCLUDED.sum_price,
             mean_price = EXCLUDED.mean_price, first_price = EXCLUDED.first_price,
             last_price = EXCLUDED.last_price, drops = EXCLUDED.drops, rises = EXCLUDED.rises,
             first_at = EXCLUDED.first_at, last_at = EXCLUDED.last_at, "
    };
}

/// Write closed windows (replacing a row of the same key, which only a replay could leave).
pub async fn upsert(tx: &Transaction<'_>, instance: i32, rows: &[WindowRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare(
            concat!(
                insert_window!(),
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, round($10::numeric / $6::int8, 4), $11, $12, $13,
                         $14, $15, $16, $17, $18) ",
                on_window_conflict!(),
                "late_records = EXCLUDED.late_records, updated_at = now()"
            ),
        )
        .await
        .map_err(StoreError::query("prepare price_windows upsert"))?;
    for r in rows {
        let k = &r.key;
        let width = (k.width_ms / 1000) as i32;
        let params: [&(dyn ToSql + Sync); 18] = [
            &k.event_id,
            &k.source,
            &width,
            &at(k.start_ms),
            &at(k.start_ms + k.width_ms),
            &r.observations,
            &r.distinct_listings,
            &dollars(r.min),
            &dollars(r.max),
            &dollars(r.sum),
            &dollars(r.first_price),
            &dollars(r.last_price),
            &r.drops,
            &r.rises,
            &at(r.first_at_ms),
            &at(r.last_at_ms),
            &instance,
            &r.late_records,
        ];
        tx.execute(&stmt, &params)
            .await
            .map_err(StoreError::query("upsert price_windows"))?;
    }
    Ok(())
}

/// Recompute written windows from price_history (this instance's partitions), for late records
/// that arrived for them; `late_records` grows by the count.
pub async fn recompute(
    tx: &Transaction<'_>,
    instance: i32,
    partitions: &[i32],
    keys: &[(WindowKey, i32)],
) -> Result<(), StoreError> {
    for (k, late) in keys {
        let width = (k.width_ms / 1000) as i32;
        tx.execute(
            concat!(
                insert_window!(),
                "SELECT $1, $2, $3, $4, $5, count(*), count(DISTINCT listing_key), min(price), max(price), sum(price),
                    round(avg(price), 4),
                    (array_agg(price ORDER BY \"timestamp\", kafka_partition, kafka_offset))[1],
                    (array_agg(price ORDER BY \"timestamp\" DESC, kafka_partition DESC, kafka_offset DESC))[1],
                    count(*) FILTER (WHERE change_kind = 'drop'), count(*) FILTER (WHERE change_kind = 'increase'),
                    min(\"timestamp\"), max(\"timestamp\"), $6, $7
               FROM price_history
              WHERE event_id = $1 AND source = $2 AND \"timestamp\" >= $4 AND \"timestamp\" < $5
                AND kafka_partition = ANY($8)
             HAVING count(*) > 0 ",
                on_window_conflict!(),
                "late_records = price_windows.late_records + EXCLUDED.late_records, updated_at = now()"
            ),
            &[
                &k.event_id,
                &k.source,
                &width,
                &at(k.start_ms),
                &at(k.start_ms + k.width_ms),
                &instance,
                late,
                &partitions,
            ],
        )
        .await
        .map_err(StoreError::query("recompute late price_windows"))?;
    }
    Ok(())
}

/// Store this instance's watermark (never moving back).
pub async fn store_watermark(
    tx: &Transaction<'_>,
    instance: i32,
    watermark_ms: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO window_progress (instance, watermark) VALUES ($1, $2)
         ON CONFLICT (instance) DO UPDATE SET watermark = GREATEST(window_progress.watermark, EXCLUDED.watermark),
                                              updated_at = now()",
        &[&instance, &at(watermark_ms)],
    )
    .await
    .map_err(StoreError::query("store window watermark"))?;
    Ok(())
}
