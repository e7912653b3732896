//! Schema migrations: the numbered files in `sql/`, embedded in the binary.
//!
//! Each migration runs in its own transaction and is recorded in `schema_migrations` with a
//! SHA-256 checksum. Applying is idempotent; a failing file rolls back and is named in the
//! error; a file edited after it was applied is refused. A session advisory lock keeps two
//! instances starting together from racing.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::StoreError;

/// One migration: its file name (which orders it) and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub file: &'static str,
    pub sql: &'static str,
}

/// ConScope's migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        file: "001_core.sql",
        sql: include_str!("../../sql/001_core.sql"),
    },
    Migration {
        file: "002_web.sql",
        sql: include_str!("../../sql/002_web.sql"),
    },
    Migration {
        file: "003_alerting.sql",
        sql: include_str!("../../sql/003_alerting.sql"),
    },
    Migration {
        file: "004_windows.sql",
        sql: include_str!("../../sql/004_windows.sql"),
    },
    Migration {
        file: "005_history_without_fk.sql",
        sql: include_str!("../../sql/005_history_without_fk.sql"),
    },
    Migration {
        file: "006_out_of_order.sql",
        sql: include_str!("../../sql/006_out_of_order.sql"),
    },
    Migration {
        file: "007_alert_redelivery.sql",
        sql: include_str!("../../sql/007_alert_redelivery.sql"),
    },
    Migration {
        file: "008_history_delivery_notes.sql",
        sql: include_str!("../../sql/008_history_delivery_notes.sql"),
    },
];

/// Arbitrary constant naming ConScope's migration lock.
const LOCK_KEY: i64 = 0x0C0_5C0BE;

/// What [`apply`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub applied: Vec<String>,
    pub already: Vec<String>,
}

pub fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Apply every migration not yet recorded, in order.
pub async fn apply(client: &mut Client, migrations: &[Migration]) -> Result<Applied, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 file       TEXT NOT NULL,
                 checksum   TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(StoreError::query("create schema_migrations"))?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(StoreError::query("take migration lock"))?;
    let result = apply_locked(client, migrations).await;
    // The lock is per session; release it even when a migration failed.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn apply_locked(client: &mut Client, migrations: &[Migration]) -> Result<Applied, StoreError> {
    let mut report = Applied::default();
    for m in migrations {
        let version = version_of(m.file)?;
        let sum = checksum(m.sql);
        let recorded = client
            .query_opt(
                "SELECT checksum FROM schema_migrations WHERE version = $1",
                &[&version],
            )
            .await
            .map_err(StoreError::query("read schema_migrations"))?;
        if let Some(row) = recorded {
            let recorded: String = row.get(0);
            if recorded != sum {
                return Err(StoreError::MigrationEdited {
                    file: m.file.into(),
                    recorded,
                    current: sum,
                });
            }
            report.already.push(m.file.into());
            continue;
        }
        let failed = |e: tokio_postgres::Error| StoreError::Migration {
            file: m.file.into(),
            reason: e
                .as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_else(|| super::sqlstate::describe(&e)),
        };
        let tx = client.transaction().await.map_err(failed)?;
        tx.batch_execute(m.sql).await.map_err(failed)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, file, checksum) VALUES ($1, $2, $3)",
            &[&version, &m.file, &sum],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(file = m.file, "migration applied");
        report.applied.push(m.file.into());
    }
    Ok(report)
}

fn version_of(file: &str) -> Result<i32, StoreError> {
    file.split('_')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| StoreError::Migration {
            file: file.into(),
            reason: "file name must start with a number, e.g. 004_windows.sql".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        let versions: Vec<i32> = MIGRATIONS
            .iter()
            .map(|m| version_of(m.file).expect("numbered"))
            .collect();
        let mut sorted = versions.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(versions, sorted);
    }
}
