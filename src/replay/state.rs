//! The replay's state writer: `listing_state` and `price_alerts` on a second connection, folded
//! over many batches (see the offset rule in the parent module).

use std::collections::BTreeMap;
use std::time::Instant;

use tokio::sync::mpsc;

use super::REPLAY_STATE_TOPIC;
use super::reader::ReplayBatch;
use crate::pipeline::persist::writer::{self, AlertRows, ListingStates};
use crate::store::StoreError;

/// What the state writer did.
pub(super) struct StateFigures {
    pub transactions: u64,
    pub seconds: f64,
}

/// Listing states and alerts of batches the history writer has committed and the state writer
/// not yet.
#[derive(Default)]
struct Backlog {
    states: ListingStates,
    alerts: AlertRows,
    /// The line after the last batch folded in.
    next_offset: i64,
    batches: usize,
    records: usize,
}

impl Backlog {
    fn add(&mut self, batch: ReplayBatch) {
        self.states.add(&batch.records);
        self.alerts.add(&batch.alerts);
        self.next_offset = batch.next_offset;
        self.batches += 1;
        self.records += batch.records.len();
    }
}

/// The state writer, on a second connection: `listing_state`, `price_alerts` and its own offset
/// in one transaction, for batches the history writer has committed. It folds `fold` records
/// (the input's end may leave fewer) into each transaction, so a listing touched many times
/// among them is written once; while one transaction runs, the batches that arrive are folded
/// into the next.
pub(super) async fn write_states(
    mut client: deadpool_postgres::Object,
    consumer: String,
    fold: usize,
    mut batches: mpsc::Receiver<ReplayBatch>,
) -> Result<StateFigures, StoreError> {
    let mut figures = StateFigures {
        transactions: 0,
        seconds: 0.0,
    };
    let mut next = Backlog::default();
    let mut open = true;
    loop {
        while open && next.records < fold {
            match batches.recv().await {
                Some(batch) => next.add(batch),
                None => open = false,
            }
        }
        if next.batches == 0 {
            break;
        }
        let current = std::mem::take(&mut next);
        let began = Instant::now();
        {
            let write = async {
                let tx = client.transaction().await.map_err(StoreError::query("begin"))?;
                writer::upsert_listing_states(&tx, &current.states).await?;
                writer::insert_alert_rows(&tx, &current.alerts).await?;
                let offset = BTreeMap::from([(0, current.next_offset)]);
                crate::store::offsets::store_offsets(&tx, &consumer, REPLAY_STATE_TOPIC, &offset).await?;
                tx.commit().await.map_err(StoreError::query("commit"))
            };
            tokio::pin!(write);
            loop {
                tokio::select! {
                    written = &mut write => break written?,
                    batch = batches.recv(), if open && next.records < fold => match batch {
                        Some(batch) => next.add(batch),
                        None => open = false,
                    },
                }
            }
        }
        figures.transactions += 1;
        figures.seconds += began.elapsed().as_secs_f64();
    }
    Ok(figures)
}
