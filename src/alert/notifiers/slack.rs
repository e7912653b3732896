//! Slack incoming webhooks: blocks (a header, a section with the details, a context line with
//! the rule and alert id) per alert, up to ten alerts per message (≤ 50 blocks). Text is
//! cut to Slack's limits (header 150, section 3000, context 2000).
//!
//! Every text that comes from a record — names, venue, seats, the rule, the alert id, the
//! listing URL — is escaped (`&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;`), so no record can write
//! a control sequence such as `<!channel>`, `<@U123>` or a link of its own. Only ConScope's own
//! `<url|View the listing>` is a link.

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
    let title = escape(&format::title(m));
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
        lines.push(format!("<{}|View the listing>", escape(url).replace('|', "%7C")));
    }
    let context = format!(
        "ConScope · rule: {} · alert {}",
        escape(&format::rule_text(m, detect)),
        escape(&a.alert_id)
    );
    let fallback = format!("{title}: now {}", format::money(a.new_price));
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

    /// Every string in a JSON value.
    fn texts(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| texts(v, out)),
            Value::Object(o) => o.values().for_each(|v| texts(v, out)),
            _ => {}
        }
    }

    #[test]
    fn no_record_text_or_url_can_mention_the_channel() {
        let mut m = alert("a<!here>1", "x", None);
        m.alert.event = std::sync::Arc::new(crate::model::PriceEvent::from(crate::model::PriceEventFields {
            event_id: "e".into(),
            event_name: "<!channel> & <@U1>".into(),
            venue: "<!everyone>".into(),
            event_date: None,
            source: "<!here|here>".into(),
            section: "<#C1>".into(),
            row: "<!subteam^S1>".into(),
            seat: ">".into(),
            price: 14_200,
            fees: None,
            total_price: 14_200,
            timestamp: chrono::DateTime::UNIX_EPOCH,
            listing_id: None,
            listing_url: Some("https://x.example/a?b=1&c=<!channel>|x".into()),
            quantity: 1,
            delivery_method: None,
            seller_notes: None,
        }));
        m.rule_description = Some("<!channel> rule".into());
        let out = plan(&[m], &DetectConfig::default());
        let mut all = Vec::new();
        texts(&out[0].body, &mut all);
        for t in &all {
            assert!(!t.contains("<!") && !t.contains("<@") && !t.contains("<#"), "{t}");
            // The only `<` left opens ConScope's own link.
            assert!(t.matches('<').count() <= 1, "{t}");
        }
        let section = out[0].body["blocks"][1]["text"]["text"]
            .as_str()
            .expect("section");
        assert!(
            section.contains("<https://x.example/a?b=1&amp;c=&lt;!channel&gt;%7Cx|View the listing>"),
            "{section}"
        );
        assert!(
            out[0].body["blocks"][0]["text"]["text"]
                .as_str()
                .is_some_and(|h| h.contains("&lt;!channel&gt; &amp; &lt;@U1&gt;"))
        );
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
