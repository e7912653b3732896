//! User watches (`watches` table): their shape, which price observations they look at
//! (event id or event-name pattern, optional section, maximum row and maximum price), loading
//! the active ones, and adding/listing/removing them for the CLI.
//!
//! Patterns: `*` and `?` are wildcards and the pattern must match the whole name; a pattern
//! without wildcards matches names that contain it.
//! Matching is case-insensitive. Filters compare the listing's `price` (not `total_price`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::GenericClient;

use super::rules::Trigger;
use crate::model::PriceEvent;
use crate::model::money::{cents_of, dollars};
use crate::store::StoreError;

/// One watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub id: i64,
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    pub event_name_pattern: Option<String>,
    pub section: Option<String>,
    pub max_row: Option<String>,
    pub max_price: Option<i64>,
    pub trigger: Trigger,
    /// The notifier channel (a name in `[alert.notifiers]`).
    pub channel: String,
    pub notify_on_first_sight: bool,
    pub cooldown_seconds: i32,
    pub active: bool,
    pub last_triggered: Option<DateTime<Utc>>,
}

impl Watch {
    /// Does this watch look at `e` (its price included)?
    pub fn matches(&self, e: &PriceEvent) -> bool {
        let event_ok = match (&self.event_id, &self.event_name_pattern) {
            (Some(id), _) => *id == e.event_id(),
            (None, Some(p)) => pattern_matches(p, e.event_name()),
            (None, None) => false,
        };
        event_ok
            && self
                .section
                .as_deref()
                .is_none_or(|s| s.trim().eq_ignore_ascii_case(e.section().trim()))
            && self.max_row.as_deref().is_none_or(|m| row_at_most(e.row(), m))
            && self.max_price.is_none_or(|m| e.price <= m)
    }

    pub fn rule(&self) -> String {
        format!("{}{}", super::WATCH_RULE_PREFIX, self.id)
    }

    /// `watch 7: at or below $150.00 · Sec 112 · ≤ $200.00`.
    pub fn describe(&self) -> String {
        let mut s = format!("watch {}: {}", self.id, self.trigger.describe());
        if let Some(sec) = &self.section {
            s.push_str(&format!(" · Sec {sec}"));
        }
        if let Some(r) = &self.max_row {
            s.push_str(&format!(" · row ≤ {r}"));
        }
        if let Some(m) = self.max_price {
            s.push_str(&format!(" · ≤ {}", super::format::money(m)));
        }
        s
    }
}

/// Case-insensitive glob (`*`, `?`); without wildcards, a substring match.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    if !p.iter().any(|c| matches!(c, '*' | '?')) {
        let needle: String = p.iter().collect();
        let hay: String = n.iter().collect();
        return hay.contains(&needle);
    }
    // Iterative glob with backtracking to the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Is `row` at or before `max`? Numbers compare as numbers, letters as letters (`Z` < `AA`).
pub fn row_at_most(row: &str, max: &str) -> bool {
    let (row, max) = (row.trim(), max.trim());
    match (row.parse::<i64>(), max.parse::<i64>()) {
        (Ok(r), Ok(m)) => r <= m,
        _ => {
            let (r, m) = (row.to_uppercase(), max.to_uppercase());
            (r.len(), r) <= (m.len(), m)
        }
    }
}

/// The active watches, indexed for the evaluator.
#[derive(Debug, Default, Clone)]
pub struct WatchSet {
    by_event: HashMap<String, Vec<Watch>>,
    by_pattern: Vec<Watch>,
}

impl WatchSet {
    pub fn new(watches: Vec<Watch>) -> Self {
        let mut set = Self::default();
        for w in watches {
            match &w.event_id {
                Some(id) => set.by_event.entry(id.clone()).or_default().push(w),
                None => set.by_pattern.push(w),
            }
        }
        set
    }

    pub fn is_empty(&self) -> bool {
        self.by_event.is_empty() && self.by_pattern.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_event.values().map(Vec::len).sum::<usize>() + self.by_pattern.len()
    }

    /// Every watch that looks at `e`.
    pub fn matching<'a>(&'a self, e: &'a PriceEvent) -> impl Iterator<Item = &'a Watch> + 'a {
        self.by_event
            .get(e.event_id())
            .into_iter()
            .flatten()
            .chain(self.by_pattern.iter())
            .filter(move |w| w.matches(e))
    }
}

