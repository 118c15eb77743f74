//! The embedded store: SQLite in WAL mode. One row per gateway request (its span), one row
//! per upstream attempt; indexed by trace, conversation, user and route.

use std::path::Path;

use rusqlite::{Connection, Row, params};
use serde_json::{Map, Value, json};

use super::filter::{Arg, Dialect, where_clause};
use super::{Attempt, Trace, TraceFilter, TraceStore, TraceSummary};

/// Layout 2: integer row ids, so the table, its time indexes and the attempts table grow at
/// the end; only the trace, conversation and user indexes take random keys (the last two
/// only when the request has one). Layout 1 (text span-id keys) is migrated on open.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    span_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    parent_span_id TEXT,
    started_at_ms INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    ttft_ms REAL,
    route TEXT NOT NULL,
    class TEXT NOT NULL,
    conversation_id TEXT,
    user_id TEXT,
    stream INTEGER NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    fallback_level TEXT NOT NULL,
    served_by TEXT,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    tokens_cached INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    attempts INTEGER NOT NULL,
    request TEXT,
    response TEXT,
    capability_level INTEGER NOT NULL DEFAULT 5,
    cache TEXT NOT NULL DEFAULT 'miss',
    cost_saved_usd REAL NOT NULL DEFAULT 0,
    cache_similarity REAL,
    guardrails TEXT,
    confidence REAL,
    dropped_params TEXT,
    prompt_version TEXT,
    experiment TEXT,
    variant TEXT,
    response_model TEXT,
    system_fingerprint TEXT,
    flags TEXT,
    input_tokens_before INTEGER,
    input_tokens_after INTEGER,
    trimmed_messages INTEGER,
    tokenizer TEXT,
    tenant TEXT,
    key_id TEXT
);
CREATE INDEX IF NOT EXISTS requests_trace ON requests(trace_id);
CREATE INDEX IF NOT EXISTS requests_conversation ON requests(conversation_id, started_at_ms)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_user ON requests(user_id, started_at_ms)
    WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_route ON requests(route, started_at_ms);
CREATE INDEX IF NOT EXISTS requests_time ON requests(started_at_ms);
CREATE INDEX IF NOT EXISTS requests_key ON requests(key_id, started_at_ms)
    WHERE key_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS requests_experiment ON requests(experiment, variant)
    WHERE experiment IS NOT NULL;
CREATE TABLE IF NOT EXISTS attempts (
    request_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    span_id TEXT NOT NULL,
    target TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    offset_ms REAL NOT NULL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    status TEXT NOT NULL,
    http_status INTEGER,
    error TEXT,
    retryable INTEGER NOT NULL,
    cold_start INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    tokens_cached INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    PRIMARY KEY (request_id, seq)
) WITHOUT ROWID;
";

const REQUEST_COLUMNS: &str = "span_id, trace_id, parent_span_id, started_at_ms, duration_ms, \
     ttft_ms, route, class, conversation_id, user_id, stream, status, outcome, error, fallback_level, \
     served_by, tokens_in, tokens_out, tokens_cached, cost_usd, attempts, request, response, \
     capability_level, cache, cost_saved_usd, cache_similarity, guardrails, confidence, dropped_params, \
     prompt_version, experiment, variant, response_model, system_fingerprint, flags, \
     input_tokens_before, input_tokens_after, trimmed_messages, tokenizer, tenant, key_id";

/// What a layout-1 `requests` row holds (after its capability-level column was added).
const LAYOUT_1_COLUMNS: &str = "span_id, trace_id, parent_span_id, started_at_ms, duration_ms, \
     ttft_ms, route, class, conversation_id, user_id, stream, status, outcome, error, fallback_level, \
     served_by, tokens_in, tokens_out, tokens_cached, cost_usd, attempts, request, response, \
     capability_level";

const ATTEMPT_COLUMNS: &str = "seq, span_id, target, provider, model, offset_ms, latency_ms, \
     ttft_ms, status, http_status, error, retryable, cold_start, tokens_in, tokens_out, \
     tokens_cached, cost_usd";

const SUMMARY_COLUMNS: &str = "trace_id, started_at_ms, duration_ms, ttft_ms, route, conversation_id, \
     user_id, stream, status, outcome, fallback_level, served_by, tokens_in, tokens_out, cost_usd, attempts, \
     capability_level, cache, cost_saved_usd, flags";

