//! The API's error answer: a status and `{"error": "one sentence"}`.
//!
//! Bad input is a 4xx naming what was wrong; Postgres being unreachable or slow is a 503; only
//! a failure ConScope cannot explain (a query bug) is a 500. Messages never carry secrets: the
//! database URL, the API token and driver details stay in the log.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::logging;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let unavailable = match &e {
            StoreError::Connect { .. } => true,
            // Class 08: connection exceptions; 57: operator intervention (statement timeout,
            // shutdown); 53: insufficient resources. Anything else is a bug worth a 500.
            StoreError::Query { source, .. } => {
                source.0.is_closed()
                    || source.0.code().is_none_or(|c| {
                        let code = c.code();
                        code.starts_with("08") || code.starts_with("57") || code.starts_with("53")
                    })
            }
            _ => false,
        };
        if unavailable {
            tracing::warn!(error = %logging::chain(&e), "web query failed: database unavailable");
            Self::unavailable("database unavailable")
        } else {
            tracing::error!(error = %logging::chain(&e), "web query failed");
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(format!("bad query string: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request(format!("bad path: {}", r.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        Self::new(r.status(), r.body_text())
    }
}

/// The answer to a path no route serves.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such page or API endpoint")
}

/// The answer to a known path asked with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_a_503_without_details() {
        let e = StoreError::Connect {
            url: "postgres://app:<redacted>@db/x".into(),
            reason: "connection refused".into(),
        };
        let api = ApiError::from(e);
        assert_eq!(api.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(api.message, "database unavailable");
    }
}
