//! One channel's sender: picks the channel's due pending deliveries, coalesces them into
//! requests, waits for the rate limiter, sends, and records each answer in the rows before the
//! next request. Every channel has its own sender task, so a slow or failing webhook delays
//! nobody else.
//!
//! ```text
//!  wake (new rows) / poll_interval / next due ──► due rows (≤ 10) ──► plan (coalesce)
//!        ▲                                                              │
//!        │   record: sent · 429 → pause · 5xx → retry later · 404 → retry, disable once
//!        │           persistent (gone.rs) · other 4xx → failed
//!        └──────── POST ◄── mark maybe_delivered ◄── rate limiter ◄─────┘
//! ```
//!
//! Retries end by time: a row still failing `alert.backoff.deadline` after it was raised (or
//! redelivered) is failed with the reason; the attempts are counted, never a cut-off. While a
//! channel is disabled its rows stay pending and wait; it is looked up again every poll, so
//! `conscope alerts redeliver --channel NAME` (or `conscope watch test`) enables it at once.
//!
//! Just before a request goes out its rows are marked `maybe_delivered`; answers that prove the
//! message was not taken clear it. A row sent while still marked is a possible repeat, counted
//! in `alert_possible_repeats` (see docs/alerting.md for exactly when that happens).
//!
//! An in-flight request is never abandoned on shutdown: its answer (bounded by
//! `alert.request_timeout`) is recorded first, so a 2xx is never forgotten. Recording retries
//! with the Postgres backoff for the same reason.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::AlertError;
use super::gone::GoneStreak;
use super::notifiers::{Notifier, Outcome, Outgoing, Pending};
use super::queue::{self, Disabled, Retry};
use super::ratelimit::RateLimiter;
use crate::backoff::{Backoff, Verdict};
use crate::config::{Config, RateLimit};
use crate::metrics::Metrics;
use crate::store::{self, StoreError};

/// Deliveries picked per round: one full Discord message.
const DUE_BATCH: i64 = 10;

/// What a channel's sender needs.
#[derive(Debug, Clone)]
pub struct SenderContext {
    pub pool: Pool,
    pub cfg: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub notifier: Notifier,
    pub url_fingerprint: String,
    pub limits: Vec<RateLimit>,
    pub wake: Arc<Notify>,
}

/// Run `op` against a pooled connection, retrying with the Postgres backoff.
async fn with_db<T, F, Fut>(ctx: &SenderContext, what: &'static str, op: F) -> Result<T, AlertError>
where
    F: Fn(deadpool_postgres::Object) -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::new(&ctx.cfg.postgres.backoff);
    let attempt = || async {
        let client = store::client(&ctx.pool, &ctx.cfg.postgres).await?;
        op(client).await
    };
    backoff
        .retry(what, Verdict::outage, attempt)
        .await
        .map_err(|source| AlertError::Send {
            channel: ctx.notifier.name.clone(),
            source,
        })
}

/// Wait for new rows, the poll interval or `due_in`, whichever comes first; false on shutdown.
async fn idle(ctx: &SenderContext, cancel: &CancellationToken, due_in: Option<Duration>) -> bool {
    let wait = due_in.map_or(ctx.cfg.alert.poll_interval, |d| {
        d.min(ctx.cfg.alert.poll_interval)
    });
    tokio::select! {
        biased;
        () = cancel.cancelled() => false,
        () = ctx.wake.notified() => true,
        () = tokio::time::sleep(wait) => true,
    }
}

