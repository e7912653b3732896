//! Finding the records the database refuses, without holding back the rest.
//!
//! A batch's records are written inside a savepoint. When the database refuses a value (a
//! [`ErrorClass::Data`] error: SQLSTATE classes 22, 23, 54), the savepoint is rolled back and
//! the run is halved, each half in a savepoint of its own, until each refused record stands
//! alone. Halves are written in record order, so the rows are those of the records written at
//! once, less the refused. A batch of n records with k refused costs about 2k·log2(n) extra
//! statements; the clean batch costs one savepoint.
//!
//! ```text
//!  [0..8) refused ─► [0..4) ok ─► [4..8) refused ─► [4..6) ok ─► [6..8) refused ─► [6] ok ─► [7] refused: DLQ
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use tokio_postgres::Transaction;

use super::writer;
use crate::model::Alert;
use crate::model::window::{WindowKey, WindowRow};
use crate::pipeline::messages::Processed;
use crate::store::{ErrorClass, StoreError};

/// A record the database refused: its place in the batch and what the database said.
#[derive(Debug, Clone)]
pub struct Refused {
    pub index: usize,
    pub reason: String,
}

/// Write `records` (and the alerts they raised) in `tx`, leaving out each record the database
/// refuses. Any other error is returned: the transaction is then to be retried whole.
pub async fn write_records(
    tx: &mut Transaction<'_>,
    records: &[Processed],
    alerts: &[Alert],
) -> Result<Vec<Refused>, StoreError> {
    let mut by_source: HashMap<(i32, i64), Vec<usize>> = HashMap::new();
    for (i, a) in alerts.iter().enumerate() {
        by_source
            .entry((a.source_partition, a.source_offset))
            .or_default()
            .push(i);
    }
    let mut refused = Vec::new();
    // Ranges still to write, the next one on top: a refused range's halves go back on it, the
    // left one on top, so ranges are written in record order.
    let mut todo: Vec<Range<usize>> = Vec::with_capacity(64);
    todo.push(0..records.len());
    while let Some(range) = todo.pop() {
        if range.is_empty() {
            continue;
        }
        let part = &records[range.clone()];
        let part_alerts: Cow<'_, [Alert]> = if range.len() == records.len() {
            Cow::Borrowed(alerts)
        } else {
            part.iter()
                .filter_map(|p| by_source.get(&(p.record.partition, p.record.offset)))
                .flatten()
                .map(|&i| alerts[i].clone())
                .collect()
        };
        let sp = tx
            .savepoint("conscope_split")
            .await
            .map_err(StoreError::query("savepoint"))?;
        match writer::write_records(&sp, part, &part_alerts).await {
            Ok(()) => sp
                .commit()
                .await
                .map_err(StoreError::query("release savepoint"))?,
            Err(e) if e.class() == ErrorClass::Data => {
                sp.rollback()
                    .await
                    .map_err(StoreError::query("rollback to savepoint"))?;
                if range.len() == 1 {
                    refused.push(Refused {
                        index: range.start,
                        reason: crate::logging::chain(&e).to_string(),
                    });
                } else {
                    let mid = range.start + range.len() / 2;
                    todo.push(mid..range.end);
                    todo.push(range.start..mid);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(refused)
}

/// Write closed windows in `tx`, leaving out (and returning, with the database's message) any
/// row the database refuses.
pub async fn write_windows(
    tx: &mut Transaction<'_>,
    instance: i32,
    rows: &[WindowRow],
) -> Result<Vec<(WindowKey, String)>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let sp = tx
        .savepoint("conscope_windows")
        .await
        .map_err(StoreError::query("savepoint"))?;
    match super::windows::upsert(&sp, instance, rows).await {
        Ok(()) => {
            sp.commit()
                .await
                .map_err(StoreError::query("release savepoint"))?;
            return Ok(Vec::new());
        }
        Err(e) if e.class() == ErrorClass::Data => sp
            .rollback()
            .await
            .map_err(StoreError::query("rollback to savepoint"))?,
        Err(e) => return Err(e),
    }
    // Windows per batch are few: one savepoint each.
    let mut refused = Vec::new();
    for row in rows {
        let sp = tx
            .savepoint("conscope_window")
            .await
            .map_err(StoreError::query("savepoint"))?;
        match super::windows::upsert(&sp, instance, std::slice::from_ref(row)).await {
            Ok(()) => sp
                .commit()
                .await
                .map_err(StoreError::query("release savepoint"))?,
            Err(e) if e.class() == ErrorClass::Data => {
                sp.rollback()
                    .await
                    .map_err(StoreError::query("rollback to savepoint"))?;
                refused.push((row.key.clone(), crate::logging::chain(&e).to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(refused)
}
