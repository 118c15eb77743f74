//! Stopped variants in the store (`experiment_stops`, on SQLite or PostgreSQL), so a stop
//! holds after a restart and, on PostgreSQL, on every gateway sharing the database.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::{Connection, params};

use super::Stop;
use crate::db::{Db, PgPool};

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS experiment_stops (
    experiment TEXT NOT NULL, variant TEXT NOT NULL, reason TEXT NOT NULL, at_ms INTEGER NOT NULL,
    PRIMARY KEY (experiment, variant)
);
";

/// The PostgreSQL steps of component `experiments`.
const PG_MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "
CREATE TABLE IF NOT EXISTS experiment_stops (
    experiment TEXT NOT NULL, variant TEXT NOT NULL, reason TEXT NOT NULL, at_ms BIGINT NOT NULL,
    PRIMARY KEY (experiment, variant)
);
",
)];

/// Brings the PostgreSQL tables of experiments up to date (also done when
/// `ExperimentStates` starts).
pub fn migrate(pool: &PgPool) -> anyhow::Result<i32> {
    pool.migrate("experiments", PG_MIGRATIONS)
}

/// Where stops are kept.
pub(super) enum Place {
    Sqlite(PathBuf),
    Postgres {
        pool: Arc<PgPool>,
        /// Set once the table is known to exist.
        migrated: AtomicBool,
    },
}

impl Place {
    pub(super) fn new(db: Db) -> Place {
        match db {
            Db::Sqlite(path) => Place::Sqlite(path),
            Db::Postgres(pool) => Place::Postgres {
                pool,
                migrated: AtomicBool::new(false),
            },
        }
    }

    pub(super) fn is_postgres(&self) -> bool {
        matches!(self, Place::Postgres { .. })
    }

    /// On PostgreSQL, makes sure the table exists (once per place).
    fn ready(pool: &PgPool, migrated: &AtomicBool) -> anyhow::Result<()> {
        if !migrated.load(Ordering::Acquire) {
            migrate(pool)?;
            migrated.store(true, Ordering::Release);
        }
        Ok(())
    }

    /// Every recorded stop, with its experiment. Blocks: call it off the async runtime.
    pub(super) fn load(&self) -> Result<Vec<(String, Stop)>, String> {
        match self {
            Place::Sqlite(path) => sqlite_load(path).map_err(|e| format!("experiment stops: {e}")),
            Place::Postgres { pool, migrated } => Self::ready(pool, migrated)
                .and_then(|_| pool.with(pg_load))
                .map_err(|e| format!("experiment stops (PostgreSQL): {e:#}")),
        }
    }

    /// Records a stop (a second stop of the same variant replaces the first). Blocks: call
    /// it off the async runtime.
    pub(super) fn save(&self, experiment: &str, s: &Stop) -> Result<(), String> {
        match self {
            Place::Sqlite(path) => Connection::open(path)
                .and_then(|c| {
                    c.execute_batch(SQLITE_SCHEMA)?;
                    c.execute(
                        "INSERT OR REPLACE INTO experiment_stops VALUES (?1, ?2, ?3, ?4)",
                        params![experiment, s.variant, s.reason, s.at_ms],
                    )
                })
                .map(drop)
                .map_err(|e| e.to_string()),
            Place::Postgres { pool, migrated } => Self::ready(pool, migrated)
                .and_then(|_| {
                    pool.with(|c| {
                    c.execute(
                        "INSERT INTO experiment_stops (experiment, variant, reason, at_ms) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (experiment, variant) DO UPDATE SET reason = EXCLUDED.reason, at_ms = EXCLUDED.at_ms",
                        &[&experiment, &s.variant, &s.reason, &s.at_ms],
                    )?;
                    Ok(())
                })
                })
                .map_err(|e| format!("{e:#}")),
        }
    }
}

fn sqlite_load(path: &std::path::Path) -> rusqlite::Result<Vec<(String, Stop)>> {
    let conn = Connection::open(path)?;
    conn.execute_batch(SQLITE_SCHEMA)?;
    let mut st = conn.prepare("SELECT experiment, variant, reason, at_ms FROM experiment_stops")?;
    let rows = st.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Stop {
                variant: r.get(1)?,
                reason: r.get(2)?,
                at_ms: r.get(3)?,
            },
        ))
    })?;
    // A row that cannot be read is skipped, as before: the others still hold.
    Ok(rows.flatten().collect())
}

fn pg_load(client: &mut postgres::Client) -> anyhow::Result<Vec<(String, Stop)>> {
    client
        .query(
            "SELECT experiment, variant, reason, at_ms FROM experiment_stops ORDER BY at_ms",
            &[],
        )?
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                Stop {
                    variant: r.try_get(1)?,
                    reason: r.try_get(2)?,
                    at_ms: r.try_get(3)?,
                },
            ))
        })
        .collect()
}
