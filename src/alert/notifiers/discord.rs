//! Discord webhooks: one embed per alert (event, venue, section/row/seat, was/now/change, show
//! date, link, the rule that fired), several alerts coalesced into one message.
//!
//! Discord refuses (400) a message past its limits, so every message is built within them:
//! title ≤ 256, description ≤ 4096, ≤ 25 fields (name ≤ 256, value ≤ 1024), footer ≤ 2048,
//! ≤ 10 embeds, and all embed text of one message ≤ 6000 characters. Long text is cut, never
//! sent whole. Embeds sharing a `url` would collapse into one, so a message never holds two
//! alerts with the same link.

use std::collections::HashSet;

use serde::Serialize;

use super::Outgoing;
use crate::alert::AlertMessage;
use crate::alert::format::{self, truncate};
use crate::config::DetectConfig;

pub const MAX_EMBEDS: usize = 10;
pub const MAX_TOTAL: usize = 6000;
pub const MAX_TITLE: usize = 256;
pub const MAX_DESCRIPTION: usize = 4096;
pub const MAX_FIELDS: usize = 25;
pub const MAX_FIELD_NAME: usize = 256;
pub const MAX_FIELD_VALUE: usize = 1024;
pub const MAX_FOOTER: usize = 2048;
/// One embed alone must fit a message.
const MAX_EMBED_TEXT: usize = MAX_TOTAL;

