//! HTTP plumbing shared by the marketplace pollers: the client, one GET, the retry loop,
//! `Retry-After`, and [`PollError`].
//!
//! Credentials travel in query strings, so no URL is ever put into an error or a log line:
//! reqwest errors are stripped of theirs (`without_url`) and answer bodies quoted in errors have
//! the credentials scrubbed.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::backoff::{Backoff, Verdict};
use crate::config::BackoffConfig;

/// How much of an error answer's body is quoted in the error.
const SNIPPET_CHARS: usize = 160;

/// Why one poll of a marketplace API failed. `api` names the marketplace (`seatgeek`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    #[error("{api}: cannot build the HTTP client: {message}")]
    Client { api: &'static str, message: String },
    #[error("{api}: request failed: {message}")]
    Transport { api: &'static str, message: String },
    #[error("{api}: no complete answer within {timeout:?}")]
    Timeout { api: &'static str, timeout: Duration },
    #[error("{api}: HTTP {status}: {detail}")]
    Status {
        api: &'static str,
        status: u16,
        detail: String,
    },
    #[error("{api}: the answer is not the expected JSON: {message}")]
    Decode { api: &'static str, message: String },
    #[error("{api}: the API refused the credentials (HTTP {status}: {detail}); fix {key} and restart")]
    Unauthorized {
        api: &'static str,
        status: u16,
        detail: String,
        key: &'static str,
    },
    #[error("{api}: gave up after {attempts} attempts")]
    GaveUp {
        api: &'static str,
        attempts: u32,
        #[source]
        last: Box<PollError>,
    },
}

impl PollError {
    /// A configuration problem retrying cannot fix: the source stops.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Unauthorized { .. })
    }

    /// Describe a reqwest error without its URL (which carries the credentials).
    pub fn from_reqwest(api: &'static str, error: reqwest::Error, timeout: Duration) -> Self {
        if error.is_timeout() {
            return Self::Timeout { api, timeout };
        }
        let error = error.without_url();
        let mut message = error.to_string();
        let mut cause = std::error::Error::source(&error);
        while let Some(c) = cause {
            message.push_str(": ");
            message.push_str(&c.to_string());
            cause = c.source();
        }
        Self::Transport { api, message }
    }
}

/// One answer, read completely.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP client whose every request, body included, is bounded by `timeout`.
pub fn client(api: &'static str, timeout: Duration) -> Result<reqwest::Client, PollError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("conscope/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PollError::Client {
            api,
            message: e.without_url().to_string(),
        })
}

/// `GET url?query`, read to the end. Only transport failures and timeouts are errors here;
/// what the status means is the caller's call.
pub async fn get(
    http: &reqwest::Client,
    api: &'static str,
    url: &str,
    query: &[(&str, &str)],
    timeout: Duration,
) -> Result<Answer, PollError> {
    let response = http
        .get(url)
        .query(query)
        .send()
        .await
        .map_err(|e| PollError::from_reqwest(api, e, timeout))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| PollError::from_reqwest(api, e, timeout))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// What one attempt of a request came to.
#[derive(Debug)]
pub enum Attempt<T> {
    Done(T),
    /// Worth another try: after `after` when the server said so, else after the backoff delay.
    Retry {
        error: PollError,
        after: Option<Duration>,
    },
    Fail(PollError),
}

/// Run `attempt` until it is done, fails for good, or the backoff's deadline passes, on the one
/// retry loop ([`Backoff::retry`]): a server's `Retry-After` replaces the backoff's delay.
pub async fn with_retries<T, F, Fut>(
    api: &'static str,
    policy: &BackoffConfig,
    mut attempt: F,
) -> Result<T, PollError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut backoff = Backoff::new(policy);
    let tagged = || {
        let call = attempt();
        async move {
            match call.await {
                Attempt::Done(value) => Ok(value),
                Attempt::Retry { error, after } => Err(Tagged {
                    error,
                    verdict: after.map_or(Verdict::Retry, Verdict::RetryAfter),
                }),
                Attempt::Fail(error) => Err(Tagged {
                    error,
                    verdict: Verdict::Fail,
                }),
            }
        }
    };
    match backoff.retry(api, |t: &Tagged| t.verdict, tagged).await {
        Ok(value) => Ok(value),
        Err(Tagged {
            error,
            verdict: Verdict::Fail,
        }) => Err(error),
        Err(Tagged { error, .. }) => Err(PollError::GaveUp {
            api,
            attempts: backoff.attempts(),
            last: Box::new(error),
        }),
    }
}

