//! The rows behind [`super`]: `cache_answers` (the exact cache's entries, each with its
//! semantic scope, vector and query when its route has a semantic cache) and `cache_tools`,
//! in the SQLite file or in the PostgreSQL database, with the same columns in each. A row's
//! `value` is the encoding the shared caches keep in Redis ([`crate::cache::remote`]): one
//! JSON header line (who served the answer, its cost, when it was stored; a tool result's
//! content type and TTL), then the answer's or the tool result's bytes. A vector is its
//! `f32`s, little-endian. `cache_graphs` holds each semantic scope's HNSW graph as saved at
//! shutdown (fast-hnsw's file format) with the exact-cache key of each node (`u64`s,
//! little-endian), so a start after a clean stop loads graphs instead of rebuilding them.
//!
//! Every call blocks: the writer thread of [`super`] makes them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use crate::cache::remote::{ExactValue, ToolValue};
use crate::cache::semantic::Snapshot;
use crate::db::{Db, PgPool};

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS cache_answers (
    key INTEGER PRIMARY KEY,
    stored_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    value BLOB NOT NULL,
    scope INTEGER,
    vector BLOB,
    query TEXT
);
CREATE INDEX IF NOT EXISTS cache_answers_stored ON cache_answers (stored_ms);
CREATE INDEX IF NOT EXISTS cache_answers_expires ON cache_answers (expires_ms);
CREATE TABLE IF NOT EXISTS cache_tools (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    stored_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS cache_tools_stored ON cache_tools (stored_ms);
CREATE INDEX IF NOT EXISTS cache_tools_expires ON cache_tools (expires_ms);
CREATE TABLE IF NOT EXISTS cache_graphs (
    scope INTEGER PRIMARY KEY,
    saved_ms INTEGER NOT NULL,
    keys BLOB NOT NULL,
    graph BLOB NOT NULL
);
";

/// An exact-cache entry as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerRow {
    /// The exact-cache key.
    pub key: u64,
    /// Unix ms after which no reader may serve it (stored, plus the route's `keep`).
    pub expires_ms: i64,
    pub value: ExactValue,
    pub semantic: Option<SemanticPart>,
}

/// An answer's place in the semantic index.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticPart {
    pub scope: u64,
    pub vector: Arc<[f32]>,
    pub query: Arc<str>,
}

/// A tool-cache entry as kept; it expires `value.ttl` after `value.stored_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRow {
    pub namespace: String,
    pub key: String,
    pub value: ToolValue,
}

impl ToolRow {
    fn expires_ms(&self) -> i64 {
        let ttl = i64::try_from(self.value.ttl.as_millis()).unwrap_or(i64::MAX);
        self.value.stored_ms.saturating_add(ttl)
    }
}

/// One change, in the order the caches made them.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Answer(AnswerRow),
    Tool(ToolRow),
    ToolDelete {
        namespace: String,
        key: String,
    },
    /// A scope's graph, replacing the one kept.
    Graph(Snapshot),
    /// A scope's graph is of no more use.
    ForgetGraph(u64),
}

/// What [`Store::load`] found: live rows, newest first.
#[derive(Debug, Default)]
pub struct Loaded {
    pub answers: Vec<AnswerRow>,
    pub tools: Vec<ToolRow>,
    /// Rows that could not be read back (left out).
    pub unreadable: usize,
}

/// The cache tables, open.
pub enum Store {
    Sqlite(Connection),
    Postgres(Arc<PgPool>),
}

