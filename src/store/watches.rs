//! The `watches` table: users' price rules, listed, created and deleted through the web API.
//!
//! Validation of what a user sends lives in `web::watches`; this module only stores a
//! [`NewWatch`] that already passed it (the table's CHECK constraints are the last line).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::StoreError;
use crate::model::Cents;

/// What makes a watch fire (the `trigger_type` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerType {
    /// A listing is offered at or below `target_price`.
    AtOrBelow,
    /// A listing's price fell by at least `drop_percent` percent.
    DropPercent,
    /// A price is at least `drop_percent` below the lowest of the last `lookback_days`.
    DropVsLow,
    /// A listing reaches its own lowest price so far.
    NewLowListing,
    /// A price is the lowest seen for the whole event.
    NewLowEvent,
}

impl TriggerType {
    pub const ALL: [TriggerType; 5] = [
        Self::AtOrBelow,
        Self::DropPercent,
        Self::DropVsLow,
        Self::NewLowListing,
        Self::NewLowEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AtOrBelow => "at_or_below",
            Self::DropPercent => "drop_percent",
            Self::DropVsLow => "drop_vs_low",
            Self::NewLowListing => "new_low_listing",
            Self::NewLowEvent => "new_low_event",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// A watch to insert; prices are cents.
#[derive(Debug, Clone, PartialEq)]
pub struct NewWatch {
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    pub event_name_pattern: Option<String>,
    pub section: Option<String>,
    pub max_row: Option<String>,
    pub max_price_cents: Option<Cents>,
    pub trigger_type: TriggerType,
    pub target_price_cents: Option<Cents>,
    pub drop_percent: Option<f64>,
    pub lookback_days: Option<i32>,
    pub channel: String,
    pub notify_on_first_sight: bool,
    pub cooldown_seconds: i32,
}

/// A stored watch, as the API returns it (prices in dollars).
#[derive(Debug, Clone, Serialize)]
pub struct Watch {
    pub id: i64,
    pub user_id: Option<String>,
    pub event_id: Option<String>,
    pub event_name_pattern: Option<String>,
    pub section: Option<String>,
    pub max_row: Option<String>,
    pub max_price: Option<f64>,
    pub trigger_type: String,
    pub target_price: Option<f64>,
    pub drop_percent: Option<f64>,
    pub lookback_days: Option<i32>,
    pub channel: String,
    pub notify_on_first_sight: bool,
    pub cooldown_seconds: i32,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub last_triggered: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, user_id, event_id, event_name_pattern, section, max_row, max_price,
    trigger_type, target_price, drop_percent, lookback_days, channel, notify_on_first_sight,
    cooldown_seconds, active, created_at, last_triggered";

fn watch(r: &tokio_postgres::Row) -> Watch {
    let dollars = |d: Option<Decimal>| d.map(|d| Cents::from_decimal(d).to_dollars());
    Watch {
        id: r.get(0),
        user_id: r.get(1),
        event_id: r.get(2),
        event_name_pattern: r.get(3),
        section: r.get(4),
        max_row: r.get(5),
        max_price: dollars(r.get(6)),
        trigger_type: r.get(7),
        target_price: dollars(r.get(8)),
        drop_percent: r.get(9),
        lookback_days: r.get(10),
        channel: r.get(11),
        notify_on_first_sight: r.get(12),
        cooldown_seconds: r.get(13),
        active: r.get(14),
        created_at: r.get(15),
        last_triggered: r.get(16),
    }
}

/// Every watch, newest first (at most `limit`).
pub async fn list(c: &Client, limit: i64) -> Result<Vec<Watch>, StoreError> {
    let rows = c
        .query(
            &format!("SELECT {COLUMNS} FROM watches ORDER BY id DESC LIMIT $1"),
            &[&limit],
        )
        .await
        .map_err(StoreError::query("list watches"))?;
    Ok(rows.iter().map(watch).collect())
}

pub async fn insert(c: &Client, w: &NewWatch) -> Result<Watch, StoreError> {
    let row = c
        .query_one(
            &format!(
                "INSERT INTO watches (user_id, event_id, event_name_pattern, section, max_row, max_price,
                     trigger_type, target_price, drop_percent, lookback_days, channel,
                     notify_on_first_sight, cooldown_seconds)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 RETURNING {COLUMNS}"
            ),
            &[
                &w.user_id,
                &w.event_id,
                &w.event_name_pattern,
                &w.section,
                &w.max_row,
                &w.max_price_cents.map(Cents::to_decimal),
                &w.trigger_type.as_str(),
                &w.target_price_cents.map(Cents::to_decimal),
                &w.drop_percent,
                &w.lookback_days,
                &w.channel,
                &w.notify_on_first_sight,
                &w.cooldown_seconds,
            ],
        )
        .await
        .map_err(StoreError::query("insert watch"))?;
    Ok(watch(&row))
}

/// Delete a watch; `false` when there was none with this id. Deliveries keep their rows
/// (`alert_deliveries.watch_id` becomes NULL).
pub async fn delete(c: &Client, id: i64) -> Result<bool, StoreError> {
    let n = c
        .execute("DELETE FROM watches WHERE id = $1", &[&id])
        .await
        .map_err(StoreError::query("delete watch"))?;
    Ok(n > 0)
}