/// Run the channel's sender until `cancel` fires.
pub async fn run(ctx: SenderContext, cancel: CancellationToken) -> Result<(), AlertError> {
    let channel = ctx.notifier.name.clone();
    let mut limiter = RateLimiter::new(&ctx.limits);
    let mut solo: HashSet<String> = HashSet::new();
    let fp = ctx.url_fingerprint.clone();
    let mut disabled: Option<Disabled> = with_db(&ctx, "read notifier_state", |c| {
        let (channel, fp) = (channel.clone(), fp.clone());
        async move { queue::disabled(&**c, &channel, &fp).await }
    })
    .await?;
    match &disabled {
        Some(d) => tracing::error!(
            channel,
            url = ctx.notifier.redacted_url(),
            http_status = d.http_status,
            since = %d.since,
            "notifier stays disabled: its webhook answered {} ({}); its deliveries wait. Set a new \
             alert.notifiers.{channel}.url, or run `conscope alerts redeliver --channel {channel}` once it \
             works again",
            d.http_status,
            d.reason
        ),
        None => tracing::info!(
            channel,
            kind = ctx.notifier.kind.as_str(),
            url = ctx.notifier.redacted_url(),
            "alert sender started"
        ),
    }
    let mut streak = GoneStreak::new(ctx.cfg.alert.gone_to_disable, ctx.cfg.alert.gone_to_disable_over);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        if disabled.is_some() {
            // `conscope alerts redeliver --channel`, `conscope watch test` or a new URL enable
            // it again; meanwhile its rows stay pending.
            let still = with_db(&ctx, "read notifier_state", |c| {
                let (channel, fp) = (channel.clone(), fp.clone());
                async move { queue::disabled(&**c, &channel, &fp).await }
            })
            .await?;
            if still.is_none() {
                tracing::info!(channel, "notifier enabled again; its waiting deliveries go out");
                disabled = None;
                streak.reset();
                continue;
            }
            if !idle(&ctx, &cancel, None).await {
                break;
            }
            continue;
        }
        let due = with_db(&ctx, "read due deliveries", |c| {
            let channel = channel.clone();
            async move { queue::due(&**c, &channel, DUE_BATCH).await }
        })
        .await?;
        if due.is_empty() {
            let next = with_db(&ctx, "read next due delivery", |c| {
                let channel = channel.clone();
                async move { queue::next_due_in(&**c, &channel).await }
            })
            .await?;
            if !idle(&ctx, &cancel, next).await {
                break;
            }
            continue;
        }
        let mut pending = Vec::with_capacity(due.len());
        for row in due {
            match row {
                Ok(p) => pending.push(p),
                Err((id, reason)) => {
                    tracing::error!(channel, alert = id, reason, "delivery failed for good");
                    with_db(&ctx, "fail unreadable delivery", |c| {
                        let (channel, ids, reason) = (channel.clone(), vec![id.clone()], reason.clone());
                        async move { queue::mark_failed(&**c, &channel, &ids, None, &reason).await }
                    })
                    .await?;
                    ctx.metrics.counters.alert_deliveries_failed.inc();
                }
            }
        }
        let by_id: HashMap<&str, &Pending> = pending
            .iter()
            .map(|p| (p.message.alert.alert_id.as_str(), p))
            .collect();
        // Rows an earlier request may have delivered; each counts once as a possible repeat.
        let mut maybe: HashSet<&str> = pending
            .iter()
            .filter(|p| p.maybe_delivered)
            .map(|p| p.message.alert.alert_id.as_str())
            .collect();
        for out in ctx.notifier.plan(&pending, &solo) {
            tokio::select! {
                // Shutdown first: nothing is in flight yet, the rows stay pending for next time.
                biased;
                () = cancel.cancelled() => return Ok(()),
                () = limiter.acquire() => {}
            }
            with_db(&ctx, "mark deliveries in flight", |db| {
                let (channel, ids) = (channel.clone(), out.alert_ids.clone());
                async move { queue::mark_in_flight(&**db, &channel, &ids).await }
            })
            .await?;
            let repeats = out
                .alert_ids
                .iter()
                .filter(|id| maybe.remove(id.as_str()))
                .count();
            if repeats > 0 {
                ctx.metrics.counters.alert_possible_repeats.inc_by(repeats as u64);
                tracing::debug!(
                    channel,
                    alerts = repeats,
                    "sending again alerts an earlier request may have delivered (possible repeat)"
                );
            }
            let reply = ctx.notifier.send(&out).await;
            if let Some(pause) = reply.hint.pause() {
                limiter.block_for(pause);
            }
            let mut round = Round {
                limiter: &mut limiter,
                solo: &mut solo,
                disabled: &mut disabled,
                streak: &mut streak,
            };
            if record(&ctx, &out, &by_id, reply.outcome, &mut round).await? {
                break;
            }
        }
    }
    tracing::info!(channel, "alert sender stopped");
    Ok(())
}

/// What one answer may change in the sender's own state.
struct Round<'a> {
    limiter: &'a mut RateLimiter,
    solo: &'a mut HashSet<String>,
    disabled: &'a mut Option<Disabled>,
    streak: &'a mut GoneStreak,
}

/// Per row of `ids`, retry after its backoff or give up past the deadline; record that, and
/// pause the channel until the earliest retry. Returns how many rows gave up.
async fn retry_later(
    ctx: &SenderContext,
    ids: &[String],
    by_id: &HashMap<&str, &Pending>,
    status: Option<u16>,
    error: &str,
    maybe_delivered: bool,
    limiter: &mut RateLimiter,
) -> Result<u64, AlertError> {
    let channel = ctx.notifier.name.as_str();
    let c = &ctx.metrics.counters;
    let now = chrono::Utc::now();
    let steps: Vec<(String, Retry)> = ids
        .iter()
        .filter_map(|id| by_id.get(id.as_str()).map(|p| (id, p)))
        .map(|(id, p)| {
            let step = queue::next_step(
                p.attempts.saturating_add(1),
                p.retry_from,
                now,
                &ctx.cfg.alert.backoff,
            );
            (id.clone(), step)
        })
        .collect();
    let gave_up = with_db(ctx, "record failed attempt", |db| {
        let (steps, error) = (steps.clone(), error.to_string());
        async move { queue::mark_retry(&**db, channel, &steps, status, &error, maybe_delivered).await }
    })
    .await?;
    let retried = steps.len() as u64 - gave_up;
    c.alert_delivery_retries.inc_by(retried);
    c.alert_deliveries_failed.inc_by(gave_up);
    if gave_up > 0 {
        tracing::error!(
            channel,
            alerts = gave_up,
            error,
            "deliveries failed for good: still failing at alert.backoff.deadline"
        );
    }
    let pause = steps
        .iter()
        .filter_map(|(_, s)| match s {
            Retry::After(d) => Some(*d),
            Retry::GiveUp(_) => None,
        })
        .min();
    if let Some(pause) = pause {
        // The whole channel waits: the next request would most likely fail the same way.
        limiter.block_for(pause);
        tracing::warn!(channel, alerts = retried, error, retry_in = ?pause, "delivery failed; will retry");
    }
    Ok(gave_up)
}

