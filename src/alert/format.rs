//! Message text shared by every notifier: money, the change, the seat line, the show date, the
//! title of an alert and the rule that fired, and cutting text to a limit on a character
//! boundary. Each notifier lays these pieces out in its own format.

use chrono::{DateTime, Utc};

use super::AlertMessage;
use crate::config::DetectConfig;
use crate::model::PriceEvent;
use crate::model::money::{Cents, change_percent};

/// Cut `s` to at most `max` characters (not bytes), ending with `…` when it was cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// `$1,234.50`; negative amounts as `−$26.00` (a real minus sign): [`Cents`]'s display.
pub fn money(cents: i64) -> String {
    Cents(cents).to_string()
}

/// `−$26.00 (−15.5%)` for a move from `old` to `new`.
pub fn change(old: i64, new: i64) -> String {
    // Saturating: an absurd pair of prices reads wrong, it never panics.
    let diff = new.saturating_sub(old);
    let pct = if old == 0 { 0.0 } else { change_percent(diff, old) };
    let sign = if diff > 0 {
        "+"
    } else if diff < 0 {
        "−"
    } else {
        ""
    };
    format!("{} ({sign}{:.1}%)", signed_money(diff), pct.abs())
}

fn signed_money(cents: i64) -> String {
    if cents > 0 {
        format!("+{}", money(cents))
    } else {
        money(cents)
    }
}

/// `Sec 112 · Row F · Seat 7 (SeatGeek)`, leaving out what is empty.
pub fn seat_line(e: &PriceEvent) -> String {
    let parts: Vec<String> = [("Sec", &e.section()), ("Row", &e.row()), ("Seat", &e.seat())]
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(label, v)| format!("{label} {}", v.trim()))
        .collect();
    let seats = if parts.is_empty() {
        "General admission".to_string()
    } else {
        parts.join(" · ")
    };
    if e.quantity > 1 {
        format!("{seats} · {} tickets ({})", e.quantity, e.source())
    } else {
        format!("{seats} ({})", e.source())
    }
}

/// `Sat 3 Oct 2026, 20:00 UTC` (times are stored as UTC).
pub fn show_date(date: Option<DateTime<Utc>>) -> Option<String> {
    date.map(|d| d.format("%a %-d %b %Y, %H:%M UTC").to_string())
}

/// What kind of news an alert is, for titles: `Price drop`, `New low for the event`, ...
pub fn headline(alert_type: &str) -> &'static str {
    match alert_type {
        "price_drop" | "watch_drop_percent" => "Price drop",
        "price_increase" => "Price rise",
        "watch_at_or_below" => "At or below your target",
        "watch_drop_vs_low" => "Below its recent low",
        "watch_new_low_listing" => "New low for this listing",
        "watch_new_low_event" => "New low for the event",
        "test" => "Test message",
        _ => "Price alert",
    }
}

/// `Price drop: Phoebe Bridgers — Kia Forum`.
pub fn title(m: &AlertMessage) -> String {
    let e = &m.alert.event;
    format!(
        "{}: {} — {}",
        headline(&m.alert.alert_type),
        e.event_name(),
        e.venue()
    )
}

/// The default rule as a sentence: `drop ≥ 10% and ≥ $5.00`.
pub fn default_rule_description(d: &DetectConfig) -> String {
    let floor = Cents::from_dollars(d.min_change_abs).unwrap_or(Cents::ZERO);
    let what = if d.alert_on_increase { "move" } else { "drop" };
    format!(
        "{} ({what} ≥ {}% and ≥ {})",
        d.rule_name,
        trim_number(d.min_drop_percent),
        floor
    )
}

/// The rule that fired, as shown to users.
pub fn rule_text(m: &AlertMessage, detect: &DetectConfig) -> String {
    match &m.rule_description {
        Some(d) => d.clone(),
        None if m.alert.rule == detect.rule_name => default_rule_description(detect),
        None => m.alert.rule.to_string(),
    }
}

/// `10` for 10.0, `12.5` for 12.5.
pub fn trim_number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Only http(s) URLs are links; anything else would make Discord refuse the message.
pub fn link(url: Option<&str>) -> Option<&str> {
    url.filter(|u| (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 2048)
        .filter(|u| reqwest::Url::parse(u).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_groups_thousands_and_signs() {
        assert_eq!(money(14_200), "$142.00");
        assert_eq!(money(123_456_789), "$1,234,567.89");
        assert_eq!(money(-2_600), "−$26.00");
        assert_eq!(money(5), "$0.05");
    }

    #[test]
    fn change_shows_amount_and_percent() {
        assert_eq!(change(16_800, 14_200), "−$26.00 (−15.5%)");
        assert_eq!(change(10_000, 12_000), "+$20.00 (+20.0%)");
    }

    #[test]
    fn extreme_amounts_never_panic() {
        assert_eq!(money(i64::MIN), "−$92,233,720,368,547,758.08");
        for (old, new) in [(i64::MIN, i64::MAX), (i64::MAX, i64::MIN), (0, i64::MIN)] {
            assert!(!change(old, new).is_empty());
        }
    }

    #[test]
    fn truncate_counts_characters_not_bytes() {
        assert_eq!(truncate("héllo", 10), "héllo");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("abc", 0), "");
    }

    #[test]
    fn only_http_links_are_kept() {
        assert_eq!(link(Some("https://x.example/a")), Some("https://x.example/a"));
        assert_eq!(link(Some("javascript:alert(1)")), None);
        assert_eq!(link(Some("not a url")), None);
    }

    #[test]
    fn default_rule_reads_as_a_sentence() {
        let d = DetectConfig::default();
        assert_eq!(default_rule_description(&d), "default (drop ≥ 10% and ≥ $5.00)");
    }
}
