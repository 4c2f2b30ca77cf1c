//! Versioned schema migrations, embedded in the binary and run at start.
//!
//! Several nodes may start at once: each runs the migrations in one transaction
//! that first takes a transaction-scoped advisory lock, so one node migrates while
//! the others wait and then find nothing left to do. DDL is transactional in
//! PostgreSQL, so a node killed part-way leaves the schema as it was. A migration
//! that was changed after it ran, or a schema newer than this build, stops the start
//! with a message instead of running on a schema the code does not know.

use super::error::PgError;
use tokio_postgres::Client;

/// One migration: its version, name and SQL. Append new ones; never edit one that
/// was released.
pub struct Migration {
    /// Its number: applied in order, each once.
    pub version: i32,
    /// What it does, for the schema table and the log.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// The schema this build needs, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "schema",
        sql: include_str!("migrations/0001_schema.sql"),
    },
    Migration {
        version: 2,
        name: "sync_history",
        sql: include_str!("migrations/0002_sync_history.sql"),
    },
    Migration {
        version: 3,
        name: "account_ingest_limits",
        sql: include_str!("migrations/0003_account_ingest_limits.sql"),
    },
    Migration {
        version: 4,
        name: "account_backlog_quota",
        sql: include_str!("migrations/0004_account_backlog_quota.sql"),
    },
    Migration {
        version: 5,
        name: "sled_import",
        sql: include_str!("migrations/0005_sled_import.sql"),
    },
    Migration {
        version: 6,
        name: "sled_import_nodes_since",
        sql: include_str!("migrations/0006_sled_import_nodes_since.sql"),
    },
    Migration {
        version: 7,
        name: "replays_running_index",
        sql: include_str!("migrations/0007_replays_running_index.sql"),
    },
    Migration {
        version: 8,
        name: "backlog_quota",
        sql: include_str!("migrations/0008_backlog_quota.sql"),
    },
];

/// The advisory lock every migrator takes (an arbitrary constant: "siemsync").
const LOCK_KEY: i64 = 0x7369_656d_7379_6e63;

fn checksum(sql: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, sql.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Brings the database to `migrations`; returns the versions this call applied
/// (empty when another node, or an earlier start, already did).
pub async fn migrate(client: &mut Client, migrations: &[Migration]) -> Result<Vec<i32>, PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS siemsync_migrations (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             checksum   text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let applied: Vec<(i32, String, String)> = tx
        .query(
            "SELECT version, name, checksum FROM siemsync_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let known = migrations.last().map_or(0, |m| m.version);
    if let Some((newest, name, _)) = applied.iter().rev().find(|(v, _, _)| *v > known) {
        return Err(PgError::Schema(format!(
            "the database is at schema version {newest} ({name}), newer than this siemsync knows ({known}): run a siemsync at least as new as the one that migrated it"
        )));
    }
    let mut done = Vec::new();
    for m in migrations {
        match applied.iter().find(|(v, _, _)| *v == m.version) {
            Some((_, _, sum)) if *sum != checksum(m.sql) => {
                return Err(PgError::Schema(format!(
                    "migration {} ({}) differs from the one applied to this database: a released migration must never change",
                    m.version, m.name
                )))
            }
            Some(_) => {}
            None => {
                tx.batch_execute(m.sql).await.map_err(|e| {
                    PgError::Schema(format!("migration {} ({}) failed: {}", m.version, m.name, PgError::from(e)))
                })?;
                tx.execute(
                    "INSERT INTO siemsync_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[&m.version, &m.name, &checksum(m.sql)],
                )
                .await?;
                done.push(m.version);
            }
        }
    }
    tx.commit().await?;
    if !done.is_empty() {
        log::info!("postgres: applied schema migrations {done:?}");
    }
    Ok(done)
}
