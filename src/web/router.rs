//! Every route the web server answers, and the JSON fallbacks for the ones it does not.

use axum::Router;
use axum::routing::{delete, get};

use super::{WebState, api, dashboard, error, exposition, health, status, watches};

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(dashboard::index))
        .route("/assets/app.js", get(dashboard::app_js))
        .route("/assets/style.css", get(dashboard::style_css))
        .route("/api/openapi.json", get(dashboard::openapi))
        .route("/api/events", get(api::events))
        .route("/api/events/{id}/prices", get(api::prices))
        .route("/api/events/{id}/windows", get(api::windows))
        .route("/api/alerts", get(api::alerts))
        .route("/api/stats", get(api::stats))
        .route("/api/engine", get(status::engine))
        .route("/api/watches", get(watches::list).post(watches::create))
        .route("/api/watches/{id}", delete(watches::delete))
        .route("/metrics", get(exposition::metrics))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}
