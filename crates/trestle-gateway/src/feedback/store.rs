//! Where feedback is kept: `feedback` in the SQLite file, or in the PostgreSQL database
//! several gateways share, with the same column names in each (the conversation view and
//! trace filters read it on both). A trace's meta and answer are read from the trace store's
//! `requests`, which is in the same place.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use super::TraceMeta;
use crate::db::{Db, PgPool};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value_num REAL,
    value_text TEXT,
    negative INTEGER NOT NULL DEFAULT 0,
    comment TEXT,
    correction TEXT,
    source TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    route TEXT,
    conversation_id TEXT,
    experiment TEXT,
    variant TEXT,
    prompt_version TEXT
);
CREATE INDEX IF NOT EXISTS feedback_trace ON feedback (trace_id);
CREATE INDEX IF NOT EXISTS feedback_conversation ON feedback (conversation_id);
CREATE INDEX IF NOT EXISTS feedback_experiment ON feedback (experiment, variant, name);
";

/// One piece of feedback to keep.
pub(super) struct Row {
    pub id: String,
    pub trace_id: String,
    pub name: String,
    pub value_num: Option<f64>,
    pub value_text: Option<String>,
    pub negative: bool,
    pub comment: Option<String>,
    pub correction: Option<String>,
    pub source: &'static str,
    pub meta: TraceMeta,
}

/// The columns feedback is listed with, in this order, on both backends.
const LIST_COLUMNS: &str = "id, trace_id, name, value_num, value_text, negative, comment, \
     correction, source, created_at_ms, route, conversation_id, experiment, variant, prompt_version";

/// A listed row, read the same from either backend.
struct Listed {
    id: String,
    trace_id: String,
    name: String,
    value_num: Option<f64>,
    value_text: Option<String>,
    negative: bool,
    comment: Option<String>,
    correction: Option<String>,
    source: String,
    created_at_ms: i64,
    route: Option<String>,
    conversation_id: Option<String>,
    experiment: Option<String>,
    variant: Option<String>,
    prompt_version: Option<String>,
}

impl Listed {
    /// As `GET /v1/feedback` answers it: `value` is the text, else the number.
    fn json(self) -> Value {
        json!({
            "id": self.id, "trace_id": self.trace_id, "name": self.name,
            "value": self.value_text.map(Value::String).unwrap_or_else(|| json!(self.value_num)),
            "negative": self.negative, "comment": self.comment, "correction": self.correction,
            "source": self.source, "created_at_ms": self.created_at_ms, "route": self.route,
            "conversation_id": self.conversation_id, "experiment": self.experiment,
            "variant": self.variant, "prompt_version": self.prompt_version,
        })
    }
}

pub(super) enum Store {
    Sqlite(Mutex<Connection>),
    Postgres(Arc<PgPool>),
}

