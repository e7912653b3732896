//! Slack incoming webhooks: blocks (a header, a section with the details, a context line with
//! the rule and alert id) per alert, up to ten alerts per message (≤ 50 blocks). Text is
//! escaped for mrkdwn and cut to Slack's limits (header 150, section 3000, context 2000).

use serde_json::{Value, json};

use super::Outgoing;
use crate::alert::AlertMessage;
use crate::alert::format::{self, truncate};
use crate::config::DetectConfig;

/// Alerts per message: four blocks each plus a divider stays under Slack's 50 blocks.
pub const MAX_ALERTS: usize = 10;
const MAX_HEADER: usize = 150;
const MAX_SECTION: usize = 3000;
const MAX_CONTEXT: usize = 2000;
const MAX_FALLBACK: usize = 3000;

/// Slack mrkdwn treats `&`, `<` and `>` as control characters.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn blocks(m: &AlertMessage, detect: &DetectConfig) -> (Vec<Value>, String) {
    let a = &m.alert;
    let e = &a.event;
    let title = format::title(m);
    let mut lines = vec![escape(&format::seat_line(e))];
    if a.old_price != a.new_price {
        lines.push(format!(
            "Was *{}* → now *{}* ({})",
            format::money(a.old_price),
            format::money(a.new_price),
            format::change(a.old_price, a.new_price)
        ));
    } else {
        lines.push(format!("Now *{}*", format::money(a.new_price)));
    }
    if let Some(d) = format::show_date(e.event_date) {
        lines.push(format!("Show: {d}"));
    }
    if let Some(url) = format::link(e.listing_url()) {
        lines.push(format!("<{}|View the listing>", url.replace('|', "%7C")));
    }
    let context = format!(
        "ConScope · rule: {} · alert {}",
        escape(&format::rule_text(m, detect)),
        a.alert_id
    );
    let fallback = format!("{}: now {}", escape(&title), format::money(a.new_price));
    let blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&title, MAX_HEADER)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&lines.join("\n"), MAX_SECTION)}}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(&context, MAX_CONTEXT)}]}),
    ];
    (blocks, fallback)
}

pub fn plan(alerts: &[AlertMessage], detect: &DetectConfig) -> Vec<Outgoing> {
    alerts
        .chunks(MAX_ALERTS)
        .map(|chunk| {
            let mut all = Vec::with_capacity(chunk.len() * 4);
            let mut texts = Vec::with_capacity(chunk.len());
            for (i, m) in chunk.iter().enumerate() {
                if i > 0 {
                    all.push(json!({"type": "divider"}));
                }
                let (b, text) = blocks(m, detect);
                all.extend(b);
                texts.push(text);
            }
            Outgoing {
                alert_ids: chunk.iter().map(|m| m.alert.alert_id.clone()).collect(),
                body: json!({"text": truncate(&texts.join("\n"), MAX_FALLBACK), "blocks": all}),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::notifiers::discord::tests::alert;

    #[test]
    fn an_alert_becomes_header_section_and_context_blocks() {
        let out = plan(
            &[alert("a1", "Phoebe <b> & co", Some("https://x.example/1"))],
            &DetectConfig::default(),
        );
        assert_eq!(out.len(), 1);
        let blocks = out[0].body["blocks"].as_array().expect("blocks");
        assert_eq!(blocks.len(), 3);
        let section = blocks[1]["text"]["text"].as_str().expect("text");
        assert!(section.contains("Was *$168.00* → now *$142.00*"), "{section}");
        assert!(
            section.contains("<https://x.example/1|View the listing>"),
            "{section}"
        );
        let context = blocks[2]["elements"][0]["text"].as_str().expect("context");
        assert!(context.contains("alert a1"), "{context}");
    }

    #[test]
    fn long_text_is_cut_and_messages_hold_at_most_ten_alerts() {
        let huge = "x".repeat(10_000);
        let alerts: Vec<_> = (0..12).map(|i| alert(&format!("a{i}"), &huge, None)).collect();
        let out = plan(&alerts, &DetectConfig::default());
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].alert_ids.len(), 10);
        let blocks = out[0].body["blocks"].as_array().expect("blocks");
        assert!(blocks.len() <= 50);
        assert!(
            blocks[0]["text"]["text"]
                .as_str()
                .expect("header")
                .chars()
                .count()
                <= MAX_HEADER
        );
    }
}
