//! The Ticketmaster poller: reads `GET {base}/discovery/v2/events.json` for the watched events
//! and turns each event's `priceRanges` into price series, within the daily call budget.
//!
//! Every `priceRanges[]` entry gives two series, its minimum and its maximum:
//!
//! | PriceEvent field | value |
//! |---|---|
//! | `source` | `ticketmaster` |
//! | `listing_id` | `<event id>:<type>_min` / `_max` (type `standard` when absent) |
//! | `event_id` | `ticketmaster_<event id>` |
//! | `event_name`, `venue`, `listing_url` | `name`, `_embedded.venues[0].name`, `url` |
//! | `event_date` | `dates.start.dateTime`; the bare `localDate` when no time is announced |
//! | `section` | `<type>_min` / `<type>_max`; `row` and `seat` are empty |
//! | `price`, `total_price` | the bound in cents, in the range's currency |
//! | `seller_notes` | `currency=<ISO code>` when given |
//! | `timestamp` | the poll time |
//!
//! Events without `priceRanges` (it is optional) are skipped and counted; a second range of a
//! type already seen for the event is dropped (its key would collide). Watches are event ids,
//! keywords and attraction ids, read page by page from page 0 while `size * page < 1000` (the
//! API's deep-paging limit). Every call takes a slot of the [`Quota`] first. A 429 quota
//! violation (`policies.ratelimit.QuotaViolation`) blocks all calls until `Rate-Limit-Reset`
//! (or `Retry-After`); other 429s, 5xx and timeouts are retried with the backoff; a 401
//! (`oauth.v2.InvalidApiKey`) is fatal: the source stops, the pipeline keeps running.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use super::http::{self, Answer, Attempt, PollError, lenient_price, price_cents};
use super::poll::{Poll, Poller};
use super::quota::Quota;
use crate::config::TicketmasterConfig;
use crate::model::{PriceEvent, PriceEventFields};
use crate::pipeline::ingest::parse::parse_time;

const API: &str = "ticketmaster";
/// The Discovery API serves no item past this index (`size * page < 1000`).
const DEEP_PAGING_LIMIT: u32 = 1_000;
/// Ids asked for in one `id=` or `attractionId=` filter.
const IDS_PER_REQUEST: usize = 20;
const QUOTA_VIOLATION: &str = "policies.ratelimit.QuotaViolation";

/// A Ticketmaster Discovery API client for the configured watch list, with its call budget.
#[derive(Debug)]
pub struct Ticketmaster {
    http: reqwest::Client,
    cfg: TicketmasterConfig,
    url: String,
    quota: Quota,
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(rename = "_embedded")]
    embedded: Option<EmbeddedEvents>,
    page: Option<PageInfo>,
}

