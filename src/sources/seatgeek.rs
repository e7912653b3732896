//! The SeatGeek poller: reads `GET {base}/2/events` for the watched events and turns each
//! event's price summary into price series.
//!
//! SeatGeek exposes event-level statistics, not listings, so every event gives one series per
//! price metric it reports (`lowest_price`, `median_price`, `average_price`, `highest_price`):
//!
//! | PriceEvent field | value |
//! |---|---|
//! | `source` | `seatgeek` |
//! | `listing_id` | `<event id>:<metric>` (listing key `seatgeek:6543210:lowest_price`) |
//! | `event_id` | `seatgeek_<event id>` |
//! | `event_name`, `venue`, `listing_url` | `title`, `venue.name`, `url` |
//! | `event_date` | `datetime_utc` (UTC without `Z`) |
//! | `section` | the metric name; `row` and `seat` are empty |
//! | `price`, `total_price` | the metric in cents (SeatGeek's prices include no separate fees) |
//! | `seller_notes` | `listing_count=<n>` when SeatGeek gives the count of listings on sale |
//! | `timestamp` | the poll time |
//!
//! The listing count rides in `seller_notes` rather than `quantity`, which means tickets in one
//! listing (and is bounded to 1..10000 by the engine). Unchanged prices give identical keys and
//! prices poll after poll, so the engine sees them as unchanged. Events whose `stats` are null
//! or absent, or carry no usable price, are skipped and counted (SeatGeek has restricted `stats`
//! since 2024). Watched events are read by id (`id=1,2,3`), by performer slug and by free-text
//! query, page by page (`per_page`, `page` from 1, until `meta.total`); an event found by two
//! watches is reported once. 429, 403, 5xx and timeouts are retried with the configured backoff,
//! honouring `Retry-After`; 401 means the `client_id` is refused and stops the source.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde::Deserialize;

use super::http::{self, Answer, Attempt, PollError, lenient_price, price_cents};
use super::poll::{Poll, Poller};
use crate::config::SeatGeekConfig;
use crate::model::{PriceEvent, PriceEventFields};
use crate::pipeline::ingest::parse::parse_time;

const API: &str = "seatgeek";
/// Ids asked for in one `id=` filter, which keeps URLs short.
const IDS_PER_REQUEST: usize = 50;
/// The metrics that become price series, in the order they are emitted.
const METRICS: [&str; 4] = ["lowest_price", "median_price", "average_price", "highest_price"];

/// A SeatGeek API client for the configured watch list.
#[derive(Debug)]
pub struct SeatGeek {
    http: reqwest::Client,
    cfg: SeatGeekConfig,
    url: String,
}

#[derive(Debug, Deserialize)]
struct Page {
    events: Vec<serde_json::Value>,
    meta: Option<Meta>,
}

#[derive(Debug, Deserialize)]
struct Meta {
    total: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct Event {
    id: u64,
    title: Option<String>,
    short_title: Option<String>,
    url: Option<String>,
    datetime_utc: Option<String>,
    venue: Option<Venue>,
    stats: Option<Stats>,
}

#[derive(Debug, Deserialize)]
struct Venue {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Stats {
    listing_count: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "lenient_price")]
    lowest_price: Option<f64>,
    #[serde(default, deserialize_with = "lenient_price")]
    median_price: Option<f64>,
    #[serde(default, deserialize_with = "lenient_price")]
    average_price: Option<f64>,
    #[serde(default, deserialize_with = "lenient_price")]
    highest_price: Option<f64>,
}

impl SeatGeek {
    pub fn new(cfg: &SeatGeekConfig) -> Result<Self, PollError> {
        Ok(Self {
            http: http::client(API, cfg.request_timeout)?,
            url: format!("{}/2/events", cfg.base_url.trim_end_matches('/')),
            cfg: cfg.clone(),
        })
    }

    /// The filters of every watch: one per chunk of ids, per performer slug, per query.
    fn watches(&self) -> Vec<(&'static str, String)> {
        let ids = self.cfg.event_ids.chunks(IDS_PER_REQUEST).map(|chunk| {
            let list: Vec<String> = chunk.iter().map(u64::to_string).collect();
            ("id", list.join(","))
        });
        let slugs = self
            .cfg
            .performer_slugs
            .iter()
            .map(|s| ("performers.slug", s.trim().to_string()));
        let queries = self.cfg.queries.iter().map(|q| ("q", q.trim().to_string()));
        ids.chain(slugs).chain(queries).collect()
    }

