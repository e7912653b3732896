//! Generic JSON webhooks: one POST per alert whose body is the alert JSON itself (the
//! `price_alerts` value plus `rule_description`), with the channel's configured headers and an
//! `Idempotency-Key` header holding the alert id.

use super::Outgoing;
use crate::alert::{AlertMessage, format};
use crate::config::DetectConfig;

pub fn plan(alerts: &[AlertMessage], detect: &DetectConfig) -> Vec<Outgoing> {
    alerts
        .iter()
        .map(|m| {
            let mut m = m.clone();
            m.rule_description = Some(format::rule_text(&m, detect));
            Outgoing {
                alert_ids: vec![m.alert.alert_id.clone()],
                body: serde_json::to_value(&m).unwrap_or(serde_json::Value::Null),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::notifiers::discord::tests::alert;

    #[test]
    fn each_alert_is_posted_as_its_own_json() {
        let out = plan(
            &[alert("a1", "S", None), alert("a2", "S", None)],
            &DetectConfig::default(),
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].body["alert_id"], "a2");
        assert_eq!(out[0].body["old_price"], 168.0);
        assert_eq!(out[0].body["event_name"], "S");
        assert_eq!(
            out[0].body["rule_description"],
            "default (drop ≥ 10% and ≥ $5.00)"
        );
    }
}