#[derive(Debug, Deserialize)]
struct EmbeddedEvents {
    #[serde(default)]
    events: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfo {
    total_pages: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    id: String,
    name: Option<String>,
    url: Option<String>,
    dates: Option<Dates>,
    price_ranges: Option<Vec<PriceRange>>,
    #[serde(rename = "_embedded")]
    embedded: Option<EmbeddedVenues>,
}

#[derive(Debug, Deserialize)]
struct Dates {
    start: Option<Start>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Start {
    local_date: Option<String>,
    date_time: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PriceRange {
    #[serde(rename = "type")]
    kind: Option<String>,
    currency: Option<String>,
    #[serde(default, deserialize_with = "lenient_price")]
    min: Option<f64>,
    #[serde(default, deserialize_with = "lenient_price")]
    max: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct EmbeddedVenues {
    #[serde(default)]
    venues: Vec<Venue>,
}

#[derive(Debug, Deserialize)]
struct Venue {
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Fault {
    fault: Option<FaultBody>,
}

#[derive(Debug, Deserialize)]
struct FaultBody {
    detail: Option<FaultDetail>,
}

#[derive(Debug, Deserialize)]
struct FaultDetail {
    errorcode: Option<String>,
}

impl Ticketmaster {
    pub fn new(cfg: &TicketmasterConfig) -> Result<Self, PollError> {
        Ok(Self {
            http: http::client(API, cfg.request_timeout)?,
            url: format!("{}/discovery/v2/events.json", cfg.base_url.trim_end_matches('/')),
            quota: Quota::new(cfg.daily_quota, cfg.requests_per_second),
            cfg: cfg.clone(),
        })
    }

    /// The call budget (shared with every restart of the poller).
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The filters of every watch: chunks of event ids, each keyword, chunks of attraction ids.
    fn watches(&self) -> Vec<(&'static str, String)> {
        let joined = |key: &'static str, list: &[String]| -> Vec<(&'static str, String)> {
            list.chunks(IDS_PER_REQUEST)
                .map(|chunk| {
                    let trimmed: Vec<&str> = chunk.iter().map(|s| s.trim()).collect();
                    (key, trimmed.join(","))
                })
                .collect()
        };
        let mut watches = joined("id", &self.cfg.event_ids);
        watches.extend(
            self.cfg
                .keywords
                .iter()
                .map(|k| ("keyword", k.trim().to_string())),
        );
        watches.extend(joined("attractionId", &self.cfg.attraction_ids));
        watches
    }

    /// One page of one watch, within the quota, with retries.
    async fn page(&self, filter: (&str, &str), page: u32, requests: &mut u32) -> Result<Page, PollError> {
        let (size, page) = (self.cfg.page_size.to_string(), page.to_string());
        let query = [
            ("apikey", self.cfg.api_key.expose()),
            (filter.0, filter.1),
            ("size", size.as_str()),
            ("page", page.as_str()),
        ];
        let timeout = self.cfg.request_timeout;
        http::with_retries(API, &self.cfg.backoff, || {
            *requests += 1;
            let query = &query;
            async move {
                self.quota.acquire().await;
                match http::get(&self.http, API, &self.url, query, timeout).await {
                    Ok(answer) => self.judge(answer),
                    Err(error) => Attempt::Retry { error, after: None },
                }
            }
        })
        .await
    }

    fn judge(&self, answer: Answer) -> Attempt<Page> {
        let status = answer.status;
        let reset = header_number::<i64>(&answer.headers, "rate-limit-reset");
        self.quota
            .observe(header_number(&answer.headers, "rate-limit-available"), reset);
        if status.is_success() {
            return match serde_json::from_slice(&answer.body) {
                Ok(page) => Attempt::Done(page),
                Err(e) => Attempt::Fail(PollError::Decode {
                    api: API,
                    message: e.to_string(),
                }),
            };
        }
        let detail = http::snippet(&answer.body, &[self.cfg.api_key.expose()]);
        if status == StatusCode::UNAUTHORIZED {
            return Attempt::Fail(PollError::Unauthorized {
                api: API,
                status: status.as_u16(),
                detail,
                key: "sources.ticketmaster.api_key",
            });
        }
        let retry_after = crate::retry_after::from_headers(&answer.headers, Utc::now());
        let error = PollError::Status {
            api: API,
            status: status.as_u16(),
            detail,
        };
        if status == StatusCode::TOO_MANY_REQUESTS
            && error_code(&answer.body).as_deref() == Some(QUOTA_VIOLATION)
        {
            let wait = self.quota.block_until_reset(reset, retry_after);
            tracing::warn!(source = API, wait = ?wait, "quota violated; waiting for its reset");
            return Attempt::Retry {
                error,
                after: Some(wait),
            };
        }
        if http::is_transient(status) {
            Attempt::Retry {
                error,
                after: retry_after,
            }
        } else {
            Attempt::Fail(error)
        }
    }
}

impl Poller for Ticketmaster {
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
        let size = self.cfg.page_size.max(1);
        for (key, value) in self.watches() {
            let mut page = 0;
            while size * page < DEEP_PAGING_LIMIT {
                let answer = self.page((key, &value), page, &mut poll.requests).await?;
                let events = answer.embedded.map(|e| e.events).unwrap_or_default();
                let count = events.len();
                for raw in events {
                    match serde_json::from_value::<Event>(raw) {
                        Ok(event) if seen.insert(event.id.clone()) => {
                            let series = price_events(&event, now);
                            if series.is_empty() {
                                tracing::debug!(source = API, event = %event.id, "no usable priceRanges; skipped");
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
                let total_pages = answer.page.and_then(|p| p.total_pages).unwrap_or(0);
                page += 1;
                if count == 0 || page >= total_pages {
                    break;
                }
            }
        }
        Ok(poll)
    }
}

fn header_number<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `fault.detail.errorcode` of an error answer.
fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Fault>(body)
        .ok()?
        .fault?
        .detail?
        .errorcode
}

/// Two PriceEvents (min and max) per usable price range of `event`.
fn price_events(event: &Event, now: DateTime<Utc>) -> Vec<PriceEvent> {
    let Some(ranges) = &event.price_ranges else {
        return Vec::new();
    };
    let name = event
        .name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .map_or_else(|| format!("Ticketmaster event {}", event.id), str::to_string);
    let venue = event
        .embedded
        .as_ref()
        .and_then(|e| e.venues.first())
        .and_then(|v| v.name.as_deref())
        .filter(|v| !v.trim().is_empty())
        .unwrap_or("unknown venue");
    let start = event.dates.as_ref().and_then(|d| d.start.as_ref());
    let event_date = start.and_then(|s| {
        s.date_time.as_deref().and_then(parse_time).or_else(|| {
            s.local_date
                .as_deref()
                .and_then(|d| parse_time(&format!("{d}T00:00:00")))
        })
    });
    let mut types = BTreeSet::new();
    let mut out = Vec::new();
    for range in ranges {
        let kind = range
            .kind
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .unwrap_or("standard");
        if !types.insert(kind.to_string()) {
            continue;
        }
        for (bound, dollars) in [("min", range.min), ("max", range.max)] {
            let Some(price) = price_cents(dollars) else {
                continue;
            };
            let series = format!("{kind}_{bound}");
            out.push(PriceEvent::from(PriceEventFields {
                event_id: format!("ticketmaster_{}", event.id).into(),
                event_name: name.clone().into(),
                venue: venue.to_string().into(),
                event_date,
                source: API.into(),
                section: series.clone().into(),
                row: Default::default(),
                seat: Default::default(),
                price,
                fees: None,
                total_price: price,
                timestamp: now,
                listing_id: Some(format!("{}:{series}", event.id).into()),
                listing_url: event.url.clone().map(Into::into),
                quantity: 1,
                delivery_method: None,
                seller_notes: range
                    .currency
                    .as_ref()
                    .map(|c| format!("currency={c}"))
                    .map(Into::into),
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::ingest::parse::Parser;
    use crate::sources::feed::to_wire_json;

    const PHOEBE: &str = r#"{"name":"Phoebe Bridgers","id":"vvG1IZ9KBdZ7Yq",
        "url":"https://www.ticketmaster.com/event/0A00",
        "dates":{"start":{"localDate":"2026-10-03","localTime":"20:00:00","dateTime":"2026-10-04T03:00:00Z"},
        "timezone":"America/Los_Angeles","status":{"code":"onsale"}},
        "priceRanges":[{"type":"standard","currency":"USD","min":59.5,"max":189.5},
                       {"type":"resale","currency":"USD","min":80,"max":null},
                       {"type":"standard","currency":"USD","min":1,"max":2}],
        "_embedded":{"venues":[{"id":"KovZpZAEdFtJ","name":"Kia Forum","city":{"name":"Inglewood"}}]}}"#;

    fn event(json: &str) -> Event {
        serde_json::from_str(json).expect("event json")
    }

    #[test]
    fn price_ranges_become_min_and_max_series_per_type() {
        let now = Utc::now();
        let events = price_events(&event(PHOEBE), now);
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.listing_key().to_string(), e.price))
            .collect();
        assert_eq!(
            got,
            [
                ("ticketmaster:vvG1IZ9KBdZ7Yq:standard_min".to_string(), 5_950),
                ("ticketmaster:vvG1IZ9KBdZ7Yq:standard_max".to_string(), 18_950),
                ("ticketmaster:vvG1IZ9KBdZ7Yq:resale_min".to_string(), 8_000),
            ]
        );
        let first = &events[0];
        assert_eq!(first.event_id(), "ticketmaster_vvG1IZ9KBdZ7Yq");
        assert_eq!(first.venue(), "Kia Forum");
        assert_eq!(first.section(), "standard_min");
        assert_eq!(first.seller_notes(), Some("currency=USD"));
        assert_eq!(
            first.event_date.map(|d| d.to_rfc3339()),
            Some("2026-10-04T03:00:00+00:00".into())
        );
        let mut parser = Parser::new();
        for e in &events {
            let parsed = parser.parse(&to_wire_json(e)).expect("engine accepts it");
            assert_eq!(parsed.listing_key(), e.listing_key());
        }
    }

    #[test]
    fn missing_price_ranges_give_no_series_and_untimed_shows_keep_their_date() {
        let e = event(r#"{"id":"X1","name":"n","dates":{"start":{"localDate":"2027-01-02"}}}"#);
        assert!(price_events(&e, Utc::now()).is_empty());
        let e = event(
            r#"{"id":"X1","dates":{"start":{"localDate":"2027-01-02"}},"priceRanges":[{"min":"10","max":20}]}"#,
        );
        let events = price_events(&e, Utc::now());
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].listing_key(), "ticketmaster:X1:standard_min");
        assert_eq!(events[0].event_name(), "Ticketmaster event X1");
        assert_eq!(
            events[0].event_date.map(|d| d.to_rfc3339()),
            Some("2027-01-02T00:00:00+00:00".into())
        );
        assert_eq!(events[0].seller_notes(), None);
        assert!(price_events(&event(r#"{"id":"X2","priceRanges":[]}"#), Utc::now()).is_empty());
    }

    #[test]
    fn the_quota_violation_code_is_read_from_the_fault() {
        let body = br#"{"fault":{"faultstring":"Rate limit quota violation","detail":{"errorcode":"policies.ratelimit.QuotaViolation"}}}"#;
        assert_eq!(error_code(body).as_deref(), Some(QUOTA_VIOLATION));
        assert_eq!(error_code(b"not json"), None);
    }

    #[test]
    fn watches_cover_ids_keywords_and_attractions() {
        let cfg = TicketmasterConfig {
            event_ids: vec!["a".into(), " b ".into()],
            keywords: vec!["phoebe".into()],
            attraction_ids: vec!["K8v".into()],
            ..TicketmasterConfig::default()
        };
        let watches = Ticketmaster::new(&cfg).expect("client").watches();
        assert_eq!(
            watches,
            [
                ("id", "a,b".to_string()),
                ("keyword", "phoebe".to_string()),
                ("attractionId", "K8v".to_string()),
            ]
        );
    }
}