impl Store {
    /// Opens the SQLite file, or brings PostgreSQL's table up to date. May be called from
    /// inside the async runtime: PostgreSQL is migrated on a thread of its own.
    pub(super) fn open(db: Db) -> anyhow::Result<Store> {
        match db {
            Db::Sqlite(path) => {
                let open = || -> rusqlite::Result<Connection> {
                    let c = Connection::open(&path)?;
                    c.busy_timeout(Duration::from_secs(5))?;
                    c.execute_batch(SCHEMA)?;
                    Ok(c)
                };
                let conn = open().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Ok(Store::Sqlite(Mutex::new(conn)))
            }
            Db::Postgres(pool) => {
                std::thread::scope(|s| s.spawn(|| pool.migrate("feedback", pg::MIGRATIONS)).join())
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("migrating feedback panicked")))?;
                Ok(Store::Postgres(pool))
            }
        }
    }

    fn lock(conn: &Mutex<Connection>) -> Result<std::sync::MutexGuard<'_, Connection>, String> {
        conn.lock()
            .map_err(|_| "feedback store poisoned".to_string())
    }

    /// What the trace store has of a trace; `None` when it has no such trace (or, on
    /// SQLite, cannot be read, as before PostgreSQL). A PostgreSQL failure is an error, so
    /// an outage is not answered as "no trace".
    pub(super) fn trace_meta(&self, trace_id: &str) -> Result<Option<TraceMeta>, String> {
        match self {
            Store::Sqlite(conn) => {
                let Ok(conn) = conn.lock() else {
                    return Ok(None);
                };
                Ok(conn
                    .query_row(
                        "SELECT route, conversation_id, experiment, variant, prompt_version, tenant FROM requests WHERE trace_id = ?1 LIMIT 1",
                        [trace_id],
                        |r| {
                        Ok(TraceMeta {
                            route: r.get(0)?,
                            conversation_id: r.get(1)?,
                            experiment: r.get(2)?,
                            variant: r.get(3)?,
                            prompt_version: r.get(4)?,
                            tenant: r.get(5)?,
                        })
                    },
                    )
                    .optional()
                    .ok()
                    .flatten())
            }
            Store::Postgres(pool) => pool
                .with(|c| pg::meta(c, trace_id))
                .map_err(|e| format!("feedback store: reading trace {trace_id}: {e:#}")),
        }
    }

    /// The response body of a trace, from the store.
    pub(super) fn response(&self, trace_id: &str) -> Option<String> {
        match self {
            Store::Sqlite(conn) => conn
                .lock()
                .ok()?
                .query_row(
                    "SELECT response FROM requests WHERE trace_id = ?1 AND response IS NOT NULL LIMIT 1",
                    [trace_id],
                    |r| r.get(0),
                )
                .optional()
                .ok()
                .flatten(),
            Store::Postgres(pool) => pool
                .with(|c| pg::response(c, trace_id))
                .map_err(|e| tracing::warn!("feedback store: reading trace {trace_id}: {e:#}"))
                .ok()
                .flatten(),
        }
    }

    /// Inserts a row; `Ok(false)` when a row with its id exists already (a retry).
    pub(super) fn insert(&self, r: &Row) -> Result<bool, String> {
        let now = crate::store::now_ms();
        match self {
            Store::Sqlite(conn) => {
                let n = Self::lock(conn)?
                    .execute(
                        "INSERT OR IGNORE INTO feedback (id, trace_id, name, value_num, value_text, negative, comment, correction, source, created_at_ms,
                                                         route, conversation_id, experiment, variant, prompt_version)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                        params![
                            r.id, r.trace_id, r.name, r.value_num, r.value_text, r.negative, r.comment, r.correction, r.source, now,
                            r.meta.route, r.meta.conversation_id, r.meta.experiment, r.meta.variant, r.meta.prompt_version
                        ],
                    )
                    .map_err(|e| format!("feedback store: {e}"))?;
                Ok(n == 1)
            }
            Store::Postgres(pool) => pool
                .with(|c| pg::insert(c, r, now))
                .map_err(|e| format!("feedback store: {e:#}")),
        }
    }

    /// Feedback on a trace or a conversation (either filter may be absent), oldest first,
    /// at most 1000.
    pub(super) fn list(
        &self,
        trace_id: Option<&str>,
        conversation_id: Option<&str>,
    ) -> Result<Vec<Value>, String> {
        match self {
            Store::Sqlite(conn) => sqlite_list(&*Self::lock(conn)?, trace_id, conversation_id)
                .map_err(|e| e.to_string()),
            Store::Postgres(pool) => pool
                .with(|c| pg::list(c, trace_id, conversation_id))
                .map_err(|e| format!("feedback store: {e:#}")),
        }
    }
}

fn sqlite_list(
    conn: &Connection,
    trace_id: Option<&str>,
    conversation_id: Option<&str>,
) -> rusqlite::Result<Vec<Value>> {
    let mut st = conn.prepare(&format!(
        "SELECT {LIST_COLUMNS}
         FROM feedback WHERE (?1 IS NULL OR trace_id = ?1) AND (?2 IS NULL OR conversation_id = ?2)
         ORDER BY created_at_ms, rowid LIMIT 1000"
    ))?;
    let rows = st.query_map(params![trace_id, conversation_id], |r| {
        Ok(Listed {
            id: r.get(0)?,
            trace_id: r.get(1)?,
            name: r.get(2)?,
            value_num: r.get::<_, Option<f64>>(3).ok().flatten(),
            value_text: r.get(4)?,
            negative: r.get(5)?,
            comment: r.get(6)?,
            correction: r.get(7)?,
            source: r.get(8)?,
            created_at_ms: r.get(9)?,
            route: r.get(10)?,
            conversation_id: r.get(11)?,
            experiment: r.get(12)?,
            variant: r.get(13)?,
            prompt_version: r.get(14)?,
        }
        .json())
    })?;
    rows.collect()
}

/// Brings the `feedback` tables in PostgreSQL up to date (`trestle migrate`).
pub fn migrate(pool: &crate::db::PgPool) -> anyhow::Result<i32> {
    pool.migrate("feedback", pg::MIGRATIONS)
}

/// `feedback` on PostgreSQL: the SQLite table's columns, in PostgreSQL's types.
mod pg {
    use postgres::Client;
    use postgres::error::SqlState;
    use serde_json::Value;