pub struct SqliteStore {
    pub(super) conn: Connection,
    /// Applied to every string in request and response bodies before they are written
    /// (`[store] redact`).
    redactor: Option<super::Redactor>,
}

impl SqliteStore {
    /// The app's OTLP spans of a trace (crate::otlp), oldest first.
    pub fn app_spans(&self, trace_id: &str) -> anyhow::Result<Vec<Value>> {
        Ok(crate::otlp::read(&self.conn, trace_id)?)
    }

    /// Opens (creating if needed) the database and its folder.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        let conn = Connection::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open trace store {}: {e}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoint every ~16 MB of WAL instead of ~4 MB: hot index pages are copied back
        // once per checkpoint, not once per 1,000 pages written.
        conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
        // The writer's hot index pages stay in memory (32 MiB) instead of being re-read.
        conn.pragma_update(None, "cache_size", -32_768)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(SqliteStore {
            conn,
            redactor: None,
        })
    }

    /// Redacts bodies with `redactor` before they are written.
    pub fn with_redaction(mut self, redactor: Option<super::Redactor>) -> Self {
        self.redactor = redactor;
        self
    }
}

/// A body as stored: as it was, or with every string value redacted.
pub(super) fn body_text<'b>(
    redactor: Option<&super::Redactor>,
    body: &'b super::Body,
) -> std::borrow::Cow<'b, str> {
    {
        let text = body.to_text();
        let Some(redact) = redactor else {
            return text;
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(mut v) => {
                redact_strings(&mut v, redact.as_ref());
                v.to_string().into()
            }
            Err(_) => redact(&text).into(),
        }
    }
}

/// Redacts every string in a JSON value, in place.
fn redact_strings(v: &mut Value, redact: &(dyn Fn(&str) -> String + Send + Sync)) {
    match v {
        Value::String(s) => *s = redact(s),
        Value::Array(items) => items.iter_mut().for_each(|i| redact_strings(i, redact)),
        Value::Object(map) => map.values_mut().for_each(|i| redact_strings(i, redact)),
        _ => {}
    }
}

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
        .exists([table, column])
}

/// Creates the tables, or brings an older layout up to date in one transaction.
fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        // Columns added within layout 2.
        for (column, definition) in [
            ("cache", "TEXT NOT NULL DEFAULT 'miss'"),
            ("cost_saved_usd", "REAL NOT NULL DEFAULT 0"),
            ("cache_similarity", "REAL"),
            ("guardrails", "TEXT"),
            ("confidence", "REAL"),
            ("dropped_params", "TEXT"),
            ("prompt_version", "TEXT"),
            ("experiment", "TEXT"),
            ("variant", "TEXT"),
            ("response_model", "TEXT"),
            ("system_fingerprint", "TEXT"),
            ("flags", "TEXT"),
            ("input_tokens_before", "INTEGER"),
            ("input_tokens_after", "INTEGER"),
            ("trimmed_messages", "INTEGER"),
            ("tokenizer", "TEXT"),
            ("tenant", "TEXT"),
            ("key_id", "TEXT"),
        ] {
            if !has_column(conn, "requests", column)? {
                conn.execute_batch(&format!(
                    "ALTER TABLE requests ADD COLUMN {column} {definition}"
                ))?;
            }
        }
        return Ok(());
    }
    let layout_1 = has_column(conn, "requests", "span_id")? && !has_column(conn, "requests", "id")?;
    if !layout_1 {
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        return Ok(());
    }
    tracing::info!("migrating the trace store to layout {SCHEMA_VERSION}");
    if !has_column(conn, "requests", "capability_level")? {
        conn.execute_batch(
            "ALTER TABLE requests ADD COLUMN capability_level INTEGER NOT NULL DEFAULT 5",
        )?;
    }
    conn.execute_batch(&format!(
        "BEGIN;
         DROP INDEX IF EXISTS requests_trace;
         DROP INDEX IF EXISTS requests_conversation;
         DROP INDEX IF EXISTS requests_user;
         DROP INDEX IF EXISTS requests_route;
         DROP INDEX IF EXISTS requests_time;
         ALTER TABLE requests RENAME TO requests_v1;
         ALTER TABLE attempts RENAME TO attempts_v1;
         {SCHEMA}
         INSERT INTO requests ({LAYOUT_1_COLUMNS})
             SELECT {LAYOUT_1_COLUMNS} FROM requests_v1 ORDER BY started_at_ms, rowid;
         INSERT INTO attempts (request_id, {ATTEMPT_COLUMNS})
             SELECT r.id, a.seq, a.span_id, a.target, a.provider, a.model, a.offset_ms,
                    a.latency_ms, a.ttft_ms, a.status, a.http_status, a.error, a.retryable,
                    a.cold_start, a.tokens_in, a.tokens_out, a.tokens_cached, a.cost_usd
             FROM attempts_v1 a JOIN requests r ON r.span_id = a.request_span_id;
         DROP TABLE attempts_v1;
         DROP TABLE requests_v1;
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    ))?;
    Ok(())
}

