//! The delivery queue in Postgres: `alert_deliveries` rows (one per alert and channel, written
//! before anything is sent), picking a channel's due rows, recording each answer, and
//! `notifier_state` (channels disabled by a persistent 404). A disabled channel's rows stay
//! `pending`: they wait for it to be enabled again. (`disabled` rows exist only from older
//! versions; `conscope alerts redeliver` puts them back to pending.)
//!
//! Every update of a row after a send is guarded by `status = 'pending'`, so a row once sent,
//! failed or disabled never changes again, and is never picked again.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::{GenericClient, Transaction};

use super::AlertMessage;
use super::notifiers::Pending;
use crate::backoff::Backoff;
use crate::config::BackoffConfig;
use crate::store::StoreError;

/// Record deliveries of the default rule's alerts to `channels`. Alerts missing from
/// `price_alerts` (which the engine writes before it publishes) are returned, not delivered.
pub async fn insert_default(
    tx: &Transaction<'_>,
    alert_ids: &[String],
    channels: &[String],
) -> Result<Vec<String>, StoreError> {
    if alert_ids.is_empty() || channels.is_empty() {
        return Ok(Vec::new());
    }
    let rows = tx
        .query(
            "SELECT id FROM UNNEST($1::text[]) AS t (id)
              WHERE NOT EXISTS (SELECT 1 FROM price_alerts a WHERE a.alert_id = t.id)",
            &[&alert_ids],
        )
        .await
        .map_err(StoreError::query("check price_alerts"))?;
    let missing: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    tx.execute(
        "INSERT INTO alert_deliveries (alert_id, channel)
         SELECT a.alert_id, c FROM price_alerts a, UNNEST($2::text[]) AS c
          WHERE a.alert_id = ANY($1)
         ON CONFLICT (alert_id, channel) DO NOTHING",
        &[&alert_ids, &channels],
    )
    .await
    .map_err(StoreError::query("insert alert_deliveries"))?;
    Ok(missing)
}

/// Record one delivery of a watch's alert. `failed` marks it failed at once with that reason
/// (a channel that is not configured).
pub async fn insert_watch(
    tx: &Transaction<'_>,
    alert_id: &str,
    channel: &str,
    watch_id: i64,
    failed: Option<&str>,
) -> Result<(), StoreError> {
    let status = if failed.is_some() { "failed" } else { "pending" };
    tx.execute(
        "INSERT INTO alert_deliveries (alert_id, channel, watch_id, status, last_error)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (alert_id, channel) DO NOTHING",
        &[&alert_id, &channel, &watch_id, &status, &failed],
    )
    .await
    .map_err(StoreError::query("insert alert_deliveries"))?;
    Ok(())
}

/// Longest delay written to `next_attempt_at` (far beyond any sensible backoff; keeps the
/// interval arithmetic in Postgres in range whatever the configuration says).
const MAX_DELAY: Duration = Duration::from_secs(366 * 86_400);

fn delay_secs(d: Duration) -> f64 {
    d.min(MAX_DELAY).as_secs_f64()
}

/// The channel's pending deliveries that are due, oldest first. Rows whose stored alert cannot
/// be read come back as `Err((alert_id, reason))` so the caller fails them.
pub async fn due(
    client: &impl GenericClient,
    channel: &str,
    limit: i64,
) -> Result<Vec<Result<Pending, (String, String)>>, StoreError> {
    let rows = client
        .query(
            "SELECT d.alert_id, a.payload, d.attempts, COALESCE(d.retry_from, d.created_at),
                    d.maybe_delivered
               FROM alert_deliveries d JOIN price_alerts a USING (alert_id)
              WHERE d.channel = $1 AND d.status = 'pending' AND d.next_attempt_at <= now()
              ORDER BY d.next_attempt_at, d.created_at, d.alert_id
              LIMIT $2",
            &[&channel, &limit],
        )
        .await
        .map_err(StoreError::query("read due deliveries"))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let id: String = r.get(0);
            let payload: serde_json::Value = r.get(1);
            match serde_json::from_value::<AlertMessage>(payload) {
                Ok(message) => Ok(Pending {
                    message,
                    attempts: r.get(2),
                    retry_from: r.get(3),
                    maybe_delivered: r.get(4),
                }),
                Err(e) => Err((id, format!("the stored alert cannot be read: {e}"))),
            }
        })
        .collect())
}

