//! Re-arm state: what a watch remembers of each listing it has seen, the decision whether a
//! condition that holds notifies, and reading/writing that memory (`watch_state`).
//!
//! - **First sighting** (the watch has never seen the listing): the condition notifies only if
//!   the watch's `notify_on_first_sight` says so. Skipped, it counts as if notified at that
//!   price, so the watch speaks again once the price falls below it or the cooldown passes.
//! - **Re-arm:** after notifying, the same watch and listing stay quiet until the price falls
//!   below the last notified price by at least the noise floor, or `cooldown` has passed since
//!   (event time, so a replay decides as the first run did).
//! - **Replays:** a record at or before the last one evaluated for the listing (a republished
//!   duplicate) is not evaluated again.

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;

use crate::model::money::{cents_of, dollars};
use crate::store::StoreError;

/// What a watch remembers of one listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchState {
    pub last_price: i64,
    pub last_source: (i32, i64),
    pub notified_price: Option<i64>,
    pub notified_at: Option<DateTime<Utc>>,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The condition does not hold.
    Quiet,
    /// It holds and the watch is armed: send.
    Notify,
    /// It holds on a first sighting and the watch says not to notify those.
    FirstSightSkipped,
    /// It holds but the watch notified recently and the price is not lower.
    Suppressed,
}

/// Has this record (partition, offset) already been evaluated for the listing?
pub fn is_replay(state: Option<&WatchState>, partition: i32, offset: i64) -> bool {
    state.is_some_and(|s| s.last_source.0 == partition && offset <= s.last_source.1)
}

/// Decide, and return the state to store.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    state: Option<&WatchState>,
    holds: bool,
    notify_on_first_sight: bool,
    cooldown: chrono::Duration,
    floor: i64,
    price: i64,
    at: DateTime<Utc>,
    source: (i32, i64),
) -> (Decision, WatchState) {
    let mut next = WatchState {
        last_price: price,
        last_source: source,
        notified_price: state.and_then(|s| s.notified_price),
        notified_at: state.and_then(|s| s.notified_at),
    };
    let decision = match state {
        _ if !holds => Decision::Quiet,
        None if notify_on_first_sight => Decision::Notify,
        None => Decision::FirstSightSkipped,
        Some(s) => match (s.notified_price, s.notified_at) {
            (Some(notified), Some(when)) => {
                let lower = price <= notified.saturating_sub(floor);
                // Checked: a cooldown reaching past the end of time never ends.
                let cooled = when.checked_add_signed(cooldown).is_some_and(|end| at >= end);
                if lower || cooled {
                    Decision::Notify
                } else {
                    Decision::Suppressed
                }
            }
            _ => Decision::Notify,
        },
    };
    if matches!(decision, Decision::Notify | Decision::FirstSightSkipped) {
        next.notified_price = Some(price);
        next.notified_at = Some(at);
    }
    (decision, next)
}

/// Load the state of (watch, listing), locking the row for this transaction.
pub async fn load(
    tx: &Transaction<'_>,
    watch_id: i64,
    listing_key: &str,
) -> Result<Option<WatchState>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT last_price, last_source_partition, last_source_offset, notified_price, notified_at
               FROM watch_state WHERE watch_id = $1 AND listing_key = $2 FOR UPDATE",
            &[&watch_id, &listing_key],
        )
        .await
        .map_err(StoreError::query("read watch_state"))?;
    Ok(row.map(|r| WatchState {
        last_price: cents_of(r.get(0)),
        last_source: (r.get(1), r.get(2)),
        notified_price: r.get::<_, Option<rust_decimal::Decimal>>(3).map(cents_of),
        notified_at: r.get(4),
    }))
}