const GREEN: u32 = 3_066_993;
const ORANGE: u32 = 15_105_570;
const BLUE: u32 = 3_447_003;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    pub name: String,
    pub value: String,
    pub inline: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Footer {
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embed {
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub description: String,
    pub color: u32,
    pub fields: Vec<Field>,
    pub timestamp: String,
    pub footer: Footer,
}

impl Embed {
    /// The characters Discord counts toward the 6000 limit.
    pub fn text_len(&self) -> usize {
        let c = |s: &str| s.chars().count();
        c(&self.title)
            + c(&self.description)
            + c(&self.footer.text)
            + self
                .fields
                .iter()
                .map(|f| c(&f.name) + c(&f.value))
                .sum::<usize>()
    }

    /// Cut text until the embed is within `budget` characters: the description first, then
    /// field values, then the footer, then the title.
    fn fit(&mut self, budget: usize) {
        let over = |e: &Self| e.text_len().saturating_sub(budget);
        let cut = |s: &mut String, by: usize, keep: usize| {
            let len = s.chars().count();
            let to = len.saturating_sub(by).max(keep.min(len));
            *s = truncate(s, to);
        };
        let n = over(self);
        cut(&mut self.description, n, 0);
        for i in 0..self.fields.len() {
            let n = over(self);
            cut(&mut self.fields[i].value, n, 1);
        }
        let n = over(self);
        cut(&mut self.footer.text, n, 0);
        let n = over(self);
        cut(&mut self.title, n, 1);
        while over(self) > 0 && self.fields.len() > 1 {
            self.fields.pop();
        }
    }
}

fn field(name: &str, value: String, inline: bool) -> Field {
    Field {
        name: truncate(name, MAX_FIELD_NAME),
        value: truncate(if value.is_empty() { "—" } else { &value }, MAX_FIELD_VALUE),
        inline,
    }
}

/// The embed of one alert, within every per-embed limit.
pub fn embed(m: &AlertMessage, detect: &DetectConfig) -> Embed {
    let a = &m.alert;
    let e = &a.event;
    let mut fields = Vec::with_capacity(5);
    if a.old_price != a.new_price {
        fields.push(field("Was", format::money(a.old_price), true));
    }
    fields.push(field("Now", format::money(a.new_price), true));
    if a.old_price != a.new_price {
        fields.push(field("Change", format::change(a.old_price, a.new_price), true));
    }
    if let Some(date) = format::show_date(e.event_date) {
        fields.push(field("Show", date, false));
    }
    fields.truncate(MAX_FIELDS);
    let color = match a.alert_type.as_str() {
        "price_increase" => ORANGE,
        t if t.starts_with("watch_") => BLUE,
        _ => GREEN,
    };
    let footer = format!(
        "ConScope · rule: {} · alert {}",
        format::rule_text(m, detect),
        a.alert_id
    );
    let mut embed = Embed {
        title: truncate(&format::title(m), MAX_TITLE),
        url: format::link(e.listing_url()).map(str::to_string),
        description: truncate(&format::seat_line(e), MAX_DESCRIPTION),
        color,
        fields,
        timestamp: a
            .alert_timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        footer: Footer {
            text: truncate(&footer, MAX_FOOTER),
        },
    };
    embed.fit(MAX_EMBED_TEXT);
    embed
}

/// Messages for `alerts`, in order: each up to 10 embeds and 6000 characters, no repeated link.
pub fn plan(alerts: &[AlertMessage], detect: &DetectConfig) -> Vec<Outgoing> {
    let mut out = Vec::new();
    let mut embeds: Vec<Embed> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut urls: HashSet<String> = HashSet::new();
    let mut total = 0;
    for m in alerts {
        let e = embed(m, detect);
        let len = e.text_len();
        let repeats_url = e.url.as_ref().is_some_and(|u| urls.contains(u));
        if !embeds.is_empty() && (embeds.len() == MAX_EMBEDS || total + len > MAX_TOTAL || repeats_url) {
            out.push(message(std::mem::take(&mut embeds), std::mem::take(&mut ids)));
            urls.clear();
            total = 0;
        }
        if let Some(u) = &e.url {
            urls.insert(u.clone());
        }
        total += len;
        ids.push(m.alert.alert_id.clone());
        embeds.push(e);
    }
    if !embeds.is_empty() {
        out.push(message(embeds, ids));
    }
    out
}

fn message(embeds: Vec<Embed>, alert_ids: Vec<String>) -> Outgoing {
    Outgoing {
        alert_ids,
        body: serde_json::json!({
            "username": "ConScope",
            "embeds": embeds,
            "allowed_mentions": { "parse": [] },
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{Alert, PriceEvent, PriceEventFields};

    pub(crate) fn alert(id: &str, name: &str, url: Option<&str>) -> AlertMessage {
        let event = PriceEvent::from(PriceEventFields {
            event_id: "e".into(),
            event_name: name.into(),
            venue: "Kia Forum".into(),
            event_date: chrono::DateTime::from_timestamp(1_791_057_600, 0),
            source: "seatgeek".into(),
            section: "112".into(),
            row: "F".into(),
            seat: "7".into(),
            price: 14_200,
            fees: None,
            total_price: 14_200,
            timestamp: chrono::DateTime::UNIX_EPOCH,
            listing_id: Some(id.into()),
            listing_url: url.map(Into::into),
            quantity: 1,
            delivery_method: None,
            seller_notes: None,
        });
        AlertMessage {
            alert: Alert {
                alert_id: id.into(),
                alert_type: "price_drop".into(),
                rule: "default".into(),
                listing_key: id.into(),
                event: std::sync::Arc::new(event),
                old_price: 16_800,
                new_price: 14_200,
                drop_amount: 2_600,
                drop_percent: 15.5,
                alert_timestamp: chrono::DateTime::UNIX_EPOCH,
                source_partition: 0,
                source_offset: 1,
            },
            rule_description: None,
        }
    }

    fn within_limits(body: &serde_json::Value) {
        let embeds = body["embeds"].as_array().expect("embeds");
        assert!(!embeds.is_empty() && embeds.len() <= MAX_EMBEDS);
        let c = |v: &serde_json::Value| v.as_str().map_or(0, |s| s.chars().count());
        let mut total = 0;
        for e in embeds {
            assert!(c(&e["title"]) <= MAX_TITLE);
            assert!(c(&e["description"]) <= MAX_DESCRIPTION);
            assert!(c(&e["footer"]["text"]) <= MAX_FOOTER);
            let fields = e["fields"].as_array().expect("fields");
            assert!(fields.len() <= MAX_FIELDS);
            for f in fields {
                assert!(c(&f["name"]) <= MAX_FIELD_NAME && c(&f["value"]) <= MAX_FIELD_VALUE);
                total += c(&f["name"]) + c(&f["value"]);
            }
            total += c(&e["title"]) + c(&e["description"]) + c(&e["footer"]["text"]);
        }
        assert!(total <= MAX_TOTAL, "{total}");
    }

    #[test]
    fn an_embed_shows_was_now_change_show_date_link_and_rule() {
        let m = alert("a1", "Phoebe Bridgers", Some("https://seatgeek.com/e/6543210"));
        let e = embed(&m, &DetectConfig::default());
        assert_eq!(e.title, "Price drop: Phoebe Bridgers — Kia Forum");
        assert_eq!(e.description, "Sec 112 · Row F · Seat 7 (seatgeek)");
        assert_eq!(e.url.as_deref(), Some("https://seatgeek.com/e/6543210"));
        let f: Vec<(&str, &str)> = e
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.value.as_str()))
            .collect();
        assert_eq!(f[0], ("Was", "$168.00"));
        assert_eq!(f[1], ("Now", "$142.00"));
        assert_eq!(f[2], ("Change", "−$26.00 (−15.5%)"));
        assert_eq!(f[3].0, "Show");
        assert!(e.footer.text.contains("drop ≥ 10% and ≥ $5.00") && e.footer.text.contains("a1"));
    }

    #[test]
    fn oversized_text_is_cut_to_discord_limits_not_dropped() {
        let huge = "Ω".repeat(50_000);
        let mut m = alert("a1", &huge, None);
        let mut event = m.alert.event.to_fields();
        event.venue = huge.as_str().into();
        event.section = huge.as_str().into();
        m.alert.event = std::sync::Arc::new(event.into());
        m.rule_description = Some(huge.clone());
        let e = embed(&m, &DetectConfig::default());
        assert!(e.text_len() <= MAX_TOTAL, "{}", e.text_len());
        assert!(e.title.ends_with('…'));
        let alerts: Vec<_> = (0..25)
            .map(|i| {
                let mut a = m.clone();
                a.alert.alert_id = format!("a{i}");
                a
            })
            .collect();
        let out = plan(&alerts, &DetectConfig::default());
        let sent: usize = out.iter().map(|o| o.alert_ids.len()).sum();
        assert_eq!(sent, 25, "every alert goes out");
        for o in &out {
            within_limits(&o.body);
        }
    }

    #[test]
    fn many_alerts_coalesce_into_messages_of_at_most_ten_embeds() {
        let alerts: Vec<_> = (0..23)
            .map(|i| alert(&format!("a{i}"), "Show", Some(&format!("https://x.example/{i}"))))
            .collect();
        let out = plan(&alerts, &DetectConfig::default());
        let sizes: Vec<usize> = out.iter().map(|o| o.alert_ids.len()).collect();
        assert_eq!(sizes, vec![10, 10, 3]);
        for o in &out {
            within_limits(&o.body);
        }
    }

    #[test]
    fn two_alerts_with_one_link_never_share_a_message() {
        let alerts = vec![
            alert("a1", "Show", Some("https://x.example/1")),
            alert("a2", "Show", Some("https://x.example/1")),
            alert("a3", "Show", Some("https://x.example/2")),
        ];
        let out = plan(&alerts, &DetectConfig::default());
        let sizes: Vec<usize> = out.iter().map(|o| o.alert_ids.len()).collect();
        assert_eq!(sizes, vec![1, 2]);
    }

    #[test]
    fn links_that_are_not_http_are_left_out() {
        let e = embed(
            &alert("a1", "Show", Some("javascript:x")),
            &DetectConfig::default(),
        );
        assert_eq!(e.url, None);
    }
}
