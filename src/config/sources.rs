//! Configuration of the polled marketplaces: `[sources.seatgeek]` and `[sources.ticketmaster]`,
//! their defaults, their validation and the redaction of their credentials.
//!
//! Both are off by default. Credentials are [`Secret`]s (also settable as
//! `CONSCOPE_SOURCES__SEATGEEK__CLIENT_ID`, `CONSCOPE_SOURCES__TICKETMASTER__API_KEY`, ...), and
//! base URLs are configurable so tests and proxies can stand in for the real APIs.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::validate::Problems;
use super::{BackoffConfig, Secret, SourcesConfig};

/// Retries of failed requests to a marketplace API (429, 5xx, timeouts). Slower than Kafka's:
/// these are someone else's servers.
fn api_backoff() -> BackoffConfig {
    BackoffConfig {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
        multiplier: 2.0,
        jitter: 0.2,
        deadline: Duration::from_secs(300),
    }
}

/// The SeatGeek Platform API v2 poller (`GET {base_url}/2/events`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeatGeekConfig {
    /// Run the poller inside `conscope run`.
    pub enabled: bool,
    /// API root, without a trailing `/2/events`.
    pub base_url: String,
    /// The `client_id` query parameter (a secret).
    pub client_id: Secret,
    /// The optional `client_secret` query parameter (a secret); empty sends none.
    pub client_secret: Secret,
    /// Watched events by SeatGeek event id (`id=1,2,3`).
    #[serde(deserialize_with = "numeric_ids")]
    pub event_ids: Vec<u64>,
    /// Watched performers: every event of each slug (`performers.slug=`).
    pub performer_slugs: Vec<String>,
    /// Free-text searches (`q=`), one query each.
    pub queries: Vec<String>,
    /// Events per page (`per_page`).
    pub per_page: u32,
    /// Pages read at most per query in one poll, a bound on one cycle's calls.
    pub max_pages: u32,
    /// Time between the starts of two polls.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Upper bound on one HTTP request, body included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Retries of 429, 403, 5xx and timeouts; a `Retry-After` header wins over the delay.
    pub backoff: BackoffConfig,
}

impl Default for SeatGeekConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://api.seatgeek.com".into(),
            client_id: Secret::default(),
            client_secret: Secret::default(),
            event_ids: Vec::new(),
            performer_slugs: Vec::new(),
            queries: Vec::new(),
            per_page: 50,
            max_pages: 10,
            interval: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            backoff: api_backoff(),
        }
    }
}

/// The Ticketmaster Discovery API v2 poller (`GET {base_url}/discovery/v2/events.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketmasterConfig {
    /// Run the poller inside `conscope run`.
    pub enabled: bool,
    /// API root, without `/discovery/v2`.
    pub base_url: String,
    /// The `apikey` query parameter (a secret).
    pub api_key: Secret,
    /// Watched events by Ticketmaster event id (`id=`).
    pub event_ids: Vec<String>,
    /// Keyword searches (`keyword=`), one query each.
    pub keywords: Vec<String>,
    /// Watched attractions (artists, teams) by id (`attractionId=`).
    pub attraction_ids: Vec<String>,
    /// Events per page (`size`); deep paging stops before `size * page` reaches 1000.
    pub page_size: u32,
    /// Time between the starts of two polls.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Upper bound on one HTTP request, body included.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Calls allowed per UTC day; `Rate-Limit-Available`/`Rate-Limit-Reset` headers refine it.
    pub daily_quota: u32,
    /// Calls allowed per second.
    pub requests_per_second: f64,
    /// Retries of 429, 5xx and timeouts; a quota violation waits for the quota's reset instead.
    pub backoff: BackoffConfig,
}

impl Default for TicketmasterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "https://app.ticketmaster.com".into(),
            api_key: Secret::default(),
            event_ids: Vec::new(),
            keywords: Vec::new(),
            attraction_ids: Vec::new(),
            page_size: 100,
            interval: Duration::from_secs(1800),
            request_timeout: Duration::from_secs(10),
            daily_quota: 5_000,
            requests_per_second: 5.0,
            backoff: api_backoff(),
        }
    }
}

/// SeatGeek ids as TOML integers or as numeric strings (environment overrides are strings).
fn numeric_ids<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u64),
        Text(String),
    }
    Vec::<Id>::deserialize(d)?
        .into_iter()
        .map(|id| match id {
            Id::Number(n) => Ok(n),
            Id::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a numeric event id"))),
        })
        .collect()
}

