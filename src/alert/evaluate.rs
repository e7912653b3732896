//! The evaluator: each fetched alert-topic batch becomes ONE Postgres transaction holding what
//! it decided and the alert consumer's offset, so a crash replays exactly the uncommitted
//! batches and replaying decides the same (ids are deterministic, rows dedupe on them).
//!
//! - `price_alerts` records (the default rule): one `alert_deliveries` row per
//!   `alert.default_channels`. Alerts a watch raised (`watch:<id>`) are skipped here: they are
//!   already delivered to their watch's channel.
//! - `processed_prices` records: every matching watch is evaluated ([`rules`], [`rearm`]); when
//!   it notifies, a `price_alerts` row with rule `watch:<id>` (id from watch, listing and
//!   source record) and one `alert_deliveries` row for the watch's channel. A record that is
//!   `out_of_order` (older than its listing's last observation) is skipped.
//!
//! After the commit, the channels that got rows are woken.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use rust_decimal::Decimal;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::Transaction;

use super::consumer::{Fetched, Source};
use super::rearm::{self, Decision};
use super::rules::{self, Needs, Observation};
use super::watch::{self, Watch, WatchSet};
use super::{ALERT_CONSUMER, AlertError, AlertMessage, WATCH_RULE_PREFIX, queue};
use crate::backoff::{Backoff, Verdict};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::money::{Cents, cents_of, change_percent, dollars};
use crate::model::{Alert, ChangeKind, ProcessedPrice, alert_id};
use crate::store::offsets::store_offsets;
use crate::store::{self, StoreError};

/// Decoded records of one batch.
enum Decoded {
    Alerts(Vec<Alert>),
    Prices(Vec<ProcessedPrice>),
}

#[derive(Debug)]
pub struct Evaluator {
    pool: Pool,
    cfg: Arc<Config>,
    metrics: Arc<Metrics>,
    watches: WatchSet,
    loaded_at: Option<Instant>,
    wake: HashMap<String, Arc<Notify>>,
    /// Channels a watch names that are not configured, warned about once each.
    warned: HashSet<String>,
}

impl Evaluator {
    pub fn new(
        pool: Pool,
        cfg: Arc<Config>,
        metrics: Arc<Metrics>,
        wake: HashMap<String, Arc<Notify>>,
    ) -> Self {
        Self {
            pool,
            cfg,
            metrics,
            watches: WatchSet::default(),
            loaded_at: None,
            wake,
            warned: HashSet::new(),
        }
    }

    async fn refresh_watches(&mut self) -> Result<(), StoreError> {
        if self
            .loaded_at
            .is_some_and(|t| t.elapsed() < self.cfg.alert.watch_refresh)
        {
            return Ok(());
        }
        let client = store::client(&self.pool, &self.cfg.postgres).await?;
        let watches = watch::load_active(&**client).await?;
        if watches.len() != self.watches.len() {
            tracing::info!(watches = watches.len(), "active watches loaded");
        }
        for w in &watches {
            if !self.cfg.alert.notifiers.contains_key(&w.channel) && self.warned.insert(w.channel.clone()) {
                tracing::warn!(
                    watch = w.id,
                    channel = w.channel,
                    "watch names a channel that is not in [alert.notifiers]; its alerts are recorded as failed"
                );
            }
        }
        self.watches = WatchSet::new(watches);
        self.loaded_at = Some(Instant::now());
        Ok(())
    }

    fn decode(&self, batch: &Fetched) -> Decoded {
        let mut bad = 0;
        let decoded = match batch.source {
            Source::Alerts => Decoded::Alerts(
                batch
                    .records
                    .iter()
                    .filter_map(|(_, v)| serde_json::from_slice::<Alert>(v).map_err(|_| bad += 1).ok())
                    .filter(|a| !a.rule.starts_with(WATCH_RULE_PREFIX))
                    .collect(),
            ),
            Source::Processed => Decoded::Prices(
                batch
                    .records
                    .iter()
                    .filter_map(|(_, v)| serde_json::from_slice(v).map_err(|_| bad += 1).ok())
                    .collect(),
            ),
        };
        if bad > 0 {
            tracing::warn!(
                topic = batch.topic,
                partition = batch.partition,
                records = bad,
                "alert-topic records that do not parse were skipped"
            );
        }
        decoded
    }