/// How long until the channel's next pending delivery is due (`None`: nothing pending).
pub async fn next_due_in(client: &impl GenericClient, channel: &str) -> Result<Option<Duration>, StoreError> {
    let row = client
        .query_one(
            "SELECT EXTRACT(EPOCH FROM (min(next_attempt_at) - now()))::float8
               FROM alert_deliveries WHERE channel = $1 AND status = 'pending'",
            &[&channel],
        )
        .await
        .map_err(StoreError::query("read next due delivery"))?;
    Ok(row
        .get::<_, Option<f64>>(0)
        .map(|s| Duration::try_from_secs_f64(s.clamp(0.0, 86_400.0)).unwrap_or_default()))
}

/// The rows are about to be sent: until an answer says otherwise, each may reach the notifier.
pub async fn mark_in_flight(
    client: &impl GenericClient,
    channel: &str,
    ids: &[String],
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE alert_deliveries SET maybe_delivered = true, updated_at = now()
              WHERE channel = $1 AND alert_id = ANY($2) AND status = 'pending'",
            &[&channel, &ids],
        )
        .await
        .map_err(StoreError::query("mark deliveries in flight"))?;
    Ok(())
}

/// A 2xx: the rows are sent.
pub async fn mark_sent(
    client: &impl GenericClient,
    channel: &str,
    ids: &[String],
    status: u16,
) -> Result<u64, StoreError> {
    client
        .execute(
            "UPDATE alert_deliveries SET status = 'sent', attempts = attempts + 1, http_status = $3,
                    last_error = NULL, sent_at = now(), maybe_delivered = false, updated_at = now()
              WHERE channel = $1 AND alert_id = ANY($2) AND status = 'pending'",
            &[&channel, &ids, &i32::from(status)],
        )
        .await
        .map_err(StoreError::query("mark deliveries sent"))
}

/// A 429: try again after `retry_after`; this is not counted as a failed attempt.
pub async fn mark_rate_limited(
    client: &impl GenericClient,
    channel: &str,
    ids: &[String],
    status: u16,
    retry_after: Duration,
    error: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE alert_deliveries SET http_status = $3, last_error = $4, maybe_delivered = false,
                    next_attempt_at = now() + make_interval(secs => $5), updated_at = now()
              WHERE channel = $1 AND alert_id = ANY($2) AND status = 'pending'",
            &[
                &channel,
                &ids,
                &i32::from(status),
                &error,
                &delay_secs(retry_after),
            ],
        )
        .await
        .map_err(StoreError::query("mark deliveries rate limited"))?;
    Ok(())
}

/// The next step for a row after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Retry {
    After(Duration),
    GiveUp(String),
}

/// Decide a row's next step after its attempt number `attempts` (counting this one) failed,
/// its retry budget having started at `since`. Only the deadline ends retrying: a row is given
/// up once the next try would come later than `backoff.deadline` after `since`. The count of
/// attempts only grows the delay and is reported.
pub fn next_step(attempts: i32, since: DateTime<Utc>, now: DateTime<Utc>, backoff: &BackoffConfig) -> Retry {
    let attempt = u32::try_from(attempts.max(1)).unwrap_or(1);
    let delay = Backoff::delay_for_attempt(backoff, attempt).min(MAX_DELAY);
    // A `since` in the future (a clock step back) counts as now; extreme values cannot overflow.
    let age = now.signed_duration_since(since).to_std().unwrap_or_default();
    let past_deadline = age
        .checked_add(delay)
        .is_none_or(|next_try| next_try > backoff.deadline);
    if past_deadline {
        return Retry::GiveUp(format!(
            "gave up after {attempts} attempts: still failing {} after it was raised \
             (alert.backoff.deadline {})",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(backoff.deadline)
        ));
    }
    Retry::After(delay)
}

