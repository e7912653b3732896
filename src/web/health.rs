//! `/health/live` and `/health/ready`.
//!
//! Live: the process answers HTTP (200 always). Ready: Postgres answers `SELECT 1`, the broker
//! answers a metadata request, and the total raw_prices lag is at most `web.ready_max_lag`;
//! otherwise 503 with the reason. The two probes run at once, each bounded by
//! `web.health_timeout`. The broker probe uses the engine's shared client: a probe that times
//! out may make that client reconnect, which only happens when the broker is already in trouble.

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
        },
        Ok(Err(e)) => Check {
            ok: false,
            error: Some(e),
        },
        Err(_) => Check {
            ok: false,
            error: Some(format!("no answer within {}", humantime::format_duration(limit))),
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
                other => other.to_string(),
            })?;
        c.simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| format!("SELECT 1 failed: {e}"))
    });
    let kafka = probe(&s, async {
        s.kafka
            .list_topics()
            .await
            .map(|_| ())
            .map_err(|e| format!("broker metadata request failed: {e}"))
    });
    let (postgres, kafka) = tokio::join!(pg, kafka);
    let total: i64 = s.metrics.snapshot().lag.values().sum();
    let max = s.cfg.web.ready_max_lag;
    let lag = LagCheck {
        ok: total <= i64::try_from(max).unwrap_or(i64::MAX),
        total,
        max,
    };
    let error = if !postgres.ok {
        Some("PostgreSQL is unreachable".to_string())
    } else if !kafka.ok {
        Some("the Kafka broker is unreachable".to_string())
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
