//! The web layer served by `conscope run` as the supervised task `web`: the one-page dashboard,
//! the JSON API, `/metrics` and `/health`.
//!
//! ```text
//!  browser / API client / Prometheus / orchestrator
//!     │ HTTP (web.listen, loopback by default)
//!     ▼
//!  router.rs ──► dashboard.rs   /  /assets/*            (HTML + JS embedded in the binary)
//!            ├─► api.rs         /api/events, /api/stats, /api/alerts ──► store::queries ──► Postgres
//!            ├─► watches.rs     /api/watches (writes need auth.rs)  ──► store::watches
//!            ├─► status.rs      /api/engine ──► Metrics, PriceCache (live, no I/O)
//!            ├─► exposition.rs  /metrics    ──► Metrics (Prometheus text)
//!            └─► health.rs      /health/live, /health/ready ──► Postgres, broker, lag
//! ```
//!
//! Handlers read; the only writes are watches. Every error is `{"error": …}` ([`error`]).
//! Shutdown: when the token fires the listener stops accepting, in-flight requests finish, and
//! after [`DRAIN_TIMEOUT`] whatever is left is dropped.

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod error;
pub mod exposition;
pub mod health;
pub mod range;
pub mod router;
pub mod status;
pub mod watches;

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::store;
use error::ApiError;
use status::RateMeter;

/// How long in-flight requests may take to finish once shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    #[error("web.listen {listen}: cannot listen")]
    Bind { listen: String, source: std::io::Error },
    #[error("web server on {addr} failed")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What every handler shares: the application context (its fields read through `Deref`: the
/// pool is shared with the engine, and web requests hold at most `web.db_connections` of it at
/// once), the request-rate meter and the connection permits. Cheap to clone: everything is behind
/// an `Arc` or is a pool handle.
#[derive(Debug, Clone)]
pub struct WebState {
    app: App,
    pub rate: Arc<RateMeter>,
    pub started: Instant,
    db_permits: Arc<Semaphore>,
}

/// A pooled Postgres connection held by a web request, with its share of `web.db_connections`.
#[derive(Debug)]
pub struct DbConn {
    client: deadpool_postgres::Object,
    _permit: OwnedSemaphorePermit,
}

impl Deref for DbConn {
    type Target = deadpool_postgres::Object;

    fn deref(&self) -> &Self::Target {
        &self.client
    }
}

impl Deref for WebState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

impl WebState {
    /// The web's view of the application, with its own request-rate meter and connection
    /// permits.
    pub fn new(app: App) -> Self {
        let db_permits = Arc::new(Semaphore::new(app.cfg.web.db_connections.max(1)));
        Self {
            app,
            rate: Arc::default(),
            started: Instant::now(),
            db_permits,
        }
    }

    /// A Postgres connection for one request; waiting for it counts against `web.query_timeout`.
    pub async fn db(&self) -> Result<DbConn, ApiError> {
        self.bounded(async {
            let permit = self
                .db_permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ApiError::unavailable("the web server is stopping"))?;
            let client = store::client(&self.pool, &self.cfg.postgres).await?;
            Ok(DbConn {
                client,
                _permit: permit,
            })
        })
        .await
    }

    /// Run `work` under `web.query_timeout`; past it the request gets a 503.
    pub async fn bounded<T>(&self, work: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
        let limit = self.cfg.web.query_timeout;
        tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(ApiError::unavailable(format!(
                "the database did not answer within {}",
                humantime::format_duration(limit)
            )))
        })
    }
}

/// Bind `web.listen`.
pub async fn bind(cfg: &Config) -> Result<TcpListener, WebError> {
    TcpListener::bind(&cfg.web.listen)
        .await
        .map_err(|source| WebError::Bind {
            listen: cfg.web.listen.clone(),
            source,
        })
}

/// Serve the dashboard, API, metrics and health on `web.listen` until `cancel` fires.
pub async fn serve(app: App, cancel: CancellationToken) -> Result<(), WebError> {
    let listener = bind(&app.cfg).await?;
    serve_on(listener, WebState::new(app), cancel).await
}

/// Serve on a listener already bound (tests bind port 0 and read the address first).
pub async fn serve_on(
    listener: TcpListener,
    state: WebState,
    cancel: CancellationToken,
) -> Result<(), WebError> {
    let addr = listener.local_addr().map_err(|source| WebError::Bind {
        listen: state.cfg.web.listen.clone(),
        source,
    })?;
    let token_set = !state.cfg.web.api_token.is_empty();
    tracing::info!(%addr, writes_enabled = token_set, "web server listening");

    let (rate, metrics) = (state.rate.clone(), state.metrics.clone());
    let sampler_cancel = cancel.clone();
    let sampler = async move { rate.run(&metrics, sampler_cancel).await };

    let shutdown = cancel.clone().cancelled_owned();
    let server = axum::serve(listener, router::router(state)).with_graceful_shutdown(shutdown);
    let server = async move {
        // Graceful shutdown waits for open connections; a dashboard left open keeps one, so the
        // drain is bounded.
        let drain_deadline = async {
            cancel.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        tokio::select! {
            biased;
            served = server => served.map_err(|source| WebError::Serve { addr, source }),
            () = drain_deadline => {
                tracing::warn!(%addr, "web requests still open after the drain timeout; dropping them");
                Ok(())
            }
        }
    };
    let (served, ()) = tokio::join!(server, sampler);
    tracing::info!(%addr, "web server stopped");
    served
}
