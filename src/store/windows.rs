//! price_windows: writing closed windows, recomputing a written window for late records, the
//! watermark, and rebuilding open windows at start. The web layer reads windows through
//! `store::queries::windows`.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use rust_decimal::Decimal;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

use super::StoreError;
use super::writer::{cents_of, dollars};
use crate::config::WindowsConfig;
use crate::detect::windows::{Observation, WindowKey, WindowRow, Windows};
use crate::model::ChangeKind;

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

/// An instance's windows as it left them (the engine's, or a replayed file's): its stored
/// watermark, its partitions registered, and the windows still open rebuilt from the committed
/// rows. Returns the windows and how many rows were read back.
pub async fn resume(
    client: &Client,
    cfg: &WindowsConfig,
    instance: i32,
    partitions: &[i32],
) -> Result<(Windows, u64), StoreError> {
    let watermark = load_watermark(client, instance).await?;
    let mut windows = Windows::new(cfg, watermark);
    windows.register_partitions(partitions, std::time::Instant::now());
    let mut rows = 0;
    if windows.enabled() {
        let widest = cfg.widths_ms().into_iter().max().unwrap_or(60_000);
        rows = rebuild(client, &mut windows, widest, partitions).await?;
    }
    Ok((windows, rows))
}

/// Rebuild the open windows after a restart from the committed rows they cover.
///
/// Open windows are those ending after the stored watermark, so only rows from the start of
/// the widest open window on are read, through the (event_id, timestamp) index.
pub async fn rebuild(
    client: &Client,
    windows: &mut Windows,
    widest_ms: i64,
    partitions: &[i32],
) -> Result<u64, StoreError> {
    let Some(wm) = windows.watermark() else {
        // Nothing was ever written: every stored row belongs to an open window.
        return replay_rows(client, windows, 0, partitions).await;
    };
    let from = wm.div_euclid(widest_ms) * widest_ms;
    replay_rows(client, windows, from, partitions).await
}

async fn replay_rows(
    client: &Client,
    windows: &mut Windows,
    from_ms: i64,
    partitions: &[i32],
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
        windows.replay(Observation {
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