/// A failed attempt with how the retry loop treats it.
#[derive(Debug)]
struct Tagged {
    error: PollError,
    verdict: Verdict,
}

impl std::fmt::Display for Tagged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Tagged {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// The classic retryable answers: 429 and 5xx (callers add their own, e.g. SeatGeek's 403).
pub fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// The start of an error answer's body, on one line, with every credential replaced.
pub fn snippet(body: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        one_line = one_line.replace(secret, "<redacted>");
    }
    match one_line.char_indices().nth(SNIPPET_CHARS) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None if one_line.is_empty() => "(empty body)".into(),
        None => one_line,
    }
}

/// A price as the APIs send it: a JSON number, a numeric string, or null/absent (`None`).
pub fn lenient_price<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let value: Option<serde_json::Value> = serde::Deserialize::deserialize(d)?;
    Ok(match value {
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().trim_start_matches('$').parse().ok(),
        _ => None,
    }
    .filter(|f: &f64| f.is_finite()))
}

/// Dollars to whole cents when the price can be stored (more than 0, below the column's limit).
pub fn price_cents(dollars: Option<f64>) -> Option<i64> {
    crate::model::Cents::from_dollars(dollars?)
        .filter(|c| c.is_price())
        .map(|c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_hide_credentials_and_stay_short() {
        let body = b"{\"error\": \"bad key abc123\"}\n";
        assert_eq!(
            snippet(body, &["abc123", ""]),
            "{\"error\": \"bad key <redacted>\"}"
        );
        let long = "x".repeat(500);
        assert_eq!(snippet(long.as_bytes(), &[]).chars().count(), SNIPPET_CHARS + 1);
        assert_eq!(snippet(b"", &[]), "(empty body)");
    }

    #[test]
    fn prices_are_numbers_or_numeric_strings_and_must_be_storable() {
        #[derive(serde::Deserialize)]
        struct P {
            #[serde(default, deserialize_with = "lenient_price")]
            p: Option<f64>,
        }
        let read = |json: &str| serde_json::from_str::<P>(json).expect("json").p;
        assert_eq!(read(r#"{"p": 74}"#), Some(74.0));
        assert_eq!(read(r#"{"p": "59.50"}"#), Some(59.5));
        assert_eq!(read(r#"{"p": null}"#), None);
        assert_eq!(read(r#"{}"#), None);
        assert_eq!(read(r#"{"p": "n/a"}"#), None);
        assert_eq!(read(r#"{"p": {"x": 1}}"#), None);
        assert_eq!(price_cents(Some(59.5)), Some(5_950));
        assert_eq!(price_cents(Some(0.0)), None);
        assert_eq!(price_cents(Some(-3.0)), None);
        assert_eq!(price_cents(Some(1e12)), None);
        assert_eq!(price_cents(None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_honour_the_servers_wait_and_give_up_at_the_deadline() {
        let policy = BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(10),
            multiplier: 1.0,
            jitter: 0.0,
            deadline: Duration::from_secs(3600),
        };
        let started = tokio::time::Instant::now();
        let mut calls = 0;
        let value = with_retries("test", &policy, || {
            calls += 1;
            let n = calls;
            async move {
                if n == 1 {
                    Attempt::Retry {
                        error: PollError::Status {
                            api: "test",
                            status: 429,
                            detail: String::new(),
                        },
                        after: Some(Duration::from_secs(7)),
                    }
                } else {
                    Attempt::Done(n)
                }
            }
        })
        .await
        .expect("done");
        assert_eq!(value, 2);
        assert_eq!(started.elapsed(), Duration::from_secs(7));

        let policy = BackoffConfig {
            deadline: Duration::ZERO,
            ..policy
        };
        let err = with_retries("test", &policy, || async {
            Attempt::<()>::Retry {
                error: PollError::Timeout {
                    api: "test",
                    timeout: Duration::from_secs(1),
                },
                after: None,
            }
        })
        .await
        .expect_err("deadline");
        assert!(
            crate::logging::chain(&err)
                .to_string()
                .starts_with("test: gave up after 1 attempts: test: no complete answer"),
            "{err}"
        );
    }
}
