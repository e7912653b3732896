//! Postgres's ceiling for `replay`: one bare binary `COPY` of the same rows into the same schema.
//!
//! The rows `replay` just stored are exported (`COPY (SELECT …) TO STDOUT`, binary) into memory,
//! then timed while one `COPY … FROM STDIN` loads them into a scratch table made with
//! `LIKE price_history INCLUDING ALL` (same columns, defaults, identity, checks and indexes; no
//! foreign key, which `LIKE` does not copy). The scratch table is a normal logged table (a
//! temporary one would skip the WAL and flatter the ceiling) and is dropped afterwards.

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, TryStreamExt};
use serde::Serialize;
use std::time::Instant;
use tokio_postgres::Client;

use crate::store::StoreError;

/// The columns ConScope's writer copies into price_history, in its order.
pub const HISTORY_COLUMNS: &str = "event_id, listing_key, source, section, \"row\", seat, price, fees, \
     total_price, \"timestamp\", listing_id, listing_url, quantity, previous_price, change_kind, \
     kafka_partition, kafka_offset";

/// Export chunks are gathered to about this size before the timed COPY sends them.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct CopyFigures {
    pub rows: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
}

/// Bare-COPY the price_history rows of `partition` with offsets in `from..to` (at most `limit`).
pub async fn bare_copy(
    client: &Client,
    partition: i32,
    from: i64,
    to: i64,
    limit: u64,
) -> Result<CopyFigures, StoreError> {
    let export = format!(
        "COPY (SELECT {HISTORY_COLUMNS} FROM price_history
                WHERE kafka_partition = {partition} AND kafka_offset >= {from} AND kafka_offset < {to}
                ORDER BY kafka_offset LIMIT {limit}) TO STDOUT (FORMAT binary)"
    );
    let stream = client
        .copy_out(&export)
        .await
        .map_err(StoreError::query("export rows for the bare COPY"))?;
    futures::pin_mut!(stream);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut current = BytesMut::with_capacity(CHUNK);
    let mut bytes = 0u64;
    while let Some(data) = stream
        .try_next()
        .await
        .map_err(StoreError::query("export rows for the bare COPY"))?
    {
        bytes += data.len() as u64;
        current.extend_from_slice(&data);
        if current.len() >= CHUNK {
            chunks.push(current.split().freeze());
        }
    }
    if !current.is_empty() {
        chunks.push(current.freeze());
    }

    let table = format!("bench_bare_copy_{}", std::process::id());
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (LIKE price_history INCLUDING ALL)"
        ))
        .await
        .map_err(StoreError::query("create the bare COPY table"))?;
    let timed = async {
        let started = Instant::now();
        let sink = client
            .copy_in::<_, Bytes>(&format!(
                "COPY {table} ({HISTORY_COLUMNS}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(StoreError::query("bare COPY"))?;
        futures::pin_mut!(sink);
        for chunk in chunks {
            sink.feed(chunk).await.map_err(StoreError::query("bare COPY"))?;
        }
        let rows = sink
            .as_mut()
            .finish()
            .await
            .map_err(StoreError::query("bare COPY"))?;
        Ok::<_, StoreError>((rows, started.elapsed().as_secs_f64()))
    }
    .await;
    let dropped = client
        .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .await
        .map_err(StoreError::query("drop the bare COPY table"));
    let (rows, seconds) = timed?;
    dropped?;
    Ok(CopyFigures {
        rows,
        bytes,
        seconds,
        rows_per_s: rows as f64 / seconds.max(1e-9),
    })
}
