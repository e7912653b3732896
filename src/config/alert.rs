//! The `[alert]` section: whether the alert task runs, where the default rule's alerts go, the
//! named notifier channels (Discord, Slack, generic webhook) with their secrets and rate limits,
//! the delivery retry deadline, and how persistent a 404/410 must be to disable a channel. Its checks live here too ([`AlertConfig::problems`]) and are
//! reported by `validate.rs` with the others.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BackoffConfig, Problem, Secret};

/// The longest delay between two delivery retries.
const MAX_BACKOFF: Duration = Duration::from_secs(86_400);
/// The longest delivery deadline (and 404 span): a year keeps every time sum in range.
const MAX_DEADLINE: Duration = Duration::from_secs(365 * 86_400);

/// Which notifier protocol a channel speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// A Discord webhook: embeds, up to 10 alerts coalesced into one message.
    Discord,
    /// A Slack incoming webhook: blocks.
    Slack,
    /// Any HTTP endpoint: one POST of the alert JSON per alert, with configured headers.
    Webhook,
}

impl NotifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discord => "discord",
            Self::Slack => "slack",
            Self::Webhook => "webhook",
        }
    }

    /// The rate limits used when a channel sets none: Discord's observed webhook limits
    /// (5 per 2 s, 30 a minute) for Discord and generic webhooks; one a second for Slack.
    pub fn default_rate_limits(self) -> Vec<RateLimit> {
        match self {
            Self::Discord | Self::Webhook => vec![
                RateLimit {
                    count: 5,
                    per: Duration::from_secs(2),
                },
                RateLimit {
                    count: 30,
                    per: Duration::from_secs(60),
                },
            ],
            Self::Slack => vec![RateLimit {
                count: 1,
                per: Duration::from_secs(1),
            }],
        }
    }
}

/// At most `count` requests in any window of `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub count: u32,
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

/// One named delivery channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    pub kind: NotifierKind,
    /// The webhook URL. Its path carries the token: a secret, never logged whole.
    pub url: Secret,
    /// Extra request headers (generic webhooks: e.g. `Authorization = "Bearer ..."`). Values
    /// are secrets.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Request limits for this webhook; when absent, the kind's defaults. Headers such as
    /// `X-RateLimit-Remaining` and 429 answers slow it down further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<Vec<RateLimit>>,
}

impl NotifierConfig {
    /// The limits in force: the configured ones or the kind's defaults.
    pub fn effective_rate_limits(&self) -> Vec<RateLimit> {
        self.rate_limits
            .clone()
            .unwrap_or_else(|| self.kind.default_rate_limits())
    }
}

/// Where the alert consumer starts on a topic partition it has no stored offset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest record still on the broker: nothing published before the first start is missed.
    Earliest,
    /// Only records produced after the first start.
    Latest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// Run the alert task inside `conscope run`.
    pub enabled: bool,
    /// Channels (names in `notifiers`) that receive every alert of the default rule (`[detect]`).
    pub default_channels: Vec<String>,
    /// A watch ignores moves smaller than this many dollars: a drop, a new low and a re-arm
    /// below the last notified price must each be at least this much. Only user watches: the
    /// default rule's dollar threshold is `detect.min_change_abs`.
    pub noise_floor: f64,
    /// Removed: deliveries retry until `backoff.deadline`, however many attempts that takes.
    /// Kept only to refuse a file that still sets it with a message naming the key.
    #[serde(default, skip_serializing)]
    pub max_attempts: Option<toml::Value>,
    /// Delays between delivery retries; `deadline` alone decides when a delivery still failing
    /// (5xx, network) is given up, counted from when it was raised or redelivered.
    pub backoff: BackoffConfig,
    /// A channel is disabled only after this many 404/410 answers in a row ...
    pub gone_to_disable: u32,
    /// ... the first of them at least this long before the last (a 404 during a deploy of the
    /// receiver is waited out).
    #[serde(with = "humantime_serde")]
    pub gone_to_disable_over: Duration,
    /// Upper bound on one HTTP request to a notifier.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How often an idle channel looks for due deliveries (new ones wake it at once).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often the active watches are reloaded from Postgres.
    #[serde(with = "humantime_serde")]
    pub watch_refresh: Duration,
    /// Fetched batches waiting to be evaluated (all alert-topic partitions share it).
    pub channel_capacity: usize,
    /// Where to start on a partition with no stored offset.
    pub start_from: StartFrom,
    /// The named channels, e.g. `[alert.notifiers.ops]`.
    pub notifiers: BTreeMap<String, NotifierConfig>,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            default_channels: Vec::new(),
            noise_floor: 1.0,
            max_attempts: None,
            backoff: BackoffConfig {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(300),
                multiplier: 2.0,
                jitter: 0.2,
                deadline: Duration::from_secs(24 * 3600),
            },
            gone_to_disable: 3,
            gone_to_disable_over: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
            watch_refresh: Duration::from_secs(5),
            channel_capacity: 8,
            start_from: StartFrom::Earliest,
            notifiers: BTreeMap::new(),
        }
    }
}