const COLUMNS: &str = "id, user_id, event_id, event_name_pattern, section, max_row, max_price, trigger_type,
     target_price, drop_percent, lookback_days, channel, notify_on_first_sight, cooldown_seconds,
     active, last_triggered";

fn from_row(r: &tokio_postgres::Row) -> Result<Watch, String> {
    let id: i64 = r.get(0);
    let kind: &str = r.get(7);
    let target: Option<Decimal> = r.get(8);
    let percent: Option<f64> = r.get(9);
    let lookback: Option<i32> = r.get(10);
    let trigger = match kind {
        "at_or_below" => Trigger::AtOrBelow {
            target: target.map(cents_of).ok_or("at_or_below needs target_price")?,
        },
        "drop_percent" => Trigger::DropPercent {
            percent: percent.ok_or("drop_percent needs drop_percent")?,
        },
        "drop_vs_low" => Trigger::DropVsLow {
            percent: percent.ok_or("drop_vs_low needs drop_percent")?,
            lookback_days: lookback.ok_or("drop_vs_low needs lookback_days")?,
        },
        "new_low_listing" => Trigger::NewLowListing,
        "new_low_event" => Trigger::NewLowEvent,
        other => return Err(format!("unknown trigger_type {other}")),
    };
    Ok(Watch {
        id,
        user_id: r.get(1),
        event_id: r.get(2),
        event_name_pattern: r.get(3),
        section: r.get(4),
        max_row: r.get(5),
        max_price: r.get::<_, Option<Decimal>>(6).map(cents_of),
        trigger,
        channel: r.get(11),
        notify_on_first_sight: r.get(12),
        cooldown_seconds: r.get(13),
        active: r.get(14),
        last_triggered: r.get(15),
    })
}

/// Every active watch. A row that cannot be used is skipped with a warning naming it.
pub async fn load_active(client: &impl GenericClient) -> Result<Vec<Watch>, StoreError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM watches WHERE active ORDER BY id"),
            &[],
        )
        .await
        .map_err(StoreError::query("load watches"))?;
    Ok(rows
        .iter()
        .filter_map(|r| match from_row(r) {
            Ok(w) => Some(w),
            Err(reason) => {
                tracing::warn!(watch = r.get::<_, i64>(0), reason, "watch ignored");
                None
            }
        })
        .collect())
}

/// Every watch, active or not (for `watch list`).
pub async fn load_all(client: &impl GenericClient) -> Result<Vec<Result<Watch, (i64, String)>>, StoreError> {
    let rows = client
        .query(&format!("SELECT {COLUMNS} FROM watches ORDER BY id"), &[])
        .await
        .map_err(StoreError::query("list watches"))?;
    Ok(rows
        .iter()
        .map(|r| from_row(r).map_err(|e| (r.get::<_, i64>(0), e)))
        .collect())
}

pub async fn get(client: &impl GenericClient, id: i64) -> Result<Option<Watch>, StoreError> {
    let row = client
        .query_opt(&format!("SELECT {COLUMNS} FROM watches WHERE id = $1"), &[&id])
        .await
        .map_err(StoreError::query("read watch"))?;
    Ok(row.and_then(|r| from_row(&r).ok()))
}

/// A watch to add (its id is assigned by Postgres).
#[derive(Debug, Clone)]
pub struct NewWatch {
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    pub event_name_pattern: Option<String>,
    pub section: Option<String>,
    pub max_row: Option<String>,
    pub max_price: Option<i64>,
    pub trigger: Trigger,
    pub channel: String,
    pub notify_on_first_sight: bool,
    pub cooldown_seconds: i32,
}

pub async fn insert(client: &impl GenericClient, w: &NewWatch) -> Result<i64, StoreError> {
    let (target, percent, lookback) = match w.trigger {
        Trigger::AtOrBelow { target } => (Some(dollars(target)), None, None),
        Trigger::DropPercent { percent } => (None, Some(percent), None),
        Trigger::DropVsLow {
            percent,
            lookback_days,
        } => (None, Some(percent), Some(lookback_days)),
        Trigger::NewLowListing | Trigger::NewLowEvent => (None, None, None),
    };
    let row = client
        .query_one(
            "INSERT INTO watches (user_id, event_id, event_name_pattern, section, max_row, max_price,
                                  trigger_type, target_price, drop_percent, lookback_days, channel,
                                  notify_on_first_sight, cooldown_seconds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            &[
                &w.user_id,
                &w.event_id,
                &w.event_name_pattern,
                &w.section,
                &w.max_row,
                &w.max_price.map(dollars),
                &w.trigger.as_str(),
                &target,
                &percent,
                &lookback,
                &w.channel,
                &w.notify_on_first_sight,
                &w.cooldown_seconds,
            ],
        )
        .await
        .map_err(StoreError::query("insert watch"))?;
    Ok(row.get(0))
}