    use super::{LIST_COLUMNS, Listed, Row, TraceMeta};

    /// Each step brings the table from the version before it; a released step is never
    /// changed, a later one is added.
    pub(super) const MIGRATIONS: &[(i32, &str)] = &[(1, SCHEMA_1)];

    /// `negative` is a BOOLEAN (SQLite keeps 0 or 1); readers that want a number cast it
    /// (`negative::int`).
    const SCHEMA_1: &str = "
CREATE TABLE IF NOT EXISTS feedback (
    id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value_num DOUBLE PRECISION,
    value_text TEXT,
    negative BOOLEAN NOT NULL DEFAULT FALSE,
    comment TEXT,
    correction TEXT,
    source TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    route TEXT,
    conversation_id TEXT,
    experiment TEXT,
    variant TEXT,
    prompt_version TEXT
);
CREATE INDEX IF NOT EXISTS feedback_trace ON feedback (trace_id);
CREATE INDEX IF NOT EXISTS feedback_conversation ON feedback (conversation_id);
CREATE INDEX IF NOT EXISTS feedback_experiment ON feedback (experiment, variant, name);
";

    /// No trace was ever stored: `requests` is made by the trace store's migration.
    fn no_requests_table(e: &postgres::Error) -> bool {
        e.code() == Some(&SqlState::UNDEFINED_TABLE)
    }

    pub(super) fn meta(c: &mut Client, trace_id: &str) -> anyhow::Result<Option<TraceMeta>> {
        let row = c.query_opt(
            "SELECT route, conversation_id, experiment, variant, prompt_version, tenant \
             FROM requests WHERE trace_id = $1 LIMIT 1",
            &[&trace_id],
        );
        let row = match row {
            Ok(row) => row,
            Err(e) if no_requests_table(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        row.map(|r| {
            Ok(TraceMeta {
                route: r.try_get(0)?,
                conversation_id: r.try_get(1)?,
                experiment: r.try_get(2)?,
                variant: r.try_get(3)?,
                prompt_version: r.try_get(4)?,
                tenant: r.try_get(5)?,
            })
        })
        .transpose()
    }

    pub(super) fn response(c: &mut Client, trace_id: &str) -> anyhow::Result<Option<String>> {
        let row = c.query_opt(
            "SELECT response FROM requests WHERE trace_id = $1 AND response IS NOT NULL LIMIT 1",
            &[&trace_id],
        );
        match row {
            Ok(row) => Ok(row.map(|r| r.try_get(0)).transpose()?),
            Err(e) if no_requests_table(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn insert(c: &mut Client, r: &Row, now: i64) -> anyhow::Result<bool> {
        let n = c.execute(
            "INSERT INTO feedback (id, trace_id, name, value_num, value_text, negative, comment, correction, source, created_at_ms, \
                                   route, conversation_id, experiment, variant, prompt_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT (id) DO NOTHING",
            &[
                &r.id, &r.trace_id, &r.name, &r.value_num, &r.value_text, &r.negative, &r.comment,
                &r.correction, &r.source, &now, &r.meta.route, &r.meta.conversation_id,
                &r.meta.experiment, &r.meta.variant, &r.meta.prompt_version,
            ],
        )?;
        Ok(n == 1)
    }

    /// Rows inserted in the same millisecond come back by id (PostgreSQL has no rowid).
    pub(super) fn list(
        c: &mut Client,
        trace_id: Option<&str>,
        conversation_id: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let rows = c.query(
            &format!(
                "SELECT {LIST_COLUMNS} FROM feedback \
                 WHERE ($1::text IS NULL OR trace_id = $1) AND ($2::text IS NULL OR conversation_id = $2) \
                 ORDER BY created_at_ms, id LIMIT 1000"
            ),
            &[&trace_id, &conversation_id],
        )?;
        rows.iter()
            .map(|r| {
                Ok(Listed {
                    id: r.try_get(0)?,
                    trace_id: r.try_get(1)?,
                    name: r.try_get(2)?,
                    value_num: r.try_get(3)?,
                    value_text: r.try_get(4)?,
                    negative: r.try_get(5)?,
                    comment: r.try_get(6)?,
                    correction: r.try_get(7)?,
                    source: r.try_get(8)?,
                    created_at_ms: r.try_get(9)?,
                    route: r.try_get(10)?,
                    conversation_id: r.try_get(11)?,
                    experiment: r.try_get(12)?,
                    variant: r.try_get(13)?,
                    prompt_version: r.try_get(14)?,
                }
                .json())
            })
            .collect()
    }
}