impl AlertConfig {
    /// A copy safe to print: notifier URLs and header values replaced.
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        for n in copy.notifiers.values_mut() {
            n.url = Secret::new(redact_webhook_url(n.url.expose()));
            for v in n.headers.values_mut() {
                *v = v.redacted_marker();
            }
        }
        copy
    }

    /// Every problem in `[alert]`, each with its key path.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut check = |ok: bool, key: String, message: &str| {
            if !ok {
                out.push(Problem {
                    key,
                    message: message.to_string(),
                });
            }
        };
        for (i, name) in self.default_channels.iter().enumerate() {
            check(
                self.notifiers.contains_key(name),
                format!("alert.default_channels[{i}]"),
                "names no channel in [alert.notifiers]",
            );
        }
        check(
            self.noise_floor.is_finite() && self.noise_floor >= 0.01,
            "alert.noise_floor".into(),
            "must be at least 0.01 dollars",
        );
        check(
            self.max_attempts.is_none(),
            "alert.max_attempts".into(),
            "is no longer used: a failing delivery is retried until alert.backoff.deadline \
             (default 1 day) has passed, however many attempts that takes; remove the key",
        );
        let b = &self.backoff;
        check(
            !b.initial.is_zero(),
            "alert.backoff.initial".into(),
            "must be longer than zero",
        );
        check(
            b.max >= b.initial && b.max <= MAX_BACKOFF,
            "alert.backoff.max".into(),
            "must be at least `initial` and at most 1 day",
        );
        check(
            b.multiplier.is_finite() && b.multiplier >= 1.0,
            "alert.backoff.multiplier".into(),
            "must be a number >= 1.0",
        );
        check(
            (0.0..=1.0).contains(&b.jitter),
            "alert.backoff.jitter".into(),
            "must be between 0.0 and 1.0",
        );
        check(
            !b.deadline.is_zero() && b.deadline <= MAX_DEADLINE,
            "alert.backoff.deadline".into(),
            "must be longer than zero and at most 365 days",
        );
        check(
            self.gone_to_disable >= 1,
            "alert.gone_to_disable".into(),
            "must be at least 1",
        );
        check(
            self.gone_to_disable_over <= MAX_DEADLINE,
            "alert.gone_to_disable_over".into(),
            "must be at most 365 days",
        );
        for (key, d) in [
            ("alert.request_timeout", self.request_timeout),
            ("alert.poll_interval", self.poll_interval),
            ("alert.watch_refresh", self.watch_refresh),
        ] {
            check(!d.is_zero(), key.into(), "must be longer than zero");
        }
        check(
            self.channel_capacity >= 1,
            "alert.channel_capacity".into(),
            "must be at least 1",
        );
        for (name, n) in &self.notifiers {
            let key = format!("alert.notifiers.{name}");
            check(
                !name.is_empty()
                    && name.len() <= 64
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-')),
                key.clone(),
                "channel names are 1-64 characters of lowercase letters, digits, '_' or '-'",
            );
            let url = n.url.expose();
            let parsed = reqwest::Url::parse(url).ok();
            check(
                parsed
                    .as_ref()
                    .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some()),
                format!("{key}.url"),
                "must be an http:// or https:// URL",
            );
            for header in n.headers.keys() {
                check(
                    reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_ok(),
                    format!("{key}.headers.{header}"),
                    "is not a valid HTTP header name",
                );
            }
            for (h, v) in &n.headers {
                check(
                    reqwest::header::HeaderValue::from_str(v.expose()).is_ok(),
                    format!("{key}.headers.{h}"),
                    "value is not a valid HTTP header value",
                );
            }
            if let Some(limits) = &n.rate_limits {
                check(
                    !limits.is_empty(),
                    format!("{key}.rate_limits"),
                    "must hold at least one limit (omit it for the defaults)",
                );
                for (i, l) in limits.iter().enumerate() {
                    check(
                        l.count >= 1 && !l.per.is_zero(),
                        format!("{key}.rate_limits[{i}]"),
                        "needs count >= 1 and a `per` longer than zero",
                    );
                }
            }
        }
        out
    }
}

