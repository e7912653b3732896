//! Every route the web server answers, and the JSON fallbacks for the ones it does not.
//!
//! The routes are one table, [`table`]: the router is built from it and [`routes`] lists it, so
//! the test that holds `openapi.json` to the server's routes sees exactly what is served.

use axum::Router;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::{WebState, api, dashboard, error, exposition, health, status, watches};

/// One row of the table: a method and path, and the handler answering them.
struct Route {
    method: Method,
    path: &'static str,
    handler: MethodRouter<WebState>,
}

fn at<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, WebState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("the table uses standard methods");
    Route {
        method,
        path,
        handler: on(filter, handler),
    }
}

fn table() -> Vec<Route> {
    vec![
        at(Method::GET, "/", dashboard::index),
        at(Method::GET, "/assets/app.js", dashboard::app_js),
        at(Method::GET, "/assets/style.css", dashboard::style_css),
        at(Method::GET, "/api/openapi.json", dashboard::openapi),
        at(Method::GET, "/api/events", api::events),
        at(Method::GET, "/api/events/{id}/prices", api::prices),
        at(Method::GET, "/api/events/{id}/windows", api::windows),
        at(Method::GET, "/api/alerts", api::alerts),
        at(Method::GET, "/api/stats", api::stats),
        at(Method::GET, "/api/engine", status::engine),
        at(Method::GET, "/api/watches", watches::list),
        at(Method::POST, "/api/watches", watches::create),
        at(Method::DELETE, "/api/watches/{id}", watches::delete),
        at(Method::GET, "/metrics", exposition::metrics),
        at(Method::GET, "/health/live", health::live),
        at(Method::GET, "/health/ready", health::ready),
    ]
}

/// Every (method, path) the router answers, in the table's order. A GET route answers HEAD too.
pub fn routes() -> Vec<(Method, &'static str)> {
    table().into_iter().map(|r| (r.method, r.path)).collect()
}

pub fn router(state: WebState) -> Router {
    table()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(state)
}
