//! Stalling Postgres on purpose: a separate connection takes `LOCK TABLE price_history` (ACCESS
//! EXCLUSIVE) and holds it, so every ConScope batch waits on its COPY as it would behind a stuck
//! server, while the broker stays up. Used to check that memory stays flat under backpressure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::NoTls;

use conscope::config::{Secret, redact_url};
use conscope::store::StoreError;

/// When the lock was held, in seconds since the pipeline started.
#[derive(Debug, Clone, Serialize)]
pub struct StallWindow {
    pub from_s: f64,
    pub to_s: f64,
}

/// Hold the lock for `hold`; `stalled` is true while it is held.
pub async fn hold_history_lock(
    url: Secret,
    hold: Duration,
    stalled: Arc<AtomicBool>,
    origin: Instant,
) -> Result<StallWindow, StoreError> {
    let (client, conn) =
        tokio_postgres::connect(url.expose(), NoTls)
            .await
            .map_err(|e| StoreError::Connect {
                url: redact_url(url.expose()),
                reason: conscope::store::sqlstate::describe(&e),
            })?;
    tokio::spawn(conn);
    client
        .batch_execute("BEGIN; LOCK TABLE price_history IN ACCESS EXCLUSIVE MODE")
        .await
        .map_err(StoreError::query("lock price_history"))?;
    stalled.store(true, Relaxed);
    let from_s = origin.elapsed().as_secs_f64();
    tokio::time::sleep(hold).await;
    let released = client
        .batch_execute("ROLLBACK")
        .await
        .map_err(StoreError::query("release price_history"));
    stalled.store(false, Relaxed);
    released?;
    Ok(StallWindow {
        from_s,
        to_s: origin.elapsed().as_secs_f64(),
    })
}