    /// Evaluate one batch and commit it, retrying with the Postgres backoff.
    pub async fn process(&mut self, batch: Fetched) -> Result<(), AlertError> {
        let failed = |source| AlertError::Evaluate {
            topic: batch.topic.clone(),
            partition: batch.partition,
            next_offset: batch.next_offset,
            source,
        };
        let mut backoff = Backoff::new(&self.cfg.postgres.backoff);
        let decoded = self.decode(&batch);
        let woken = loop {
            let attempt = async {
                if matches!(decoded, Decoded::Prices(_)) {
                    self.refresh_watches().await?;
                }
                self.write(&batch, &decoded).await
            }
            .await;
            match attempt {
                Ok(w) => {
                    backoff.succeeded("alert batch write");
                    break w;
                }
                Err(e) => {
                    if !backoff.wait_after("alert batch write", Verdict::Outage, &e).await {
                        return Err(failed(e));
                    }
                }
            }
        };
        self.metrics
            .counters
            .alert_records
            .inc_by(batch.records.len() as u64);
        for channel in woken {
            if let Some(n) = self.wake.get(&channel) {
                n.notify_one();
            }
        }
        Ok(())
    }

    async fn write(&self, batch: &Fetched, decoded: &Decoded) -> Result<BTreeSet<String>, StoreError> {
        let mut client = store::client(&self.pool, &self.cfg.postgres).await?;
        let tx = client.transaction().await.map_err(StoreError::query("begin"))?;
        let mut woken = BTreeSet::new();
        let mut fired = 0;
        match decoded {
            Decoded::Alerts(alerts) => {
                let channels = &self.cfg.alert.default_channels;
                let ids: Vec<String> = alerts.iter().map(|a| a.alert_id.clone()).collect();
                let missing = queue::insert_default(&tx, &ids, channels).await?;
                if !missing.is_empty() {
                    tracing::warn!(
                        alerts = missing.len(),
                        first = missing[0],
                        "alerts on the topic are not in price_alerts; not delivered"
                    );
                }
                if ids.len() > missing.len() {
                    woken.extend(channels.iter().cloned());
                }
            }
            Decoded::Prices(prices) => {
                // An observation older than its listing's last one is history, not the current
                // price: it moves no watch's state and raises nothing.
                for p in prices.iter().filter(|p| p.change_kind != ChangeKind::OutOfOrder) {
                    for w in self.watches.matching(&p.event) {
                        if self.evaluate(&tx, w, p).await? {
                            woken.insert(w.channel.clone());
                            fired += 1;
                        }
                    }
                }
            }
        }
        let offsets = BTreeMap::from([(batch.partition, batch.next_offset)]);
        store_offsets(&tx, ALERT_CONSUMER, &batch.topic, &offsets).await?;
        tx.commit().await.map_err(StoreError::query("commit"))?;
        self.metrics.counters.alert_watch_fired.inc_by(fired);
        Ok(woken)
    }

    /// Evaluate one watch on one price; true when it notified.
    async fn evaluate(
        &self,
        tx: &Transaction<'_>,
        w: &Watch,
        p: &ProcessedPrice,
    ) -> Result<bool, StoreError> {
        let floor = Cents::from_dollars(self.cfg.alert.noise_floor)
            .map_or(1, |c| c.0)
            .max(1);
        let source = (p.source_partition, p.source_offset);
        let state = rearm::load(tx, w.id, &p.listing_key).await?;
        if rearm::is_replay(state.as_ref(), source.0, source.1) {
            return Ok(false);
        }
        let baseline = baseline(tx, w.trigger.needs(), p).await?;
        let obs = Observation {
            price: p.event.price,
            previous: p.previous_price,
            baseline,
        };
        let hit = rules::condition(&w.trigger, &obs, floor);
        let at = p.event.timestamp;
        let cooldown = chrono::Duration::seconds(i64::from(w.cooldown_seconds));
        let (decision, next) = rearm::decide(
            state.as_ref(),
            hit.is_some(),
            w.notify_on_first_sight,
            cooldown,
            floor,
            p.event.price,
            at,
            source,
        );
        rearm::store(tx, w.id, &p.listing_key, &next).await?;
        let (Decision::Notify, Some(hit)) = (decision, hit) else {
            tracing::debug!(
                watch = w.id,
                listing = %p.listing_key,
                ?decision,
                "watch evaluated"
            );
            return Ok(false);
        };
        let message = watch_alert(w, p, hit.reference);
        insert_alert(tx, &message).await?;
        let missing = (!self.cfg.alert.notifiers.contains_key(&w.channel))
            .then(|| format!("channel `{}` is not configured in [alert.notifiers]", w.channel));
        queue::insert_watch(tx, &message.alert.alert_id, &w.channel, w.id, missing.as_deref()).await?;
        tx.execute(
            "UPDATE watches SET last_triggered = GREATEST(last_triggered, $2) WHERE id = $1",
            &[&w.id, &at],
        )
        .await
        .map_err(StoreError::query("update watches.last_triggered"))?;
        tracing::debug!(
            watch = w.id,
            listing = %p.listing_key,
            alert = message.alert.alert_id,
            "watch fired"
        );
        Ok(missing.is_none())
    }
}