impl SourcesConfig {
    /// Replace every poller credential by the redaction marker (for printing).
    pub(super) fn redact_secrets(&mut self) {
        let sg = &mut self.seatgeek;
        sg.client_id = sg.client_id.redacted_marker();
        sg.client_secret = sg.client_secret.redacted_marker();
        let tm = &mut self.ticketmaster;
        tm.api_key = tm.api_key.redacted_marker();
    }
}

fn check_base_url(p: &mut Problems, url: &str, key: &str) {
    p.check(
        (url.starts_with("http://") || url.starts_with("https://")) && !url.contains(['?', '#']),
        key,
        "must be an http:// or https:// URL without a query",
    );
}

/// Problems of the poller sections. Credentials and a watch list are required only when the
/// poller is enabled, so the defaults stay valid.
pub(super) fn validate(s: &SourcesConfig, p: &mut Problems) {
    let sg = &s.seatgeek;
    check_base_url(p, &sg.base_url, "sources.seatgeek.base_url");
    p.check(
        (1..=1_000).contains(&sg.per_page),
        "sources.seatgeek.per_page",
        "must be between 1 and 1000",
    );
    p.check(
        sg.max_pages >= 1,
        "sources.seatgeek.max_pages",
        "must be at least 1",
    );
    p.positive_duration(sg.interval, "sources.seatgeek.interval");
    p.positive_duration(sg.request_timeout, "sources.seatgeek.request_timeout");
    p.backoff(&sg.backoff, "sources.seatgeek.backoff");
    if sg.enabled {
        p.check(
            !sg.client_id.expose().trim().is_empty(),
            "sources.seatgeek.client_id",
            "must be set when the poller is enabled (or CONSCOPE_SOURCES__SEATGEEK__CLIENT_ID)",
        );
        p.check(
            !(sg.event_ids.is_empty() && sg.performer_slugs.is_empty() && sg.queries.is_empty()),
            "sources.seatgeek.event_ids",
            "watch something: set event_ids, performer_slugs or queries",
        );
    }
    for (i, slug) in sg.performer_slugs.iter().enumerate() {
        p.check(
            !slug.trim().is_empty(),
            &format!("sources.seatgeek.performer_slugs[{i}]"),
            "must not be empty",
        );
    }
    for (i, q) in sg.queries.iter().enumerate() {
        p.check(
            !q.trim().is_empty(),
            &format!("sources.seatgeek.queries[{i}]"),
            "must not be empty",
        );
    }

    let tm = &s.ticketmaster;
    check_base_url(p, &tm.base_url, "sources.ticketmaster.base_url");
    p.check(
        (1..=200).contains(&tm.page_size),
        "sources.ticketmaster.page_size",
        "must be between 1 and 200",
    );
    p.positive_duration(tm.interval, "sources.ticketmaster.interval");
    p.positive_duration(tm.request_timeout, "sources.ticketmaster.request_timeout");
    p.check(
        tm.daily_quota >= 1,
        "sources.ticketmaster.daily_quota",
        "must be at least 1 call a day",
    );
    p.check(
        tm.requests_per_second.is_finite() && tm.requests_per_second > 0.0,
        "sources.ticketmaster.requests_per_second",
        "must be more than 0 calls per second",
    );
    p.backoff(&tm.backoff, "sources.ticketmaster.backoff");
    if tm.enabled {
        p.check(
            !tm.api_key.expose().trim().is_empty(),
            "sources.ticketmaster.api_key",
            "must be set when the poller is enabled (or CONSCOPE_SOURCES__TICKETMASTER__API_KEY)",
        );
        p.check(
            !(tm.event_ids.is_empty() && tm.keywords.is_empty() && tm.attraction_ids.is_empty()),
            "sources.ticketmaster.event_ids",
            "watch something: set event_ids, keywords or attraction_ids",
        );
    }
    for (key, list) in [
        ("event_ids", &tm.event_ids),
        ("keywords", &tm.keywords),
        ("attraction_ids", &tm.attraction_ids),
    ] {
        for (i, v) in list.iter().enumerate() {
            p.check(
                !v.trim().is_empty(),
                &format!("sources.ticketmaster.{key}[{i}]"),
                "must not be empty",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Config, ConfigError};

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_commented_keys_in_config_toml_are_real_keys_with_their_default_values() {
        let shipped = include_str!("../../config.toml");
        let start = shipped.find("[sources.seatgeek]").expect("seatgeek section");
        let end = shipped.find("\n[web]").expect("web section");
        let uncommented: String = shipped[start..end]
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|rest| rest.starts_with('[') || rest.contains(" = "))
                    .unwrap_or(l)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let config = Config::from_toml_str(&uncommented, "config.toml", Vec::new()).expect("valid");
        let defaults = Config::default();
        let show = |c: &Config| {
            format!(
                "{}{}",
                toml::to_string(&c.sources.seatgeek.backoff).expect("toml"),
                toml::to_string(&c.sources.ticketmaster.backoff).expect("toml")
            )
        };
        assert_eq!(show(&config), show(&defaults));
        let (sg, tm) = (&config.sources.seatgeek, &config.sources.ticketmaster);
        assert_eq!(sg.event_ids, [6_543_210]);
        assert_eq!(tm.keywords, ["phoebe bridgers"]);
        assert_eq!(
            (sg.per_page, sg.max_pages, sg.interval),
            (50, 10, Duration::from_secs(300))
        );
        assert_eq!((tm.page_size, tm.daily_quota), (100, 5_000));
        assert_eq!(tm.interval, Duration::from_secs(1_800));
        assert_eq!(sg.base_url, defaults.sources.seatgeek.base_url);
        assert_eq!(tm.base_url, defaults.sources.ticketmaster.base_url);
    }

    #[test]
    fn pollers_are_off_by_default_and_the_defaults_are_valid() {
        let config = Config::from_toml_str("", "t", Vec::new()).expect("valid");
        assert!(!config.sources.seatgeek.enabled);
        assert!(!config.sources.ticketmaster.enabled);
        assert_eq!(config.sources.seatgeek.base_url, "https://api.seatgeek.com");
        assert_eq!(
            config.sources.ticketmaster.base_url,
            "https://app.ticketmaster.com"
        );
        assert_eq!(config.sources.ticketmaster.daily_quota, 5_000);
        assert_eq!(config.sources.ticketmaster.requests_per_second, 5.0);
    }

    #[test]
    fn an_enabled_poller_without_credentials_or_watch_list_names_both_keys() {
        let err = Config::from_toml_str(
            "[sources.seatgeek]\nenabled = true\n[sources.ticketmaster]\nenabled = true\npage_size = 500\n",
            "t",
            Vec::new(),
        )
        .expect_err("incomplete");
        let ConfigError::Invalid(problems) = err else {
            panic!("expected validation problems, got {err}");
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sources.seatgeek.client_id",
                "sources.seatgeek.event_ids",
                "sources.ticketmaster.page_size",
                "sources.ticketmaster.api_key",
                "sources.ticketmaster.event_ids",
            ]
        );
    }

    #[test]
    fn credentials_and_ids_come_from_the_environment_and_are_never_printed() {
        let config = Config::from_toml_str(
            "[sources.seatgeek]\nenabled = true\nevent_ids = [6543210]\n",
            "t",
            vars(&[
                ("CONSCOPE_SOURCES__SEATGEEK__CLIENT_ID", "sg-id-very-secret"),
                (
                    "CONSCOPE_SOURCES__SEATGEEK__CLIENT_SECRET",
                    "sg-secret-very-secret",
                ),
                ("CONSCOPE_SOURCES__TICKETMASTER__API_KEY", "tm-key-very-secret"),
                (
                    "CONSCOPE_SOURCES__TICKETMASTER__EVENT_IDS",
                    "vvG1IZ9KBdZ7Yq, G5v0Z9",
                ),
            ]),
        )
        .expect("valid");
        assert_eq!(config.sources.seatgeek.event_ids, [6_543_210]);
        assert_eq!(config.sources.seatgeek.client_id.expose(), "sg-id-very-secret");
        assert_eq!(
            config.sources.ticketmaster.event_ids,
            ["vvG1IZ9KBdZ7Yq", "G5v0Z9"]
        );
        let printed = format!("{}{config:?}", config.redacted_toml());
        assert!(!printed.contains("very-secret"), "{printed}");

        let ids = Config::from_toml_str(
            "",
            "t",
            vars(&[("CONSCOPE_SOURCES__SEATGEEK__EVENT_IDS", "1,22")]),
        )
        .expect("numeric strings are ids");
        assert_eq!(ids.sources.seatgeek.event_ids, [1, 22]);
        let bad = Config::from_toml_str("[sources.seatgeek]\nevent_ids = [\"x1\"]\n", "t", Vec::new())
            .expect_err("not a number");
        assert!(bad.to_string().contains("sources.seatgeek.event_ids"), "{bad}");
    }
}
