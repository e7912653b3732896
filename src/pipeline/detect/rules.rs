//! The default alert rule from `[detect]`: which changes are worth an alert.
//!
//! A change alerts when it is a drop (or, if enabled, an increase) of at least
//! `min_drop_percent` percent **and** at least `min_change_abs` dollars. The dollar threshold,
//! never below one cent, is this rule's noise filter: a ±1 cent move never alerts, whatever its
//! percent. (User watches have their own floor, `alert.noise_floor`, in `alert::rules`.) A
//! first sighting is the baseline and never alerts, and neither does an observation older than
//! the listing's last one ([`ChangeKind::OutOfOrder`]): it is history, not the current price.

use compact_str::CompactString;

use crate::config::DetectConfig;
use crate::model::{Cents, Change, ChangeKind};

#[derive(Debug, Clone)]
pub struct Rules {
    pub min_drop_percent: f64,
    pub min_change_cents: i64,
    pub alert_on_increase: bool,
    /// Inline up to 24 bytes: every alert carries a copy.
    pub rule_name: CompactString,
}

impl Rules {
    pub fn from_config(cfg: &DetectConfig) -> Self {
        Self {
            min_drop_percent: cfg.min_drop_percent,
            // A zero floor would alert on any move; one cent is the smallest real change.
            min_change_cents: Cents::from_dollars(cfg.min_change_abs).map_or(0, |c| c.0).max(1),
            alert_on_increase: cfg.alert_on_increase,
            rule_name: cfg.rule_name.as_str().into(),
        }
    }

    /// The alert type this change raises, if any.
    pub fn evaluate(&self, change: &Change) -> Option<&'static str> {
        let kind = match change.kind {
            ChangeKind::Drop => "price_drop",
            ChangeKind::Increase if self.alert_on_increase => "price_increase",
            _ => return None,
        };
        let big_enough = change.change_cents.abs() >= self.min_change_cents
            && change.change_pct.abs() >= self.min_drop_percent;
        big_enough.then_some(kind)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::pipeline::detect::PriceCache;

    fn rules() -> Rules {
        Rules::from_config(&DetectConfig {
            min_drop_percent: 10.0,
            min_change_abs: 5.0,
            alert_on_increase: false,
            rule_name: "default".into(),
        })
    }

    fn change(previous: i64, now: i64) -> Change {
        let cache = PriceCache::new();
        cache.observe("k", previous, 0);
        cache.observe("k", now, 1).0
    }

    #[test]
    fn drop_above_both_thresholds_alerts() {
        assert_eq!(rules().evaluate(&change(10_000, 8_500)), Some("price_drop"));
    }

    #[test]
    fn drop_below_percent_threshold_raises_no_alert() {
        assert_eq!(rules().evaluate(&change(10_000, 9_500)), None);
    }

    #[test]
    fn drop_below_absolute_floor_raises_no_alert() {
        // 20% of $20 is $4, under the $5 floor.
        assert_eq!(rules().evaluate(&change(2_000, 1_600)), None);
    }

    #[test]
    fn increases_alert_only_when_enabled() {
        let mut r = rules();
        assert_eq!(r.evaluate(&change(10_000, 20_000)), None);
        r.alert_on_increase = true;
        assert_eq!(r.evaluate(&change(10_000, 20_000)), Some("price_increase"));
    }

    #[test]
    fn first_sighting_is_a_baseline() {
        let cache = PriceCache::new();
        assert_eq!(rules().evaluate(&cache.observe("k", 1, 0).0), None);
    }

    #[test]
    fn an_out_of_order_observation_never_alerts() {
        let mut r = rules();
        r.alert_on_increase = true;
        let cache = PriceCache::new();
        cache.observe("k", 10_000, 10);
        for price in [1, 9_999, 10_000, 50_000] {
            let (late, _) = cache.observe("k", price, 5);
            assert_eq!(late.kind, ChangeKind::OutOfOrder);
            assert_eq!(r.evaluate(&late), None);
        }
    }

    proptest! {
        #[test]
        fn one_cent_moves_never_alert(previous in 2i64..100_000_000, up in any::<bool>()) {
            let mut r = rules();
            r.min_drop_percent = 0.0;
            r.alert_on_increase = true;
            let now = if up { previous + 1 } else { previous - 1 };
            prop_assert_eq!(r.evaluate(&change(previous, now)), None);
        }

        #[test]
        fn alerts_only_when_both_thresholds_pass(previous in 1i64..1_000_000, now in 1i64..1_000_000) {
            let c = change(previous, now);
            let fired = rules().evaluate(&c).is_some();
            let drop = previous - now;
            let expected = drop >= 500 && crate::model::money::change_percent(drop, previous) >= 10.0;
            prop_assert_eq!(fired, expected);
        }
    }
}