impl Store {
    /// Opens the SQLite file (creating the tables), or brings PostgreSQL's up to date.
    pub fn open(db: &Db) -> anyhow::Result<Store> {
        match db {
            Db::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
                }
                let open = || -> rusqlite::Result<Connection> {
                    let c = Connection::open(path)?;
                    c.busy_timeout(Duration::from_secs(5))?;
                    c.pragma_update(None, "journal_mode", "WAL")?;
                    c.pragma_update(None, "synchronous", "NORMAL")?;
                    c.execute_batch(SQLITE_SCHEMA)?;
                    Ok(c)
                };
                let conn = open().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                Ok(Store::Sqlite(conn))
            }
            Db::Postgres(pool) => {
                migrate(pool)?;
                Ok(Store::Postgres(pool.clone()))
            }
        }
    }

    /// Applies `changes` in order, in one transaction. A row that cannot be encoded is
    /// left out.
    pub fn write(&mut self, changes: &[Change]) -> anyhow::Result<()> {
        match self {
            Store::Sqlite(conn) => sqlite_write(conn, changes).map_err(Into::into),
            Store::Postgres(pool) => pool.with(|c| pg::write(c, changes)),
        }
    }

    /// Live rows (expiring after `now_ms`), newest first: at most `answers` answers and
    /// `tools` tool results.
    pub fn load(&mut self, now_ms: i64, answers: u64, tools: u64) -> anyhow::Result<Loaded> {
        let answers = i64::try_from(answers).unwrap_or(i64::MAX);
        let tools = i64::try_from(tools).unwrap_or(i64::MAX);
        match self {
            Store::Sqlite(conn) => sqlite_load(conn, now_ms, answers, tools).map_err(Into::into),
            Store::Postgres(pool) => pool.with(|c| pg::load(c, now_ms, answers, tools)),
        }
    }

    /// The scopes a graph is kept for.
    pub fn graph_scopes(&mut self) -> anyhow::Result<Vec<u64>> {
        let sql = "SELECT scope FROM cache_graphs";
        let scopes: Vec<i64> = match self {
            Store::Sqlite(conn) => conn
                .prepare(sql)?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?,
            Store::Postgres(pool) => pool.with(|c| {
                c.query(sql, &[])?
                    .iter()
                    .map(|r| Ok(r.try_get(0)?))
                    .collect()
            })?,
        };
        Ok(scopes.into_iter().map(key_from_column).collect())
    }

    /// The graph kept for `scope`; `None` when there is none or it does not read back.
    pub fn graph(&mut self, scope: u64) -> anyhow::Result<Option<Snapshot>> {
        let sql = "SELECT keys, graph FROM cache_graphs WHERE scope = ";
        let scope_column = key_column(scope);
        let row: Option<(Vec<u8>, Vec<u8>)> = match self {
            Store::Sqlite(conn) => conn
                .query_row(&format!("{sql}?1"), [scope_column], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?,
            Store::Postgres(pool) => pool.with(|c| {
                c.query_opt(&format!("{sql}$1"), &[&scope_column])?
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .transpose()
            })?,
        };
        Ok(row.and_then(|(keys, graph)| snapshot(scope_column, &keys, graph)))
    }

    /// Deletes expired rows and, beyond the newest `answers` answers and `tools` tool
    /// results, older ones (no start would load them; rows stored in the same millisecond as
    /// the first one beyond go too). Returns how many went.
    pub fn prune(&mut self, now_ms: i64, answers: u64, tools: u64) -> anyhow::Result<u64> {
        let answers = i64::try_from(answers).unwrap_or(i64::MAX);
        let tools = i64::try_from(tools).unwrap_or(i64::MAX);
        match self {
            Store::Sqlite(conn) => {
                let mut n = 0;
                for (table, keep) in [("cache_answers", answers), ("cache_tools", tools)] {
                    n += conn.execute(
                        &format!("DELETE FROM {table} WHERE expires_ms <= ?1"),
                        [now_ms],
                    )?;
                    n += conn.execute(
                        &format!(
                            "DELETE FROM {table} WHERE stored_ms <= \
                             (SELECT stored_ms FROM {table} ORDER BY stored_ms DESC LIMIT 1 OFFSET ?1)"
                        ),
                        [keep],
                    )?;
                }
                Ok(n as u64)
            }
            Store::Postgres(pool) => pool.with(|c| pg::prune(c, now_ms, answers, tools)),
        }
    }

    /// Rows kept, expired or not: (answers, tool results, graphs).
    #[cfg(test)]
    pub(crate) fn count(&mut self) -> (i64, i64, i64) {
        let sql = "SELECT (SELECT COUNT(*) FROM cache_answers), (SELECT COUNT(*) FROM cache_tools), \
                   (SELECT COUNT(*) FROM cache_graphs)";
        match self {
            Store::Sqlite(conn) => conn
                .query_row(sql, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap(),
            Store::Postgres(pool) => pool
                .with(|c| {
                    let r = c.query_one(sql, &[])?;
                    Ok((r.get(0), r.get(1), r.get(2)))
                })
                .unwrap(),
        }
    }
}

/// Brings the cache tables in PostgreSQL up to date (`trestle migrate`; also done on open).
pub fn migrate(pool: &PgPool) -> anyhow::Result<i32> {
    pool.migrate("cache", pg::MIGRATIONS)
}

/// The key as the store keeps it (a signed 64-bit column): the same bits.
fn key_column(key: u64) -> i64 {
    i64::from_ne_bytes(key.to_ne_bytes())
}

fn key_from_column(key: i64) -> u64 {
    u64::from_ne_bytes(key.to_ne_bytes())
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn vector_from_bytes(b: &[u8]) -> Option<Arc<[f32]>> {
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return None;
    }
    Some(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// An answer's columns: value, scope, vector, query.
type AnswerColumns = (Vec<u8>, Option<i64>, Option<Vec<u8>>, Option<String>);

fn answer_columns(row: &AnswerRow) -> Option<AnswerColumns> {
    let value = row.value.encode()?;
    Some(match &row.semantic {
        Some(s) => (
            value,
            Some(key_column(s.scope)),
            Some(vector_bytes(&s.vector)),
            Some(s.query.to_string()),
        ),
        None => (value, None, None, None),
    })
}

/// An answer read back; `None` when its value does not decode.
fn answer_row(
    key: i64,
    expires_ms: i64,
    value: Vec<u8>,
    scope: Option<i64>,
    vector: Option<Vec<u8>>,
    query: Option<String>,
) -> Option<AnswerRow> {
    let value = ExactValue::decode(&Bytes::from(value))?;
    let semantic = match (scope, vector.as_deref().and_then(vector_from_bytes), query) {
        (Some(scope), Some(vector), Some(query)) => Some(SemanticPart {
            scope: key_from_column(scope),
            vector,
            query: Arc::from(query),
        }),
        _ => None,
    };
    Some(AnswerRow {
        key: key_from_column(key),
        expires_ms,
        value,
        semantic,
    })
}

fn keys_bytes(keys: &[u64]) -> Vec<u8> {
    keys.iter().flat_map(|k| k.to_le_bytes()).collect()
}

/// A graph read back; `None` when its keys are not whole `u64`s.
fn snapshot(scope: i64, keys: &[u8], graph: Vec<u8>) -> Option<Snapshot> {
    if !keys.len().is_multiple_of(8) {
        return None;
    }
    let keys = keys
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Some(Snapshot {
        scope: key_from_column(scope),
        keys,
        graph,
    })
}

fn tool_row(namespace: String, key: String, value: Vec<u8>) -> Option<ToolRow> {
    Some(ToolRow {
        namespace,
        key,
        value: ToolValue::decode(&Bytes::from(value))?,
    })
}

const ANSWERS_LOAD: &str = "SELECT key, expires_ms, value, scope, vector, query FROM cache_answers";
const TOOLS_LOAD: &str = "SELECT namespace, key, value FROM cache_tools";

fn sqlite_write(conn: &mut Connection, changes: &[Change]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut answer = tx.prepare_cached(
            "INSERT OR REPLACE INTO cache_answers (key, stored_ms, expires_ms, value, scope, vector, query) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut tool = tx.prepare_cached(
            "INSERT OR REPLACE INTO cache_tools (namespace, key, stored_ms, expires_ms, value) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut delete =
            tx.prepare_cached("DELETE FROM cache_tools WHERE namespace = ?1 AND key = ?2")?;
        let mut graph = tx.prepare_cached(
            "INSERT OR REPLACE INTO cache_graphs (scope, saved_ms, keys, graph) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut forget = tx.prepare_cached("DELETE FROM cache_graphs WHERE scope = ?1")?;
        for change in changes {
            match change {
                Change::Answer(row) => {
                    let Some((value, scope, vector, query)) = answer_columns(row) else {
                        continue;
                    };
                    answer.execute(params![
                        key_column(row.key),
                        row.value.stored_ms,
                        row.expires_ms,
                        value,
                        scope,
                        vector,
                        query
                    ])?;
                }
                Change::Tool(row) => {
                    let Some(value) = row.value.encode() else {
                        continue;
                    };
                    tool.execute(params![
                        row.namespace,
                        row.key,
                        row.value.stored_ms,
                        row.expires_ms(),
                        value
                    ])?;
                }
                Change::ToolDelete { namespace, key } => {
                    delete.execute(params![namespace, key])?;
                }
                Change::Graph(s) => {
                    graph.execute(params![
                        key_column(s.scope),
                        crate::store::now_ms(),
                        keys_bytes(&s.keys),
                        s.graph
                    ])?;
                }
                Change::ForgetGraph(scope) => {
                    forget.execute([key_column(*scope)])?;
                }
            }
        }
    }
    tx.commit()
}

fn sqlite_load(
    conn: &Connection,
    now_ms: i64,
    answers: i64,
    tools: i64,
) -> rusqlite::Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut st = conn.prepare(&format!(
        "{ANSWERS_LOAD} WHERE expires_ms > ?1 ORDER BY stored_ms DESC LIMIT ?2"
    ))?;
    let mut rows = st.query(params![now_ms, answers])?;
    while let Some(r) = rows.next()? {
        match answer_row(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ) {
            Some(row) => loaded.answers.push(row),
            None => loaded.unreadable += 1,
        }
    }
    let mut st = conn.prepare(&format!(
        "{TOOLS_LOAD} WHERE expires_ms > ?1 ORDER BY stored_ms DESC LIMIT ?2"
    ))?;
    let mut rows = st.query(params![now_ms, tools])?;
    while let Some(r) = rows.next()? {
        match tool_row(r.get(0)?, r.get(1)?, r.get(2)?) {
            Some(row) => loaded.tools.push(row),
            None => loaded.unreadable += 1,
        }
    }
    Ok(loaded)
}

/// The cache tables on PostgreSQL: the SQLite columns in PostgreSQL's types.
mod pg {
    use postgres::Client;

    use super::{
        ANSWERS_LOAD, Change, Loaded, TOOLS_LOAD, answer_columns, answer_row, key_column,
        keys_bytes, tool_row,
    };

    /// Each step brings the tables from the version before it; a released step is never
    /// changed, a later one is added.
    pub(super) const MIGRATIONS: &[(i32, &str)] = &[(1, SCHEMA_1)];

    const SCHEMA_1: &str = "
CREATE TABLE IF NOT EXISTS cache_answers (
    key BIGINT PRIMARY KEY,
    stored_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    value BYTEA NOT NULL,
    scope BIGINT,
    vector BYTEA,
    query TEXT
);
CREATE INDEX IF NOT EXISTS cache_answers_stored ON cache_answers (stored_ms);
CREATE INDEX IF NOT EXISTS cache_answers_expires ON cache_answers (expires_ms);
CREATE TABLE IF NOT EXISTS cache_tools (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    stored_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS cache_tools_stored ON cache_tools (stored_ms);
CREATE INDEX IF NOT EXISTS cache_tools_expires ON cache_tools (expires_ms);
CREATE TABLE IF NOT EXISTS cache_graphs (
    scope BIGINT PRIMARY KEY,
    saved_ms BIGINT NOT NULL,
    keys BYTEA NOT NULL,
    graph BYTEA NOT NULL
);
";

    pub(super) fn write(c: &mut Client, changes: &[Change]) -> anyhow::Result<()> {
        let mut tx = c.transaction()?;
        let answer = tx.prepare(
            "INSERT INTO cache_answers (key, stored_ms, expires_ms, value, scope, vector, query) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (key) DO UPDATE SET stored_ms = EXCLUDED.stored_ms, \
             expires_ms = EXCLUDED.expires_ms, value = EXCLUDED.value, scope = EXCLUDED.scope, \
             vector = EXCLUDED.vector, query = EXCLUDED.query",
        )?;
        let tool = tx.prepare(
            "INSERT INTO cache_tools (namespace, key, stored_ms, expires_ms, value) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (namespace, key) DO UPDATE SET stored_ms = EXCLUDED.stored_ms, \
             expires_ms = EXCLUDED.expires_ms, value = EXCLUDED.value",
        )?;
        let delete = tx.prepare("DELETE FROM cache_tools WHERE namespace = $1 AND key = $2")?;
        let graph = tx.prepare(
            "INSERT INTO cache_graphs (scope, saved_ms, keys, graph) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (scope) DO UPDATE SET saved_ms = EXCLUDED.saved_ms, \
             keys = EXCLUDED.keys, graph = EXCLUDED.graph",
        )?;
        let forget = tx.prepare("DELETE FROM cache_graphs WHERE scope = $1")?;
        for change in changes {
            match change {
                Change::Answer(row) => {
                    let Some((value, scope, vector, query)) = answer_columns(row) else {
                        continue;
                    };
                    tx.execute(
                        &answer,
                        &[
                            &key_column(row.key),
                            &row.value.stored_ms,
                            &row.expires_ms,
                            &value,
                            &scope,
                            &vector,
                            &query,
                        ],
                    )?;
                }
                Change::Tool(row) => {
                    let Some(value) = row.value.encode() else {
                        continue;
                    };
                    tx.execute(
                        &tool,
                        &[
                            &row.namespace,
                            &row.key,
                            &row.value.stored_ms,
                            &row.expires_ms(),
                            &value,
                        ],
                    )?;
                }
                Change::ToolDelete { namespace, key } => {
                    tx.execute(&delete, &[&namespace.as_str(), &key.as_str()])?;
                }
                Change::Graph(s) => {
                    tx.execute(
                        &graph,
                        &[
                            &key_column(s.scope),
                            &crate::store::now_ms(),
                            &keys_bytes(&s.keys),
                            &s.graph,
                        ],
                    )?;
                }
                Change::ForgetGraph(scope) => {
                    tx.execute(&forget, &[&key_column(*scope)])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(super) fn load(
        c: &mut Client,
        now_ms: i64,
        answers: i64,
        tools: i64,
    ) -> anyhow::Result<Loaded> {
        let mut loaded = Loaded::default();
        let rows = c.query(
            &format!("{ANSWERS_LOAD} WHERE expires_ms > $1 ORDER BY stored_ms DESC LIMIT $2"),
            &[&now_ms, &answers],
        )?;
        for r in rows {
            let row = answer_row(
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
                r.try_get(5)?,
            );
            match row {
                Some(row) => loaded.answers.push(row),
                None => loaded.unreadable += 1,
            }
        }
        let rows = c.query(
            &format!("{TOOLS_LOAD} WHERE expires_ms > $1 ORDER BY stored_ms DESC LIMIT $2"),
            &[&now_ms, &tools],
        )?;
        for r in rows {
            match tool_row(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?) {
                Some(row) => loaded.tools.push(row),
                None => loaded.unreadable += 1,
            }
        }
        Ok(loaded)
    }

    pub(super) fn prune(
        c: &mut Client,
        now_ms: i64,
        answers: i64,
        tools: i64,
    ) -> anyhow::Result<u64> {
        let mut n = 0;
        for (table, keep) in [("cache_answers", answers), ("cache_tools", tools)] {
            n += c.execute(
                &format!("DELETE FROM {table} WHERE expires_ms <= $1"),
                &[&now_ms],
            )?;
            n += c.execute(
                &format!(
                    "DELETE FROM {table} WHERE stored_ms <= \
                     (SELECT stored_ms FROM {table} ORDER BY stored_ms DESC LIMIT 1 OFFSET $1)"
                ),
                &[&keep],
            )?;
        }
        Ok(n)
    }
}