/// Store the state of (watch, listing).
pub async fn store(
    tx: &Transaction<'_>,
    watch_id: i64,
    listing_key: &str,
    s: &WatchState,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO watch_state (watch_id, listing_key, last_price, last_source_partition,
                                  last_source_offset, notified_price, notified_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (watch_id, listing_key) DO UPDATE
            SET last_price = EXCLUDED.last_price,
                last_source_partition = EXCLUDED.last_source_partition,
                last_source_offset = EXCLUDED.last_source_offset,
                notified_price = EXCLUDED.notified_price,
                notified_at = EXCLUDED.notified_at,
                updated_at = now()",
        &[
            &watch_id,
            &listing_key,
            &dollars(s.last_price),
            &s.last_source.0,
            &s.last_source.1,
            &s.notified_price.map(dollars),
            &s.notified_at,
        ],
    )
    .await
    .map_err(StoreError::query("store watch_state"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOOR: i64 = 100;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + chrono::Duration::minutes(minutes)
    }

    fn cooldown() -> chrono::Duration {
        chrono::Duration::hours(6)
    }

    /// Run a sequence of (price, minute, holds) through one watch; the decisions.
    fn run(first_sight: bool, steps: &[(i64, i64, bool)]) -> Vec<Decision> {
        let mut state = None;
        steps
            .iter()
            .enumerate()
            .map(|(i, &(price, minute, holds))| {
                let (d, next) = decide(
                    state.as_ref(),
                    holds,
                    first_sight,
                    cooldown(),
                    FLOOR,
                    price,
                    t(minute),
                    (0, i as i64),
                );
                state = Some(next);
                d
            })
            .collect()
    }

    #[test]
    fn after_notifying_the_same_price_stays_quiet_until_it_falls_below() {
        use Decision::*;
        let d = run(
            true,
            &[
                (12_000, 0, false),
                (9_000, 1, true),
                (9_000, 2, true),
                (9_500, 3, true),
                (8_950, 4, true), // 50 cents lower: under the floor
                (8_900, 5, true), // a dollar lower: re-armed
            ],
        );
        assert_eq!(d, vec![Quiet, Notify, Suppressed, Suppressed, Suppressed, Notify]);
    }

    #[test]
    fn the_cooldown_re_arms_the_watch() {
        use Decision::*;
        let six_hours = 6 * 60;
        let d = run(
            true,
            &[
                (12_000, 0, false),
                (9_000, 10, true),
                (9_000, 10 + six_hours - 1, true),
                (9_000, 10 + six_hours, true),
                (9_000, 11 + six_hours, true),
            ],
        );
        assert_eq!(d, vec![Quiet, Notify, Suppressed, Notify, Suppressed]);
    }

    #[test]
    fn first_sighting_below_target_notifies_by_default() {
        assert_eq!(run(true, &[(9_000, 0, true)]), vec![Decision::Notify]);
    }

    #[test]
    fn a_watch_that_skips_first_sightings_speaks_only_when_the_price_falls_further() {
        use Decision::*;
        let d = run(
            false,
            &[
                (9_000, 0, true),
                (9_000, 1, true),
                (8_900, 2, true),
                (8_900, 3, true),
            ],
        );
        assert_eq!(d, vec![FirstSightSkipped, Suppressed, Notify, Suppressed]);
    }

    #[test]
    fn a_first_sighting_above_target_arms_the_watch_whatever_the_choice() {
        use Decision::*;
        assert_eq!(
            run(false, &[(12_000, 0, false), (9_000, 1, true)]),
            vec![Quiet, Notify]
        );
    }

    #[test]
    fn extreme_times_prices_and_cooldowns_never_panic() {
        let times = [DateTime::<Utc>::MIN_UTC, t(0), DateTime::<Utc>::MAX_UTC];
        let cooldowns = [
            chrono::Duration::MIN,
            chrono::Duration::zero(),
            chrono::Duration::MAX,
        ];
        for &when in &times {
            for &at in &times {
                for &cooldown in &cooldowns {
                    for price in [i64::MIN, -1, 0, i64::MAX] {
                        let state = WatchState {
                            last_price: price,
                            last_source: (0, 0),
                            notified_price: Some(price),
                            notified_at: Some(when),
                        };
                        let _ = decide(Some(&state), true, true, cooldown, i64::MAX, price, at, (0, 1));
                    }
                }
            }
        }
        // A cooldown past the end of time keeps the watch quiet, it does not wrap around.
        let state = WatchState {
            last_price: 9_000,
            last_source: (0, 0),
            notified_price: Some(9_000),
            notified_at: Some(t(0)),
        };
        let (d, _) = decide(
            Some(&state),
            true,
            true,
            chrono::Duration::MAX,
            FLOOR,
            9_000,
            DateTime::<Utc>::MAX_UTC,
            (0, 1),
        );
        assert_eq!(d, Decision::Suppressed);
    }

    #[test]
    fn replays_of_evaluated_records_are_recognised() {
        let s = WatchState {
            last_price: 1,
            last_source: (2, 50),
            notified_price: None,
            notified_at: None,
        };
        assert!(is_replay(Some(&s), 2, 50));
        assert!(is_replay(Some(&s), 2, 10));
        assert!(!is_replay(Some(&s), 2, 51));
        assert!(!is_replay(Some(&s), 3, 1));
        assert!(!is_replay(None, 2, 1));
    }
}