fn summary(row: &Row<'_>) -> rusqlite::Result<TraceSummary> {
    Ok(TraceSummary {
        trace_id: row.get(0)?,
        started_at_ms: row.get(1)?,
        duration_ms: row.get(2)?,
        ttft_ms: row.get(3)?,
        route: row.get(4)?,
        conversation_id: row.get(5)?,
        user_id: row.get(6)?,
        stream: row.get(7)?,
        status: row.get(8)?,
        outcome: row.get(9)?,
        fallback_level: row.get(10)?,
        served_by: row.get(11)?,
        tokens_in: row.get(12)?,
        tokens_out: row.get(13)?,
        cost_usd: row.get(14)?,
        attempts: row.get(15)?,
        capability_level: row.get(16)?,
        cache: row.get(17)?,
        cost_saved_usd: row.get(18)?,
        flags: split_list(row.get(19)?),
    })
}

fn attempt(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    Ok(Attempt {
        span_id: row.get(0)?,
        target: row.get(1)?,
        provider: row.get(2)?,
        model: row.get(3)?,
        offset_ms: row.get(4)?,
        latency_ms: row.get(5)?,
        ttft_ms: row.get(6)?,
        status: row.get(7)?,
        http_status: row.get(8)?,
        error: row.get(9)?,
        retryable: row.get(10)?,
        cold_start: row.get(11)?,
        tokens_in: row.get(12)?,
        tokens_out: row.get(13)?,
        tokens_cached: row.get(14)?,
        cost_usd: row.get(15)?,
    })
}

