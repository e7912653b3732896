//! Postgres's ceiling for `replay`: one bare binary `COPY` of the same rows into the same schema.
//!
//! The rows `replay` just stored are exported (`COPY (SELECT …) TO STDOUT`, binary) into memory,
//! then timed while one `COPY … FROM STDIN` loads them into a scratch table made with
//! `LIKE price_history INCLUDING ALL` (same columns, defaults, identity, checks and indexes),
//! once as is — `LIKE` copies no foreign key, which is the issue's "price_history-like rows with
//! three indexes" — and once with price_history's foreign key to `events` added back, which is
//! the schema ConScope really writes. The scratch table is a normal logged table (a temporary
//! one would skip the WAL and flatter the ceiling) and is dropped afterwards.

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, TryStreamExt};
use serde::Serialize;
use std::time::Instant;
use tokio_postgres::Client;

use crate::rate::Rate;
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

/// The two ceilings of one set of rows.
#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    /// Into `LIKE price_history INCLUDING ALL` (three indexes, no foreign key).
    pub bare: CopyFigures,
    /// The same with the foreign key to `events` price_history has.
    pub with_foreign_key: CopyFigures,
}

/// Bare-COPY the price_history rows of `partition` with offsets in `from..to` (at most `limit`),
/// without and with the foreign key.
pub async fn ceilings(
    client: &Client,
    partition: i32,
    from: i64,
    to: i64,
    limit: u64,
) -> Result<Ceilings, StoreError> {
    let (chunks, bytes) = export(client, partition, from, to, limit).await?;
    Ok(Ceilings {
        bare: bare_copy(client, &chunks, bytes, false).await?,
        with_foreign_key: bare_copy(client, &chunks, bytes, true).await?,
    })
}

async fn export(
    client: &Client,
    partition: i32,
    from: i64,
    to: i64,
    limit: u64,
) -> Result<(Vec<Bytes>, u64), StoreError> {
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
    Ok((chunks, bytes))
}

/// One timed COPY of `chunks` into a fresh scratch table.
async fn bare_copy(
    client: &Client,
    chunks: &[Bytes],
    bytes: u64,
    foreign_key: bool,
) -> Result<CopyFigures, StoreError> {
    let table = format!("bench_bare_copy_{}", std::process::id());
    client
        .batch_execute(&format!(
            "SET client_min_messages = warning; DROP TABLE IF EXISTS {table};
             CREATE TABLE {table} (LIKE price_history INCLUDING ALL);
             {}",
            if foreign_key {
                format!("ALTER TABLE {table} ADD FOREIGN KEY (event_id) REFERENCES events (event_id)")
            } else {
                String::new()
            }
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
            sink.feed(chunk.clone())
                .await
                .map_err(StoreError::query("bare COPY"))?;
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
        rows_per_s: Rate::new(rows, seconds).per_second(),
    })
}