    /// One page of one watch, with retries.
    async fn page(&self, filter: (&str, &str), page: u32, requests: &mut u32) -> Result<Page, PollError> {
        let (per_page, page) = (self.cfg.per_page.to_string(), page.to_string());
        let mut query = vec![
            ("client_id", self.cfg.client_id.expose()),
            (filter.0, filter.1),
            ("per_page", per_page.as_str()),
            ("page", page.as_str()),
        ];
        if !self.cfg.client_secret.is_empty() {
            query.push(("client_secret", self.cfg.client_secret.expose()));
        }
        let timeout = self.cfg.request_timeout;
        http::with_retries(API, &self.cfg.backoff, || {
            *requests += 1;
            let call = http::get(&self.http, API, &self.url, &query, timeout);
            async move {
                match call.await {
                    Ok(answer) => self.judge(answer),
                    Err(error) => Attempt::Retry { error, after: None },
                }
            }
        })
        .await
    }

    fn judge(&self, answer: Answer) -> Attempt<Page> {
        let status = answer.status;
        if status.is_success() {
            return match serde_json::from_slice(&answer.body) {
                Ok(page) => Attempt::Done(page),
                Err(e) => Attempt::Fail(PollError::Decode {
                    api: API,
                    message: e.to_string(),
                }),
            };
        }
        let detail = http::snippet(
            &answer.body,
            &[self.cfg.client_id.expose(), self.cfg.client_secret.expose()],
        );
        if status == StatusCode::UNAUTHORIZED {
            return Attempt::Fail(PollError::Unauthorized {
                api: API,
                status: status.as_u16(),
                detail,
                key: "sources.seatgeek.client_id",
            });
        }
        let error = PollError::Status {
            api: API,
            status: status.as_u16(),
            detail,
        };
        if http::is_transient(status) || status == StatusCode::FORBIDDEN {
            Attempt::Retry {
                error,
                after: crate::retry_after::from_headers(&answer.headers, Utc::now()),
            }
        } else {
            Attempt::Fail(error)
        }
    }
}

impl Poller for SeatGeek {
    fn name(&self) -> &'static str {
        API
    }

    fn interval(&self) -> Duration {
        self.cfg.interval
    }

    async fn poll_once(&self) -> Result<Poll, PollError> {
        let now = Utc::now();
        let mut poll = Poll::default();
        let mut seen = BTreeSet::new();
        for (key, value) in self.watches() {
            for page in 1..=self.cfg.max_pages {
                let answer = self.page((key, &value), page, &mut poll.requests).await?;
                let count = answer.events.len() as u64;
                for raw in answer.events {
                    match serde_json::from_value::<Event>(raw) {
                        Ok(event) if seen.insert(event.id) => {
                            let series = price_events(&event, now);
                            if series.is_empty() {
                                tracing::debug!(source = API, event = event.id, "no usable stats; skipped");
                                poll.skipped += 1;
                            }
                            poll.events.extend(series);
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::debug!(source = API, error = %error, "unreadable event; skipped");
                            poll.skipped += 1;
                        }
                    }
                }
                let total = answer.meta.and_then(|m| m.total).unwrap_or(0);
                if count == 0 || u64::from(page) * u64::from(self.cfg.per_page) >= total {
                    break;
                }
            }
        }
        Ok(poll)
    }
}

