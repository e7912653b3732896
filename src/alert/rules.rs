//! What each watch trigger means, as pure functions: given the observed price and the baseline
//! the trigger compares with, does the trigger's condition hold? Whether that condition then
//! notifies (first sighting, re-arm, cooldown) is [`super::rearm`]'s decision.
//!
//! | trigger            | baseline                                   | holds when                                  |
//! |--------------------|--------------------------------------------|---------------------------------------------|
//! | `at_or_below`      | —                                          | price ≤ target                              |
//! | `drop_percent`     | the listing's previous price               | drop ≥ X% and ≥ noise floor                 |
//! | `drop_vs_low`      | the listing's lowest price of the last N days | drop below it ≥ X% and ≥ noise floor     |
//! | `new_low_listing`  | the listing's lowest earlier price         | below it by ≥ noise floor, or no earlier price |
//! | `new_low_event`    | the event's lowest earlier price           | below it by ≥ noise floor, or no earlier price |
//!
//! The noise floor (`alert.noise_floor`, $1 by default) keeps ±1-cent moves from ever
//! counting as a drop or a new low. Prices are whole cents.

use serde::{Deserialize, Serialize};

/// One watch's trigger with its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    AtOrBelow { target: i64 },
    DropPercent { percent: f64 },
    DropVsLow { percent: f64, lookback_days: i32 },
    NewLowListing,
    NewLowEvent,
}

impl Trigger {
    /// The `watches.trigger_type` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::AtOrBelow { .. } => "at_or_below",
            Self::DropPercent { .. } => "drop_percent",
            Self::DropVsLow { .. } => "drop_vs_low",
            Self::NewLowListing => "new_low_listing",
            Self::NewLowEvent => "new_low_event",
        }
    }

    /// The baseline this trigger needs looked up before [`condition`] can answer.
    pub fn needs(&self) -> Needs {
        match self {
            Self::AtOrBelow { .. } | Self::DropPercent { .. } => Needs::Nothing,
            Self::DropVsLow { lookback_days, .. } => Needs::ListingLowSince { days: *lookback_days },
            Self::NewLowListing => Needs::ListingLow,
            Self::NewLowEvent => Needs::EventLow,
        }
    }

    /// `at or below $150.00`, `drop ≥ 10%`, ...
    pub fn describe(&self) -> String {
        use super::format::{money, trim_number};
        match self {
            Self::AtOrBelow { target } => format!("at or below {}", money(*target)),
            Self::DropPercent { percent } => format!("drop ≥ {}%", trim_number(*percent)),
            Self::DropVsLow {
                percent,
                lookback_days,
            } => format!(
                "≥ {}% below the lowest price of the last {lookback_days} days",
                trim_number(*percent)
            ),
            Self::NewLowListing => "new all-time low for the listing".into(),
            Self::NewLowEvent => "new all-time low for the event".into(),
        }
    }
}

/// A baseline lookup a trigger needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    Nothing,
    /// The listing's lowest price before this record, over all time.
    ListingLow,
    /// The listing's lowest price before this record, within the last `days` days.
    ListingLowSince {
        days: i32,
    },
    /// The event's lowest price before this record, over all its listings.
    EventLow,
}

/// One price as a watch sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub price: i64,
    /// The listing's previous price (none on its first sighting ever).
    pub previous: Option<i64>,
    /// What [`Trigger::needs`] asked for; `None` when there is no earlier price.
    pub baseline: Option<i64>,
}

/// Why a condition holds: the price it compares against, for the message's "was".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub reference: i64,
}

fn drop_pct(from: i64, to: i64) -> f64 {
    if from <= 0 {
        0.0
    } else {
        crate::model::money::change_percent(from - to, from)
    }
}