/// Record one answer in the rows it covers; true when the round should stop (the channel must
/// wait, or is disabled).
async fn record(
    ctx: &SenderContext,
    out: &Outgoing,
    by_id: &HashMap<&str, &Pending>,
    outcome: Outcome,
    round: &mut Round<'_>,
) -> Result<bool, AlertError> {
    let channel = ctx.notifier.name.as_str();
    let ids = out.alert_ids.clone();
    let c = &ctx.metrics.counters;
    let error = outcome.describe();
    match outcome {
        Outcome::Sent { status } => {
            let n = with_db(ctx, "mark sent", |db| {
                let ids = ids.clone();
                async move { queue::mark_sent(&**db, channel, &ids, status).await }
            })
            .await?;
            c.alert_deliveries_sent.inc_by(n);
            for id in &ids {
                round.solo.remove(id);
            }
            round.streak.reset();
            tracing::debug!(channel, alerts = ids.len(), status, "delivered");
            Ok(false)
        }
        Outcome::RateLimited { status, retry_after } => {
            c.alert_rate_limited.inc();
            c.alert_retry_after_ms
                .inc_by(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX));
            round.limiter.block_for(retry_after);
            tracing::debug!(channel, ?retry_after, "rate limited (429); waiting");
            with_db(ctx, "mark rate limited", |db| {
                let (ids, error) = (ids.clone(), error.clone());
                async move { queue::mark_rate_limited(&**db, channel, &ids, status, retry_after, &error).await }
            })
            .await?;
            Ok(true)
        }
        Outcome::Retry {
            status,
            maybe_delivered,
            ..
        } => {
            retry_later(ctx, &ids, by_id, status, &error, maybe_delivered, round.limiter).await?;
            Ok(true)
        }
        Outcome::Gone { status, .. } if !round.streak.gone() => {
            // Not yet persistent: retried like a 5xx (the message was not taken).
            tracing::warn!(
                channel,
                status,
                answers = round.streak.count(),
                "webhook answered {status}; retrying, the channel is disabled only if this persists"
            );
            retry_later(ctx, &ids, by_id, Some(status), &error, false, round.limiter).await?;
            Ok(true)
        }
        Outcome::Gone { status, .. } => {
            let cfg = &ctx.cfg.alert;
            tracing::error!(
                channel,
                url = ctx.notifier.redacted_url(),
                status,
                answers = round.streak.count(),
                "notifier disabled: its webhook kept answering {status} for {} (deleted, or a wrong URL); \
                 its deliveries wait. Set a new alert.notifiers.{channel}.url, or run \
                 `conscope alerts redeliver --channel {channel}` once it works again",
                humantime::format_duration(cfg.gone_to_disable_over)
            );
            with_db(ctx, "disable notifier", |db| {
                let (fp, ids, error) = (ctx.url_fingerprint.clone(), ids.clone(), error.clone());
                async move {
                    queue::disable(&**db, channel, &fp, status, &error).await?;
                    queue::count_attempt(&**db, channel, &ids, status, &error).await
                }
            })
            .await?;
            *round.disabled = Some(Disabled {
                http_status: i32::from(status),
                reason: error,
                since: chrono::Utc::now(),
            });
            Ok(true)
        }
        Outcome::Rejected { status, .. } if ids.len() > 1 => {
            // One alert may have sunk the whole message: retry each on its own.
            tracing::warn!(
                channel,
                alerts = ids.len(),
                status,
                error,
                "coalesced message refused; sending its alerts one by one"
            );
            with_db(ctx, "count refused attempt", |db| {
                let (ids, error) = (ids.clone(), error.clone());
                async move { queue::count_attempt(&**db, channel, &ids, status, &error).await }
            })
            .await?;
            round.solo.extend(ids);
            Ok(false)
        }
        Outcome::Rejected { status, .. } => {
            tracing::error!(
                channel,
                alert = ids.first().map(String::as_str),
                status,
                error,
                "delivery refused; not retried"
            );
            let n = with_db(ctx, "mark failed", |db| {
                let (ids, error) = (ids.clone(), error.clone());
                async move { queue::mark_failed(&**db, channel, &ids, Some(status), &error).await }
            })
            .await?;
            c.alert_deliveries_failed.inc_by(n);
            for id in &ids {
                round.solo.remove(id);
            }
            Ok(false)
        }
    }
}