/// A failed attempt that may be retried (5xx, network, a 404 not yet persistent): per row,
/// retry later or give up. `maybe_delivered`: the notifier may have taken the message (a 5xx or
/// no answer after sending), so the retry is a possible repeat. Returns how many rows gave up.
pub async fn mark_retry(
    client: &impl GenericClient,
    channel: &str,
    rows: &[(String, Retry)],
    status: Option<u16>,
    error: &str,
    maybe_delivered: bool,
) -> Result<u64, StoreError> {
    let ids: Vec<&str> = rows.iter().map(|(id, _)| id.as_str()).collect();
    let delays: Vec<f64> = rows
        .iter()
        .map(|(_, r)| match r {
            Retry::After(d) => delay_secs(*d),
            Retry::GiveUp(_) => 0.0,
        })
        .collect();
    let failed: Vec<Option<String>> = rows
        .iter()
        .map(|(_, r)| match r {
            Retry::After(_) => None,
            Retry::GiveUp(why) => Some(why.clone()),
        })
        .collect();
    let status = status.map(i32::from);
    client
        .execute(
            "UPDATE alert_deliveries d
                SET attempts = d.attempts + 1, http_status = $3,
                    status = CASE WHEN t.why IS NULL THEN 'pending' ELSE 'failed' END,
                    last_error = CASE WHEN t.why IS NULL THEN $4 ELSE t.why || ': ' || $4 END,
                    next_attempt_at = now() + make_interval(secs => t.delay),
                    maybe_delivered = $7, updated_at = now()
               FROM UNNEST($2::text[], $5::float8[], $6::text[]) AS t (id, delay, why)
              WHERE d.channel = $1 AND d.alert_id = t.id AND d.status = 'pending'",
            &[
                &channel,
                &ids,
                &status,
                &error,
                &delays,
                &failed,
                &maybe_delivered,
            ],
        )
        .await
        .map_err(StoreError::query("record failed attempts"))?;
    Ok(failed.iter().filter(|f| f.is_some()).count() as u64)
}

/// A refusal that retrying cannot fix (other 4xx, unreadable alert): the rows failed.
pub async fn mark_failed(
    client: &impl GenericClient,
    channel: &str,
    ids: &[String],
    status: Option<u16>,
    error: &str,
) -> Result<u64, StoreError> {
    client
        .execute(
            "UPDATE alert_deliveries SET status = 'failed', attempts = attempts + 1, http_status = $3,
                    last_error = $4, maybe_delivered = false, updated_at = now()
              WHERE channel = $1 AND alert_id = ANY($2) AND status = 'pending'",
            &[&channel, &ids, &status.map(i32::from), &error],
        )
        .await
        .map_err(StoreError::query("mark deliveries failed"))
}

/// Count one attempt of rows that will be retried at once, one by one (a coalesced request
/// that was refused), or that wait for their disabled channel (a 404 that disabled it).
pub async fn count_attempt(
    client: &impl GenericClient,
    channel: &str,
    ids: &[String],
    status: u16,
    error: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE alert_deliveries SET attempts = attempts + 1, http_status = $3, last_error = $4,
                    maybe_delivered = false, updated_at = now()
              WHERE channel = $1 AND alert_id = ANY($2) AND status = 'pending'",
            &[&channel, &ids, &i32::from(status), &error],
        )
        .await
        .map_err(StoreError::query("count delivery attempt"))?;
    Ok(())
}

/// Why a channel is disabled, if it is (and its URL is still the one that was refused).
#[derive(Debug, Clone, PartialEq)]
pub struct Disabled {
    pub http_status: i32,
    pub reason: String,
    pub since: DateTime<Utc>,
}