/// One PriceEvent per usable price metric of `event` (none when `stats` is null or empty).
fn price_events(event: &Event, now: DateTime<Utc>) -> Vec<PriceEvent> {
    let Some(stats) = &event.stats else {
        return Vec::new();
    };
    let listing_count = stats.listing_count.as_ref().and_then(serde_json::Value::as_u64);
    let name = event
        .title
        .as_deref()
        .or(event.short_title.as_deref())
        .filter(|t| !t.trim().is_empty())
        .map_or_else(|| format!("SeatGeek event {}", event.id), str::to_string);
    let venue = event
        .venue
        .as_ref()
        .and_then(|v| v.name.as_deref())
        .filter(|v| !v.trim().is_empty())
        .unwrap_or("unknown venue");
    let event_date = event.datetime_utc.as_deref().and_then(parse_time);
    let values = [
        stats.lowest_price,
        stats.median_price,
        stats.average_price,
        stats.highest_price,
    ];
    METRICS
        .iter()
        .zip(values)
        .filter_map(|(metric, dollars)| {
            let price = price_cents(dollars)?;
            Some(PriceEvent::from(PriceEventFields {
                event_id: format!("seatgeek_{}", event.id).into(),
                event_name: name.clone().into(),
                venue: venue.to_string().into(),
                event_date,
                source: API.into(),
                section: (*metric).into(),
                row: Default::default(),
                seat: Default::default(),
                price,
                fees: None,
                total_price: price,
                timestamp: now,
                listing_id: Some(format!("{}:{metric}", event.id).into()),
                listing_url: event.url.clone().map(Into::into),
                quantity: 1,
                delivery_method: None,
                seller_notes: listing_count
                    .map(|n| format!("listing_count={n}"))
                    .map(Into::into),
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ingest::parse::Parser;
    use crate::sources::feed::to_wire_json;

    fn event(json: &str) -> Event {
        serde_json::from_str(json).expect("event json")
    }

    const PHOEBE: &str = r#"{"id":6543210,"type":"concert","status":"normal",
        "title":"Phoebe Bridgers with Special Guests","datetime_local":"2026-10-03T20:00:00",
        "datetime_utc":"2026-10-04T00:00:00","datetime_tbd":false,"url":"https://seatgeek.com/e/6543210",
        "venue":{"id":1187,"name":"Kia Forum","city":"Inglewood","state":"CA"},
        "performers":[{"id":88123,"name":"Phoebe Bridgers","slug":"phoebe-bridgers","primary":true}],
        "stats":{"listing_count":412,"lowest_price":74,"median_price":142,"average_price":168,
        "highest_price":1250,"lowest_price_good_deals":81}}"#;

    #[test]
    fn every_reported_metric_becomes_a_series_with_a_stable_key() {
        let now = Utc::now();
        let events = price_events(&event(PHOEBE), now);
        let keys: Vec<_> = events.iter().map(PriceEvent::listing_key).collect();
        assert_eq!(
            keys,
            [
                "seatgeek:6543210:lowest_price",
                "seatgeek:6543210:median_price",
                "seatgeek:6543210:average_price",
                "seatgeek:6543210:highest_price",
            ]
        );
        let prices: Vec<_> = events.iter().map(|e| e.price).collect();
        assert_eq!(prices, [7_400, 14_200, 16_800, 125_000]);
        let lowest = &events[0];
        assert_eq!(lowest.event_id(), "seatgeek_6543210");
        assert_eq!(lowest.event_name(), "Phoebe Bridgers with Special Guests");
        assert_eq!(lowest.venue(), "Kia Forum");
        assert_eq!(
            lowest.event_date.map(|d| d.to_rfc3339()),
            Some("2026-10-04T00:00:00+00:00".into())
        );
        assert_eq!(lowest.listing_url(), Some("https://seatgeek.com/e/6543210"));
        assert_eq!(lowest.seller_notes(), Some("listing_count=412"));
        assert_eq!(lowest.timestamp, now);
        // A second poll of unchanged stats gives the same keys and prices.
        let again = price_events(&event(PHOEBE), Utc::now());
        assert_eq!(
            again
                .iter()
                .map(|e| (e.listing_key(), e.price))
                .collect::<Vec<_>>(),
            events
                .iter()
                .map(|e| (e.listing_key(), e.price))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn null_missing_or_empty_stats_give_no_series() {
        for stats in [
            r#""stats":null"#,
            r#""stats":{}"#,
            r#""stats":{"listing_count":0,"lowest_price":null,"median_price":null}"#,
        ] {
            let json = format!(r#"{{"id":1,"title":"t","venue":{{"name":"v"}},{stats}}}"#);
            assert!(price_events(&event(&json), Utc::now()).is_empty(), "{stats}");
        }
        assert!(price_events(&event(r#"{"id":1,"title":"t"}"#), Utc::now()).is_empty());
    }

    #[test]
    fn partial_stats_give_the_metrics_present_and_fill_missing_names() {
        let e = event(r#"{"id":9,"stats":{"lowest_price":"55.5","highest_price":0}}"#);
        let events = price_events(&e, Utc::now());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].listing_key(), "seatgeek:9:lowest_price");
        assert_eq!(events[0].price, 5_550);
        assert_eq!(events[0].event_name(), "SeatGeek event 9");
        assert_eq!(events[0].venue(), "unknown venue");
        assert_eq!(events[0].event_date, None);
        assert_eq!(events[0].seller_notes(), None);
    }

    #[test]
    fn emitted_events_pass_the_engine_parser() {
        let mut parser = Parser::new();
        for e in price_events(&event(PHOEBE), Utc::now()) {
            let parsed = parser.parse(&to_wire_json(&e)).expect("engine accepts it");
            assert_eq!(parsed.listing_key(), e.listing_key());
            assert_eq!(parsed.price, e.price);
            assert_eq!(parsed.event_date, e.event_date);
        }
    }

    #[test]
    fn watches_cover_ids_slugs_and_queries() {
        let cfg = SeatGeekConfig {
            event_ids: (1..=51).collect(),
            performer_slugs: vec!["phoebe-bridgers".into()],
            queries: vec![" eras tour ".into()],
            ..SeatGeekConfig::default()
        };
        let watches = SeatGeek::new(&cfg).expect("client").watches();
        assert_eq!(watches.len(), 4);
        assert_eq!(watches[0].0, "id");
        assert!(watches[0].1.starts_with("1,2,3,") && watches[0].1.ends_with(",50"));
        assert_eq!(watches[1], ("id", "51".to_string()));
        assert_eq!(watches[2], ("performers.slug", "phoebe-bridgers".to_string()));
        assert_eq!(watches[3], ("q", "eras tour".to_string()));
    }
}
