//! PostgreSQL storage: the connection pool, migrations ([`migrate`]), stored offsets
//! ([`offsets`]), the warm start ([`warm`]), what the web layer reads ([`queries`]) and the
//! watches it edits ([`watches`]), and what a server error means ([`sqlstate`]). The engine's
//! batch writes live with the persist stage (`pipeline::persist`).

pub mod migrate;
pub mod offsets;
pub mod queries;
pub mod sqlstate;
pub mod warm;
pub mod watches;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::config::{PostgresConfig, redact_url};
pub use sqlstate::ErrorClass;

/// A Postgres operation that failed. The URL in messages is always redacted; a server error
/// says the server's message and SQLSTATE ([`sqlstate::describe`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("invalid postgres.url {url}")]
    Url {
        url: String,
        source: tokio_postgres::Error,
    },
    #[error("cannot connect to PostgreSQL at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("PostgreSQL {operation} failed")]
    Query {
        operation: &'static str,
        source: DriverError,
    },
    #[error("sending records PostgreSQL refused to the DLQ")]
    Dlq(#[source] Box<crate::kafka::KafkaError>),
    #[error("migration {file} failed, database left as it was: {reason}")]
    Migration { file: String, reason: String },
    #[error(
        "migration {file} was edited after it was applied (recorded checksum {recorded}, file has {current}); \
         add a new migration instead of editing an applied one"
    )]
    MigrationEdited {
        file: String,
        recorded: String,
        current: String,
    },
}

/// A driver error, the last link of a [`StoreError`]'s chain: the server's message with its
/// SQLSTATE, or the driver's message with its causes ([`sqlstate::describe`]), said once and
/// never holding the connection string.
#[derive(Debug)]
pub struct DriverError(pub tokio_postgres::Error);

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&sqlstate::describe(&self.0))
    }
}

/// No `source`: [`sqlstate::describe`] already says the driver's causes.
impl std::error::Error for DriverError {}

impl StoreError {
    pub fn query(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |e| Self::Query {
            operation,
            source: DriverError(e),
        }
    }

    /// How a write that failed with this error is handled.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Query { source, .. } => sqlstate::class_of(&source.0),
            Self::Connect { .. } | Self::Dlq(_) => ErrorClass::Transient,
            _ => ErrorClass::Other,
        }
    }

    /// The SQLSTATE the server answered with, if it answered.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Query { source, .. } => source.0.as_db_error().map(|db| db.code().code()),
            _ => None,
        }
    }
}

/// Build the pool. Connections are made lazily; call [`check`] to fail fast.
pub fn pool(cfg: &PostgresConfig) -> Result<Pool, StoreError> {
    let mut pg: tokio_postgres::Config = cfg.url.expose().parse().map_err(|source| StoreError::Url {
        url: redact_url(cfg.url.expose()),
        source,
    })?;
    pg.connect_timeout(cfg.connect_timeout);
    pg.application_name("conscope");
    pg.options(format!(
        "-c statement_timeout={}",
        cfg.statement_timeout.as_millis()
    ));
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(cfg.pool_size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(cfg.connect_timeout))
        .wait_timeout(Some(cfg.connect_timeout + Duration::from_secs(5)))
        .recycle_timeout(Some(cfg.connect_timeout))
        .build()
        .map_err(|e| StoreError::Connect {
            url: redact_url(cfg.url.expose()),
            reason: crate::logging::chain(&e).to_string(),
        })
}

/// Get a connection, turning pool errors into one sentence naming the (redacted) URL.
pub async fn client(pool: &Pool, cfg: &PostgresConfig) -> Result<deadpool_postgres::Object, StoreError> {
    pool.get().await.map_err(|e| StoreError::Connect {
        url: redact_url(cfg.url.expose()),
        reason: match e {
            deadpool_postgres::PoolError::Backend(e) => sqlstate::describe(&e),
            other => other.to_string(),
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::logging::chain;

    /// A driver error whose root cause names the option `port` (the only public way to make one).
    pub(crate) fn driver_error() -> tokio_postgres::Error {
        "host=db port=notaport"
            .parse::<tokio_postgres::Config>()
            .expect_err("not a port")
    }

    #[test]
    fn a_query_or_url_error_says_its_own_context_then_the_driver_cause_once() {
        let bad_url = StoreError::Url {
            url: "postgres://app:<redacted>@db/x".into(),
            source: driver_error(),
        };
        let cases = [
            (
                StoreError::query("insert price_history")(driver_error()),
                "PostgreSQL insert price_history failed: ",
            ),
            (bad_url, "invalid postgres.url postgres://app:<redacted>@db/x: "),
        ];
        for (e, context) in cases {
            let text = chain(&e).to_string();
            assert!(text.starts_with(context), "{text}");
            assert_eq!(text.matches("`port`").count(), 1, "{text}");
        }
    }

    #[test]
    fn a_dlq_failure_says_the_kafka_cause_once() {
        let e = StoreError::Dlq(Box::new(crate::kafka::tests::broken_pipe("produce")));
        let text = chain(&e).to_string();
        assert_eq!(
            text,
            "sending records PostgreSQL refused to the DLQ: Kafka produce on raw_prices/3 failed: \
             Request error: Cannot read/write data: broken pipe"
        );
    }
}