/// The alert a watch raises for `p`, compared against `reference`.
pub fn watch_alert(w: &Watch, p: &ProcessedPrice, reference: i64) -> AlertMessage {
    let rule = w.rule();
    let drop = reference.saturating_sub(p.event.price);
    AlertMessage {
        alert: Alert {
            alert_id: alert_id(&p.listing_key, p.source_partition, p.source_offset, &rule),
            alert_type: compact_str::format_compact!("watch_{}", w.trigger.as_str()),
            rule: rule.into(),
            listing_key: p.listing_key.as_str().into(),
            event: std::sync::Arc::new(p.event.clone()),
            old_price: reference,
            new_price: p.event.price,
            drop_amount: drop,
            drop_percent: if reference > 0 {
                change_percent(drop, reference)
            } else {
                0.0
            },
            alert_timestamp: p.event.timestamp,
            source_partition: p.source_partition,
            source_offset: p.source_offset,
        },
        rule_description: Some(w.describe()),
    }
}

/// The lowest earlier price a trigger compares with. "Earlier" is the records of the listing's
/// partition before this one (a listing lives on one partition), plus, for the event, records
/// of other partitions observed no later than this one.
async fn baseline(tx: &Transaction<'_>, needs: Needs, p: &ProcessedPrice) -> Result<Option<i64>, StoreError> {
    let (sp, so) = (p.source_partition, p.source_offset);
    let row = match needs {
        Needs::Nothing => return Ok(None),
        Needs::ListingLow => tx
            .query_one(
                "SELECT min(price) FROM price_history
                  WHERE listing_key = $1 AND NOT (kafka_partition = $2 AND kafka_offset >= $3)",
                &[&p.listing_key.as_str(), &sp, &so],
            )
            .await
            .map_err(StoreError::query("read listing low"))?,
        Needs::ListingLowSince { days } => {
            // Checked, and never before 1970 (no history is older; Postgres refuses chrono's
            // earliest dates): a lookback reaching further means all of the history.
            let since: DateTime<Utc> = p
                .event
                .timestamp
                .checked_sub_signed(chrono::Duration::days(i64::from(days)))
                .map_or(DateTime::UNIX_EPOCH, |t| t.max(DateTime::UNIX_EPOCH));
            tx.query_one(
                "SELECT min(price) FROM price_history
                  WHERE listing_key = $1 AND \"timestamp\" >= $4
                    AND NOT (kafka_partition = $2 AND kafka_offset >= $3)",
                &[&p.listing_key.as_str(), &sp, &so, &since],
            )
            .await
            .map_err(StoreError::query("read listing low since"))?
        }
        Needs::EventLow => tx
            .query_one(
                "SELECT min(price) FROM price_history
                  WHERE event_id = $1 AND \"timestamp\" <= $4
                    AND NOT (kafka_partition = $2 AND kafka_offset >= $3)",
                &[&p.event.event_id(), &sp, &so, &p.event.timestamp],
            )
            .await
            .map_err(StoreError::query("read event low"))?,
    };
    Ok(row.get::<_, Option<Decimal>>(0).map(cents_of))
}

async fn insert_alert(tx: &Transaction<'_>, m: &AlertMessage) -> Result<(), StoreError> {
    let a = &m.alert;
    let payload = serde_json::to_value(m).unwrap_or(serde_json::Value::Null);
    tx.execute(
        "INSERT INTO price_alerts (alert_id, event_id, alert_type, rule, alert_timestamp, listing_key,
             old_price, new_price, drop_amount, drop_percent, section, \"row\", seat, source,
             listing_id, listing_url, kafka_partition, kafka_offset, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)
         ON CONFLICT (alert_id) DO NOTHING",
        &[
            &a.alert_id,
            &a.event.event_id(),
            &a.alert_type.as_str(),
            &a.rule.as_str(),
            &a.alert_timestamp,
            &a.listing_key.as_str(),
            &dollars(a.old_price),
            &dollars(a.new_price),
            &dollars(a.drop_amount),
            &a.drop_percent,
            &a.event.section(),
            &a.event.row(),
            &a.event.seat(),
            &a.event.source(),
            &a.event.listing_id(),
            &a.event.listing_url(),
            &a.source_partition,
            &a.source_offset,
            &payload,
        ],
    )
    .await
    .map_err(StoreError::query("insert watch alert"))?;
    Ok(())
}

/// Run until every reader is gone (shutdown): each batch is committed before the next.
pub async fn run(mut evaluator: Evaluator, mut rx: mpsc::Receiver<Fetched>) -> Result<(), AlertError> {
    while let Some(batch) = rx.recv().await {
        evaluator.process(batch).await?;
    }
    tracing::info!("alert evaluation drained and stopped");
    Ok(())
}