/// A webhook URL safe to print: scheme, host and port only. The path and query of a webhook
/// carry its token, so none of them is shown (`https://discord.com/<redacted>`).
pub fn redact_webhook_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}/<redacted>", u.scheme()),
            (Some(host), None) => format!("{}://{host}/<redacted>", u.scheme()),
            _ => "<redacted>".into(),
        },
        Err(_) => "<redacted>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const FILE: &str = r#"
[alert]
enabled = true
default_channels = ["ops", "nope"]
max_attempts = 8
backoff = { initial = "1s", max = "30d", multiplier = 2.0, jitter = 0.1, deadline = "1d" }

[alert.notifiers.ops]
kind = "discord"
url = "https://discord.com/api/webhooks/123/tok-secret"

[alert.notifiers.hook]
kind = "webhook"
url = "ftp://example.com/x"
headers = { Authorization = "Bearer very-secret" }
rate_limits = [{ count = 0, per = "2s" }]
"#;

    #[test]
    fn every_alert_problem_is_reported_with_its_key_path() {
        let err = Config::from_toml_str(FILE, "t", Vec::new()).expect_err("invalid");
        let text = err.to_string();
        for expected in [
            "alert.default_channels[1]: names no channel",
            "alert.max_attempts: is no longer used",
            "alert.backoff.max: must be at least `initial` and at most 1 day",
            "alert.notifiers.hook.url: must be an http:// or https:// URL",
            "alert.notifiers.hook.rate_limits[0]: needs count >= 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
        assert!(
            !text.contains("very-secret") && !text.contains("tok-secret"),
            "{text}"
        );
    }

    #[test]
    fn a_notifier_url_can_come_from_the_environment() {
        let file = "[alert.notifiers.ops]\nkind = \"slack\"\nurl = \"https://placeholder.invalid/x\"\n";
        let vars = vec![(
            "CONSCOPE_ALERT__NOTIFIERS__OPS__URL".to_string(),
            "https://hooks.slack.com/services/T/B/real".to_string(),
        )];
        let config = Config::from_toml_str(file, "t", vars).expect("valid");
        assert_eq!(
            config.alert.notifiers["ops"].url.expose(),
            "https://hooks.slack.com/services/T/B/real"
        );
    }

    #[test]
    fn redaction_hides_the_whole_webhook_path_and_header_values() {
        assert_eq!(
            redact_webhook_url("https://discord.com/api/webhooks/123/tok?wait=true"),
            "https://discord.com/<redacted>"
        );
        assert_eq!(
            redact_webhook_url("http://127.0.0.1:9000/hook/abc"),
            "http://127.0.0.1:9000/<redacted>"
        );
        let mut config = Config::from_toml_str(
            "[alert.notifiers.ops]\nkind = \"webhook\"\nurl = \"https://h.example/t0ken\"\nheaders = { Authorization = \"Bearer s3cret\" }\n",
            "t",
            Vec::new(),
        )
        .expect("valid");
        config.alert.enabled = true;
        let text = config.redacted_toml();
        assert!(!text.contains("t0ken") && !text.contains("s3cret"), "{text}");
        assert!(text.contains("https://h.example/<redacted>"), "{text}");
    }

    #[test]
    fn how_persistent_a_404_must_be_is_configurable_with_a_minute_and_three_by_default() {
        let d = AlertConfig::default();
        assert_eq!(
            (d.gone_to_disable, d.gone_to_disable_over),
            (3, Duration::from_secs(60))
        );
        let file = "[alert]\ngone_to_disable = 5\ngone_to_disable_over = \"2m\"\n";
        let config = Config::from_toml_str(file, "t", Vec::new()).expect("valid");
        assert_eq!(config.alert.gone_to_disable, 5);
        assert_eq!(config.alert.gone_to_disable_over, Duration::from_secs(120));
        let err = Config::from_toml_str("[alert]\ngone_to_disable = 0\n", "t", Vec::new())
            .expect_err("zero refused")
            .to_string();
        assert!(err.contains("alert.gone_to_disable: must be at least 1"), "{err}");
    }

    #[test]
    fn kinds_have_rate_limit_defaults() {
        let n = NotifierConfig {
            kind: NotifierKind::Discord,
            url: Secret::new("https://discord.com/api/webhooks/1/t"),
            headers: BTreeMap::new(),
            rate_limits: None,
        };
        assert_eq!(n.effective_rate_limits().len(), 2);
        assert_eq!(n.effective_rate_limits()[0].count, 5);
    }
}