/// Delete a watch (its re-arm state goes with it; past deliveries keep their rows). Returns
/// whether it existed.
pub async fn remove(client: &impl GenericClient, id: i64) -> Result<bool, StoreError> {
    let n = client
        .execute("DELETE FROM watches WHERE id = $1", &[&id])
        .await
        .map_err(StoreError::query("delete watch"))?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PriceEventFields;

    fn event(name: &str, section: &str, row: &str, price: i64) -> PriceEvent {
        PriceEvent::from(PriceEventFields {
            event_id: "e1".into(),
            event_name: name.into(),
            venue: "Arena".into(),
            event_date: None,
            source: "mock".into(),
            section: section.into(),
            row: row.into(),
            seat: "1".into(),
            price,
            fees: None,
            total_price: price,
            timestamp: DateTime::UNIX_EPOCH,
            listing_id: Some("L".into()),
            listing_url: None,
            quantity: 1,
            delivery_method: None,
            seller_notes: None,
        })
    }

    fn watch() -> Watch {
        Watch {
            id: 1,
            user_id: None,
            event_id: None,
            event_name_pattern: Some("taylor*eras*".into()),
            section: None,
            max_row: None,
            max_price: None,
            trigger: Trigger::NewLowEvent,
            channel: "ops".into(),
            notify_on_first_sight: true,
            cooldown_seconds: 0,
            active: true,
            last_triggered: None,
        }
    }

    #[test]
    fn patterns_are_globs_or_substrings_ignoring_case() {
        assert!(pattern_matches("taylor*eras*", "Taylor Swift | The Eras Tour"));
        assert!(!pattern_matches("taylor*eras*", "Taylor Swift"));
        assert!(
            !pattern_matches("taylor*eras", "Taylor Swift | The Eras Tour"),
            "a glob matches the whole name"
        );
        assert!(pattern_matches("swift", "Taylor SWIFT"));
        assert!(pattern_matches("t?ylor*", "Taylor"));
        assert!(!pattern_matches("x*", "Taylor"));
    }

    #[test]
    fn rows_compare_as_numbers_or_letters() {
        assert!(row_at_most("9", "10"));
        assert!(!row_at_most("11", "10"));
        assert!(row_at_most("F", "K"));
        assert!(row_at_most("Z", "AA"));
        assert!(!row_at_most("M", "K"));
    }

    #[test]
    fn section_row_and_max_price_filter_the_listings_a_watch_sees() {
        let mut w = watch();
        let e = event("Taylor Swift | The Eras Tour", "112", "F", 15_000);
        assert!(w.matches(&e));
        w.section = Some("113".into());
        assert!(!w.matches(&e));
        w.section = Some(" 112 ".into());
        assert!(w.matches(&e));
        w.max_price = Some(14_999);
        assert!(!w.matches(&e));
        w.max_price = Some(15_000);
        w.max_row = Some("C".into());
        assert!(!w.matches(&e));
        w.max_row = Some("G".into());
        assert!(w.matches(&e));
    }

    #[test]
    fn the_set_finds_watches_by_event_id_and_by_pattern() {
        let mut by_id = watch();
        by_id.id = 2;
        by_id.event_id = Some("e1".into());
        by_id.event_name_pattern = None;
        let mut other = by_id.clone();
        other.id = 3;
        other.event_id = Some("e2".into());
        let set = WatchSet::new(vec![watch(), by_id, other]);
        let e = event("Taylor Swift | The Eras Tour", "112", "F", 15_000);
        let ids: Vec<i64> = set.matching(&e).map(|w| w.id).collect();
        assert_eq!(ids, vec![2, 1]);
        assert_eq!(set.len(), 3);
    }
}
