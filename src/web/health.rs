//! `/health/live` and `/health/ready`.
//!
//! Live: the process answers HTTP (200 always). Ready: Postgres answers `SELECT 1`, the broker
//! answers a metadata request, no outage of either is in progress as the engine sees it (a
//! stage still waiting for one: `Metrics::kafka_outage`, `Metrics::postgres_outage`), and the
//! total raw_prices lag is at most `web.ready_max_lag`; otherwise 503 with the reason. The two
//! probes run at once, each bounded by `web.health_timeout`. The broker probe uses the engine's
//! shared client: a probe that times out may make that client reconnect, which only happens
//! when the broker is already in trouble.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

use super::WebState;
use crate::store::{self, StoreError};

pub async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub status: &'static str,
    /// Why the instance is not ready (absent when it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub postgres: Check,
    pub kafka: Check,
    pub lag: LagCheck,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The outage the engine is waiting out, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage: Option<OutageCheck>,
}

/// The engine's view of an outage. Its error stays in the log: a database error may name the
/// server (the URL, even redacted, never goes out here).
#[derive(Debug, Serialize)]
pub struct OutageCheck {
    /// Seconds since the first failing call.
    pub seconds: u64,
    /// The stage that saw it first.
    pub stage: &'static str,
}

impl Check {
    /// Add what the engine knows: a stage waiting for this dependency makes it not ok.
    fn with_outage(mut self, outage: &crate::backoff::Outage) -> Self {
        if let Some(now) = outage.now() {
            if self.ok {
                self.ok = false;
                self.error = Some(format!(
                    "{} is failing for {} (its error is in the log)",
                    outage.dependency, now.stage
                ));
            }
            self.outage = Some(OutageCheck {
                seconds: now.since.as_secs(),
                stage: now.stage,
            });
        }
        self
    }
}

/// "for 3m 12s" of an outage check, empty without one.
fn lasting(check: &Check) -> String {
    check.outage.as_ref().map_or_else(String::new, |o| {
        format!(
            " (for {})",
            humantime::format_duration(std::time::Duration::from_secs(o.seconds))
        )
    })
}

#[derive(Debug, Serialize)]
pub struct LagCheck {
    pub ok: bool,
    pub total: i64,
    pub max: u64,
}

async fn probe<F>(s: &WebState, work: F) -> Check
where
    F: Future<Output = Result<(), String>>,
{
    let limit = s.cfg.web.health_timeout;
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(())) => Check {
            ok: true,
            error: None,
            outage: None,
        },
        Ok(Err(e)) => Check {
            ok: false,
            error: Some(e),
            outage: None,
        },
        Err(_) => Check {
            ok: false,
            error: Some(format!("no answer within {}", humantime::format_duration(limit))),
            outage: None,
        },
    }
}

pub async fn ready(State(s): State<WebState>) -> (StatusCode, Json<Readiness>) {
    let pg = probe(&s, async {
        // Only the driver's reason goes out: not the URL, redacted or not.
        let c = store::client(&s.pool, &s.cfg.postgres)
            .await
            .map_err(|e| match e {
                StoreError::Connect { reason, .. } => format!("cannot connect: {reason}"),
                other => crate::logging::chain(&other).to_string(),
            })?;
        c.simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| format!("SELECT 1 failed: {}", crate::store::sqlstate::describe(&e)))
    });
    let kafka = probe(&s, async {
        s.kafka
            .list_topics()
            .await
            .map(|_| ())
            .map_err(|e| format!("broker metadata request failed: {}", crate::kafka::ClientError(e)))
    });
    let (postgres, kafka) = tokio::join!(pg, kafka);
    let postgres = postgres.with_outage(&s.metrics.postgres_outage);
    let kafka = kafka.with_outage(&s.metrics.kafka_outage);
    let total: i64 = s.metrics.snapshot().lag.values().sum();
    let max = s.cfg.web.ready_max_lag;
    let lag = LagCheck {
        ok: total <= i64::try_from(max).unwrap_or(i64::MAX),
        total,
        max,
    };
    let error = if !postgres.ok {
        Some(format!("PostgreSQL is unreachable{}", lasting(&postgres)))
    } else if !kafka.ok {
        Some(format!("the Kafka broker is unreachable{}", lasting(&kafka)))
    } else if !lag.ok {
        Some(format!(
            "ingest lag {total} records is above web.ready_max_lag {max}"
        ))
    } else {
        None
    };
    let code = if error.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let status = if error.is_some() { "not ready" } else { "ready" };
    (
        code,
        Json(Readiness {
            status,
            error,
            postgres,
            kafka,
            lag,
        }),
    )
}