/// Does `trigger`'s condition hold for `obs`? `floor` is the noise floor in cents.
pub fn condition(trigger: &Trigger, obs: &Observation, floor: i64) -> Option<Hit> {
    let price = obs.price;
    match *trigger {
        Trigger::AtOrBelow { target } => (price <= target).then_some(Hit {
            reference: obs.previous.unwrap_or(price),
        }),
        Trigger::DropPercent { percent } => {
            let previous = obs.previous?;
            (previous - price >= floor && drop_pct(previous, price) >= percent)
                .then_some(Hit { reference: previous })
        }
        Trigger::DropVsLow { percent, .. } => {
            let low = obs.baseline?;
            (low - price >= floor && drop_pct(low, price) >= percent).then_some(Hit { reference: low })
        }
        Trigger::NewLowListing | Trigger::NewLowEvent => match obs.baseline {
            // Nothing earlier: the first price is the lowest there has been.
            None => Some(Hit { reference: price }),
            Some(low) => (low - price >= floor).then_some(Hit { reference: low }),
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const FLOOR: i64 = 100;

    fn obs(price: i64, previous: Option<i64>, baseline: Option<i64>) -> Observation {
        Observation {
            price,
            previous,
            baseline,
        }
    }

    #[test]
    fn at_or_below_fires_at_the_target_and_under_it_only() {
        let t = Trigger::AtOrBelow { target: 15_000 };
        assert!(condition(&t, &obs(15_000, Some(16_000), None), FLOOR).is_some());
        assert!(condition(&t, &obs(14_000, None, None), FLOOR).is_some());
        assert!(condition(&t, &obs(15_001, Some(20_000), None), FLOOR).is_none());
    }

    #[test]
    fn drop_percent_needs_both_the_percent_and_the_noise_floor() {
        let t = Trigger::DropPercent { percent: 10.0 };
        assert_eq!(
            condition(&t, &obs(9_000, Some(10_000), None), FLOOR),
            Some(Hit { reference: 10_000 })
        );
        assert!(condition(&t, &obs(9_500, Some(10_000), None), FLOOR).is_none());
        // 50% of $1.00 is only 50 cents: under the $1 floor.
        assert!(condition(&t, &obs(50, Some(100), None), FLOOR).is_none());
        // A first sighting has no previous price to drop from.
        assert!(condition(&t, &obs(9_000, None, None), FLOOR).is_none());
        // A rise is never a drop.
        assert!(condition(&t, &obs(12_000, Some(10_000), None), FLOOR).is_none());
    }

    #[test]
    fn drop_vs_low_compares_with_the_lookback_low_not_the_previous_price() {
        let t = Trigger::DropVsLow {
            percent: 10.0,
            lookback_days: 7,
        };
        // Previous $120, low of the week $100: $95 is a big drop vs previous, only 5% vs low.
        assert!(condition(&t, &obs(9_500, Some(12_000), Some(10_000)), FLOOR).is_none());
        assert_eq!(
            condition(&t, &obs(8_900, Some(12_000), Some(10_000)), FLOOR),
            Some(Hit { reference: 10_000 })
        );
        assert!(condition(&t, &obs(8_900, Some(12_000), None), FLOOR).is_none());
    }

    #[test]
    fn new_lows_need_to_beat_the_old_low_by_the_noise_floor() {
        for t in [Trigger::NewLowListing, Trigger::NewLowEvent] {
            assert!(condition(&t, &obs(9_900, Some(10_000), Some(10_000)), FLOOR).is_some());
            assert!(condition(&t, &obs(9_999, Some(10_000), Some(10_000)), FLOOR).is_none());
            assert!(condition(&t, &obs(10_000, Some(10_000), Some(10_000)), FLOOR).is_none());
            assert!(
                condition(&t, &obs(10_000, None, None), FLOOR).is_some(),
                "first price is the low"
            );
        }
    }

    proptest! {
        #[test]
        fn one_cent_moves_never_count_as_drops_or_new_lows(previous in 2i64..10_000_000) {
            let o = obs(previous - 1, Some(previous), Some(previous));
            for t in [
                Trigger::DropPercent { percent: 0.0 },
                Trigger::DropVsLow { percent: 0.0, lookback_days: 1 },
                Trigger::NewLowListing,
                Trigger::NewLowEvent,
            ] {
                prop_assert!(condition(&t, &o, FLOOR).is_none());
            }
        }
    }
}