/// A comma-separated column as a list.
fn split_list(text: Option<String>) -> Vec<String> {
    text.map(|d| d.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// A stored body: parsed JSON when it is JSON, else the text.
pub(super) fn body_value(text: Option<String>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(&t).unwrap_or(Value::String(t)),
    }
}

impl TraceStore for SqliteStore {
    fn write_batch(&mut self, traces: &[Trace]) -> anyhow::Result<()> {
        let redactor = self.redactor.as_ref();
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT INTO requests ({REQUEST_COLUMNS}) VALUES \
                 (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20,?21,?22,?23,?24,?25,?26,?27,?28,?29,?30,?31,?32,?33,?34,?35,?36,?37,?38,?39,?40,?41,?42)"
            ))?;
            let mut insert_attempt = tx.prepare_cached(&format!(
                "INSERT INTO attempts (request_id, {ATTEMPT_COLUMNS}) VALUES \
                 (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)"
            ))?;
            for t in traces {
                insert.execute(params![
                    t.span_id,
                    t.trace_id,
                    t.parent_span_id,
                    t.started_at_ms,
                    t.duration_ms,
                    t.ttft_ms,
                    t.route,
                    t.class,
                    t.conversation_id,
                    t.user_id,
                    t.stream,
                    t.status,
                    t.outcome,
                    t.error,
                    t.fallback_level,
                    t.served_by,
                    t.usage.prompt_tokens as i64,
                    t.usage.completion_tokens as i64,
                    t.usage.cached_tokens() as i64,
                    t.cost_usd,
                    t.attempts.len() as i64,
                    t.request.as_ref().map(|b| body_text(redactor, b)),
                    t.response.as_ref().map(|b| body_text(redactor, b)),
                    t.capability_level,
                    t.cache,
                    t.cost_saved_usd,
                    t.cache_similarity,
                    (!t.guardrails.is_empty())
                        .then(|| serde_json::to_string(&t.guardrails).unwrap_or_default()),
                    t.confidence,
                    (!t.dropped_params.is_empty()).then(|| t.dropped_params.join(",")),
                    t.prompt_version,
                    t.experiment,
                    t.variant,
                    t.response_model,
                    t.system_fingerprint,
                    (!t.flags.is_empty()).then(|| t.flags.join(",")),
                    t.input_budget.as_ref().map(|b| b.tokens_before as i64),
                    t.input_budget.as_ref().map(|b| b.tokens_after as i64),
                    t.input_budget.as_ref().map(|b| b.trimmed_messages),
                    t.input_budget.as_ref().map(|b| b.tokenizer.as_str()),
                    t.tenant,
                    t.key_id,
                ])?;
                let request_id = tx.last_insert_rowid();
                for (seq, a) in t.attempts.iter().enumerate() {
                    insert_attempt.execute(params![
                        request_id,
                        seq as i64,
                        a.span_id,
                        a.target,
                        a.provider,
                        a.model,
                        a.offset_ms,
                        a.latency_ms,
                        a.ttft_ms,
                        a.status,
                        a.http_status,
                        a.error,
                        a.retryable,
                        a.cold_start,
                        a.tokens_in as i64,
                        a.tokens_out as i64,
                        a.tokens_cached as i64,
                        a.cost_usd,
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&self, trace_id: &str) -> anyhow::Result<Option<Value>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {SUMMARY_COLUMNS}, span_id, parent_span_id, class, error, tokens_cached, request, response, id, cache_similarity, guardrails, confidence, dropped_params, prompt_version, experiment, variant, response_model, system_fingerprint, input_tokens_before, input_tokens_after, trimmed_messages, tokenizer, tenant, key_id \
             FROM requests WHERE trace_id = ?1 ORDER BY started_at_ms, id"
        ))?;
        let rows: Vec<(TraceSummary, Map<String, Value>, i64)> = stmt
            .query_map([trace_id], |r| {
                let mut extra = Map::new();
                let text = |i: usize| r.get::<_, Option<String>>(i);
                extra.insert("span_id".into(), json!(r.get::<_, String>(20)?));
                extra.insert("parent_span_id".into(), json!(text(21)?));
                extra.insert("class".into(), json!(r.get::<_, String>(22)?));
                extra.insert("error".into(), json!(text(23)?));
                extra.insert("tokens_cached".into(), json!(r.get::<_, i64>(24)?));
                extra.insert("request".into(), body_value(text(25)?));
                extra.insert("response".into(), body_value(text(26)?));
                extra.insert(
                    "cache_similarity".into(),
                    json!(r.get::<_, Option<f64>>(28)?),
                );
                extra.insert(
                    "guardrails".into(),
                    text(29)?
                        .and_then(|g| serde_json::from_str(&g).ok())
                        .unwrap_or_else(|| json!([])),
                );
                extra.insert("confidence".into(), json!(r.get::<_, Option<f64>>(30)?));
                extra.insert("dropped_params".into(), json!(split_list(text(31)?)));
                extra.insert("prompt_version".into(), json!(text(32)?));
                extra.insert("experiment".into(), json!(text(33)?));
                extra.insert("variant".into(), json!(text(34)?));
                extra.insert("response_model".into(), json!(text(35)?));
                extra.insert("system_fingerprint".into(), json!(text(36)?));
                for (i, key) in [
                    (37, "input_tokens_before"),
                    (38, "input_tokens_after"),
                    (39, "trimmed_messages"),
                ] {
                    extra.insert(key.into(), json!(r.get::<_, Option<i64>>(i)?));
                }
                extra.insert("tokenizer".into(), json!(text(40)?));
                extra.insert("tenant".into(), json!(text(41)?));
                extra.insert("key_id".into(), json!(text(42)?));
                Ok((summary(r)?, extra, r.get::<_, i64>(27)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut attempts_stmt = self.conn.prepare_cached(
            "SELECT span_id, target, provider, model, offset_ms, latency_ms, ttft_ms, status, \
             http_status, error, retryable, cold_start, tokens_in, tokens_out, tokens_cached, cost_usd \
             FROM attempts WHERE request_id = ?1 ORDER BY seq",
        )?;
        let mut requests = Vec::with_capacity(rows.len());
        for (sum, extra, id) in rows {
            let attempts: Vec<Attempt> = attempts_stmt
                .query_map([id], attempt)?
                .collect::<Result<_, _>>()?;
            let mut obj = match serde_json::to_value(&sum)? {
                Value::Object(m) => m,
                _ => Map::new(),
            };
            obj.extend(extra);
            obj.insert("attempts".into(), serde_json::to_value(attempts)?);
            requests.push(Value::Object(obj));
        }
        if requests.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            json!({ "object": "trace", "trace_id": trace_id, "requests": requests }),
        ))
    }

    fn list(&self, filter: &TraceFilter) -> anyhow::Result<Vec<TraceSummary>> {
        let has_feedback = table_exists(&self.conn, "feedback")?;
        let (where_sql, args) = where_clause(Dialect::Sqlite, filter, now_ms(), has_feedback)?;
        let args = args.into_iter().map(|a| match a {
            Arg::Text(t) => rusqlite::types::Value::Text(t),
            Arg::Int(i) => rusqlite::types::Value::Integer(i),
        });
        let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM requests {where_sql} ORDER BY started_at_ms DESC, id DESC LIMIT {limit}"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), summary)?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A time bound: a window back from now (`24h`) or a Unix time in milliseconds.
pub(super) fn time_bound(field: &str, text: &str, now: i64) -> anyhow::Result<i64> {
    if let Ok(ms) = text.trim().parse::<i64>()
        && ms > 1_000_000_000
    {
        return Ok(ms);
    }
    trestle_core::window::window_ms(text)
        .map(|w| now - w)
        .map_err(|e| anyhow::anyhow!("{field} {e}, or a Unix time in milliseconds"))
}

pub(super) fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .exists([table])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Body;
    use bytes::Bytes;
    use trestle_core::openai::Usage;

    pub(crate) fn sample(trace_id: &str, span: &str, conversation: &str) -> Trace {
        Trace {
            trace_id: trace_id.into(),
            span_id: span.into(),
            parent_span_id: None,
            started_at_ms: 1_700_000_000_000,
            duration_ms: 12.5,
            ttft_ms: Some(3.0),
            route: "chat".into(),
            class: "progressive".into(),
            conversation_id: Some(conversation.into()),
            user_id: Some("u1".into()),
            stream: true,
            status: 200,
            outcome: "ok".into(),
            error: None,
            fallback_level: "model".into(),
            capability_level: 4,
            cache: "miss".into(),
            cost_saved_usd: 0.0,
            cache_similarity: None,
            served_by: Some("backup/m1".into()),
            usage: Usage::new(10, 5, 2),
            cost_usd: 0.001,
            request: Some(Body::Raw(Bytes::from_static(br#"{"model":"chat"}"#))),
            response: Some(Body::Raw(Bytes::from_static(b"not json"))),
            attempts: vec![Attempt {
                span_id: "a1".into(),
                target: "up/m1".into(),
                provider: "up".into(),
                model: "m1".into(),
                offset_ms: 0.1,
                latency_ms: 4.0,
                ttft_ms: None,
                status: "error".into(),
                http_status: Some(500),
                error: Some("boom".into()),
                retryable: true,
                cold_start: true,
                tokens_in: 0,
                tokens_out: 0,
                tokens_cached: 0,
                cost_usd: 0.0,
            }],
            guardrails: Vec::new(),
            confidence: None,
            dropped_params: Vec::new(),
            prompt_version: None,
            experiment: None,
            variant: None,
            response_model: None,
            system_fingerprint: None,
            flags: Vec::new(),
            tenant: None,
            key_id: None,
            input_budget: None,
        }
    }

    #[test]
    fn traces_round_trip_and_filter() {
        let dir = std::env::temp_dir().join(format!("trestle-sqlite-{}", std::process::id()));
        let mut store = SqliteStore::open(&dir.join("t.db")).unwrap();
        store
            .write_batch(&[
                sample("t1", "s1", "c1"),
                sample("t2", "s2", "c2"),
                sample("t1", "s3", "c1"),
            ])
            .unwrap();
        let got = store.get("t1").unwrap().unwrap();
        assert_eq!(got["requests"].as_array().unwrap().len(), 2);
        let first = &got["requests"][0];
        assert_eq!(first["request"]["model"], "chat");
        assert_eq!(first["response"], "not json");
        assert_eq!(first["attempts"][0]["http_status"], 500);
        assert_eq!(first["tokens_cached"], 2);
        assert!(store.get("nope").unwrap().is_none());
        let by_conv = store
            .list(&TraceFilter {
                conversation_id: Some("c1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_conv.len(), 2);
        assert!(by_conv.iter().all(|s| s.trace_id == "t1"));
        let limited = store
            .list(&TraceFilter {
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(limited.len(), 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_input_budget_round_trips_and_older_stores_gain_its_columns() {
        let dir =
            std::env::temp_dir().join(format!("trestle-sqlite-budget-{}", std::process::id()));
        let path = dir.join("t.db");
        let store = SqliteStore::open(&path).unwrap();
        // A store written before the budget columns existed.
        store
            .conn
            .execute_batch(
                "ALTER TABLE requests DROP COLUMN input_tokens_before;
                 ALTER TABLE requests DROP COLUMN input_tokens_after;
                 ALTER TABLE requests DROP COLUMN trimmed_messages;
                 ALTER TABLE requests DROP COLUMN tokenizer;",
            )
            .unwrap();
        drop(store);
        let mut store = SqliteStore::open(&path).unwrap();
        let mut t = sample("tb", "sb", "c1");
        t.input_budget = Some(crate::store::InputBudget {
            tokenizer: "o200k_base".into(),
            tokens_before: 5120,
            tokens_after: 3990,
            trimmed_messages: 4,
        });
        store.write_batch(&[t, sample("tn", "sn", "c1")]).unwrap();
        let got = store.get("tb").unwrap().unwrap();
        let r = &got["requests"][0];
        assert_eq!(r["input_tokens_before"], 5120);
        assert_eq!(r["input_tokens_after"], 3990);
        assert_eq!(r["trimmed_messages"], 4);
        assert_eq!(r["tokenizer"], "o200k_base");
        let none = store.get("tn").unwrap().unwrap();
        assert!(none["requests"][0]["tokenizer"].is_null());
        assert!(none["requests"][0]["input_tokens_before"].is_null());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_layout_1_store_is_migrated_with_its_traces() {
        let dir = std::env::temp_dir().join(format!("trestle-sqlite-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE requests (span_id TEXT PRIMARY KEY, trace_id TEXT NOT NULL,
                parent_span_id TEXT, started_at_ms INTEGER NOT NULL, duration_ms REAL NOT NULL,
                ttft_ms REAL, route TEXT NOT NULL, class TEXT NOT NULL, conversation_id TEXT,
                user_id TEXT, stream INTEGER NOT NULL, status INTEGER NOT NULL,
                outcome TEXT NOT NULL, error TEXT, fallback_level TEXT NOT NULL, served_by TEXT,
                tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,
                tokens_cached INTEGER NOT NULL, cost_usd REAL NOT NULL, attempts INTEGER NOT NULL,
                request TEXT, response TEXT);
             CREATE INDEX requests_trace ON requests(trace_id);
             CREATE INDEX requests_conversation ON requests(conversation_id, started_at_ms);
             CREATE TABLE attempts (request_span_id TEXT NOT NULL, seq INTEGER NOT NULL,
                span_id TEXT NOT NULL, target TEXT NOT NULL, provider TEXT NOT NULL,
                model TEXT NOT NULL, offset_ms REAL NOT NULL, latency_ms REAL NOT NULL,
                ttft_ms REAL, status TEXT NOT NULL, http_status INTEGER, error TEXT,
                retryable INTEGER NOT NULL, cold_start INTEGER NOT NULL,
                tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,
                tokens_cached INTEGER NOT NULL, cost_usd REAL NOT NULL,
                PRIMARY KEY (request_span_id, seq));
             INSERT INTO requests VALUES ('s1', 't1', NULL, 1, 2.0, NULL, 'chat', 'sync', 'c1',
                NULL, 0, 200, 'ok', NULL, 'model', 'b/m', 3, 4, 0, 0.5, 1, '{}', NULL);
             INSERT INTO attempts VALUES ('s1', 0, 'a1', 'b/m', 'b', 'm', 0.0, 2.0, NULL, 'ok',
                NULL, NULL, 0, 1, 3, 4, 0, 0.5);",
        )
        .unwrap();
        drop(old);
        let mut store = SqliteStore::open(&path).unwrap();
        let got = store.get("t1").unwrap().unwrap();
        assert_eq!(got["requests"][0]["fallback_level"], "model");
        assert_eq!(got["requests"][0]["capability_level"], 5);
        assert_eq!(got["requests"][0]["attempts"][0]["target"], "b/m");
        store.write_batch(&[sample("t9", "s9", "c1")]).unwrap();
        let by_conv = store
            .list(&TraceFilter {
                conversation_id: Some("c1".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_conv.len(), 2);
        // Opening again is a no-op.
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.get("t9").unwrap().is_some());
        std::fs::remove_dir_all(dir).ok();
    }
}