/// A hash naming a URL without showing it.
pub fn fingerprint(url: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(url.as_bytes())[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub async fn disabled(
    client: &impl GenericClient,
    channel: &str,
    url_fingerprint: &str,
) -> Result<Option<Disabled>, StoreError> {
    let row = client
        .query_opt(
            "SELECT http_status, reason, disabled_at FROM notifier_state
              WHERE channel = $1 AND url_fingerprint = $2",
            &[&channel, &url_fingerprint],
        )
        .await
        .map_err(StoreError::query("read notifier_state"))?;
    Ok(row.map(|r| Disabled {
        http_status: r.get(0),
        reason: r.get(1),
        since: r.get(2),
    }))
}

pub async fn disable(
    client: &impl GenericClient,
    channel: &str,
    url_fingerprint: &str,
    status: u16,
    reason: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO notifier_state (channel, url_fingerprint, http_status, reason)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (channel) DO UPDATE
                SET url_fingerprint = EXCLUDED.url_fingerprint, http_status = EXCLUDED.http_status,
                    reason = EXCLUDED.reason, disabled_at = now()",
            &[&channel, &url_fingerprint, &i32::from(status), &reason],
        )
        .await
        .map_err(StoreError::query("disable notifier"))?;
    Ok(())
}

/// Enable a channel again (`alerts redeliver`, or a successful `watch test`). Returns whether it was disabled.
pub async fn enable(client: &impl GenericClient, channel: &str) -> Result<bool, StoreError> {
    let n = client
        .execute("DELETE FROM notifier_state WHERE channel = $1", &[&channel])
        .await
        .map_err(StoreError::query("enable notifier"))?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.0,
            deadline: Duration::from_secs(3600),
        }
    }

    #[test]
    fn many_failed_attempts_keep_retrying_while_the_deadline_allows() {
        let now = Utc::now();
        let raised = now - chrono::Duration::minutes(3);
        assert_eq!(
            next_step(1, now, now, &backoff()),
            Retry::After(Duration::from_secs(1))
        );
        assert_eq!(
            next_step(2, now, now, &backoff()),
            Retry::After(Duration::from_secs(2))
        );
        // Far more than eight attempts in, an hour's deadline still retries at the cap.
        assert_eq!(
            next_step(40, raised, now, &backoff()),
            Retry::After(Duration::from_secs(60))
        );
    }

    #[test]
    fn a_delivery_past_the_deadline_is_given_up_with_the_reason() {
        let now = Utc::now();
        let raised = now - chrono::Duration::minutes(59) - chrono::Duration::seconds(30);
        let Retry::GiveUp(why) = next_step(12, raised, now, &backoff()) else {
            panic!("retried past the deadline");
        };
        assert!(why.contains("12 attempts") && why.contains("59m 30s"), "{why}");
        assert!(why.contains("alert.backoff.deadline 1h"), "{why}");
    }

    #[test]
    fn extreme_times_and_budgets_never_panic() {
        // The largest policy config validation lets through is far smaller than this.
        let century = Duration::from_secs(100 * 366 * 86_400);
        let huge = BackoffConfig {
            initial: century,
            max: century,
            multiplier: f64::MAX,
            jitter: 0.0,
            deadline: Duration::MAX,
        };
        for (since, now) in [
            (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC),
            (DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC),
            (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MIN_UTC),
        ] {
            for attempts in [i32::MIN, -1, 0, 1, i32::MAX] {
                let _ = next_step(attempts, since, now, &backoff());
                if let Retry::After(d) = next_step(attempts, since, now, &huge) {
                    assert!(d <= MAX_DELAY);
                }
            }
        }
        assert!(delay_secs(Duration::MAX) <= MAX_DELAY.as_secs_f64());
    }

    #[test]
    fn fingerprints_name_urls_without_showing_them() {
        let f = fingerprint("https://discord.com/api/webhooks/1/secret");
        assert_eq!(f.len(), 24);
        assert!(!f.contains("secret"));
        assert_ne!(f, fingerprint("https://discord.com/api/webhooks/1/other"));
    }
}
