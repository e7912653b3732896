//! `/metrics`: the engine's registry ([`crate::metrics`]) in the Prometheus text format
//! (version 0.0.4). Names follow `conscope_<stage>_<what>_<unit>`; counters end in `_total`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::WebState;
use crate::metrics::CONTENT_TYPE;

pub async fn metrics(State(s): State<WebState>) -> impl IntoResponse {
    let text = s.metrics.encode(s.started.elapsed(), s.cache.len());
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}
