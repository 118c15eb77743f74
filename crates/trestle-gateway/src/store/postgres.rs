//! The PostgreSQL store (`[store] kind = "postgres"`): the same `requests` and `attempts`
//! rows as the SQLite store, written a batch at a time with multi-row `INSERT`s in one
//! transaction, and read back as exactly the JSON and summaries SQLite gives.
//!
//! It uses the synchronous `postgres` client: the recorder's writer is a plain thread and
//! readers run in `spawn_blocking`, like SQLite's. The client runs its own small runtime, so
//! it must never be called from inside an async task.

use std::sync::Arc;

use postgres::Row;
use postgres::types::ToSql;
use serde_json::{Map, Value, json};

use super::filter::{Arg, Dialect, where_clause};
use super::sqlite::{body_text, body_value};
use super::{Attempt, Trace, TraceFilter, TraceStore, TraceSummary, now_ms};
use crate::db::PgPool;

/// Each step brings the schema from the version before it; a step is never changed once
/// released, a later one is added.
const MIGRATIONS: &[(i32, &str)] = &[(1, SCHEMA_1), (2, SCHEMA_2)];

const SCHEMA_1: &str = "
CREATE SEQUENCE IF NOT EXISTS requests_id_seq;
CREATE TABLE IF NOT EXISTS requests (
    id BIGINT PRIMARY KEY DEFAULT nextval('requests_id_seq'),
    span_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    parent_span_id TEXT,
    started_at_ms BIGINT NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    route TEXT NOT NULL,
    class TEXT NOT NULL,
    conversation_id TEXT,
    user_id TEXT,
    stream BOOLEAN NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    fallback_level TEXT NOT NULL,
    served_by TEXT,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    tokens_cached BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    attempts INTEGER NOT NULL,
    request TEXT,
    response TEXT,
    capability_level SMALLINT NOT NULL DEFAULT 5,
    cache TEXT NOT NULL DEFAULT 'miss',
    cost_saved_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    cache_similarity DOUBLE PRECISION,
    guardrails JSONB,
    confidence DOUBLE PRECISION,
    dropped_params TEXT[],
    prompt_version TEXT,
    experiment TEXT,
    variant TEXT,
    response_model TEXT,
    system_fingerprint TEXT,
    flags TEXT[],
    input_tokens_before BIGINT,
    input_tokens_after BIGINT,
    trimmed_messages BIGINT,
    tokenizer TEXT,
    tenant TEXT,
    key_id TEXT
);
ALTER SEQUENCE requests_id_seq OWNED BY requests.id;
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
    request_id BIGINT NOT NULL,
    seq INTEGER NOT NULL,
    span_id TEXT NOT NULL,
    target TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    offset_ms DOUBLE PRECISION NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    status TEXT NOT NULL,
    http_status INTEGER,
    error TEXT,
    retryable BOOLEAN NOT NULL,
    cold_start BOOLEAN NOT NULL,
    tokens_in BIGINT NOT NULL,
    tokens_out BIGINT NOT NULL,
    tokens_cached BIGINT NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (request_id, seq)
);
";

/// The app's OTLP spans (`POST /v1/traces`), joined to requests by trace id and
/// conversation id.
const SCHEMA_2: &str = "
CREATE TABLE IF NOT EXISTS app_spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    service TEXT,
    start_ms DOUBLE PRECISION NOT NULL,
    end_ms DOUBLE PRECISION NOT NULL,
    status_code INTEGER NOT NULL,
    status_message TEXT,
    attributes JSONB NOT NULL,
    events JSONB NOT NULL,
    conversation_id TEXT,
    tenant TEXT,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS app_spans_conversation ON app_spans (conversation_id)
    WHERE conversation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS app_spans_failed ON app_spans (start_ms) WHERE status_code = 2;
";

const REQUEST_COLUMNS: &[&str] = &[
    "id",
    "span_id",
    "trace_id",
    "parent_span_id",
    "started_at_ms",
    "duration_ms",
    "ttft_ms",
    "route",
    "class",
    "conversation_id",
    "user_id",
    "stream",
    "status",
    "outcome",
    "error",
    "fallback_level",
    "served_by",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "cost_usd",
    "attempts",
    "request",
    "response",
    "capability_level",
    "cache",
    "cost_saved_usd",
    "cache_similarity",
    "guardrails",
    "confidence",
    "dropped_params",
    "prompt_version",
    "experiment",
    "variant",
    "response_model",
    "system_fingerprint",
    "flags",
    "input_tokens_before",
    "input_tokens_after",
    "trimmed_messages",
    "tokenizer",
    "tenant",
    "key_id",
];

const ATTEMPT_COLUMNS: &[&str] = &[
    "request_id",
    "seq",
    "span_id",
    "target",
    "provider",
    "model",
    "offset_ms",
    "latency_ms",
    "ttft_ms",
    "status",
    "http_status",
    "error",
    "retryable",
    "cold_start",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "cost_usd",
];

const SUMMARY_COLUMNS: &str = "trace_id, started_at_ms, duration_ms, ttft_ms, route, conversation_id, \
     user_id, stream, status, outcome, fallback_level, served_by, tokens_in, tokens_out, cost_usd, attempts, \
     capability_level, cache, cost_saved_usd, flags";

/// The most bind parameters one PostgreSQL statement takes.
const MAX_PARAMS: usize = 65_535;

type Param = Box<dyn ToSql + Sync>;

pub struct PostgresStore {
    pool: Arc<PgPool>,
    /// Applied to every string in request and response bodies before they are written
    /// (`[store] redact`).
    redactor: Option<super::Redactor>,
}

impl PostgresStore {
    /// Connects to `url` (`[store] url`), keeping up to `pool_size` connections, and brings
    /// the schema up to date. An unreachable server is an error naming `store.url` and the
    /// address (never the URL: it may hold a password).
    pub fn open(url: &str, pool_size: usize) -> anyhow::Result<Self> {
        Self::on(Arc::new(PgPool::open(url, pool_size)?))
    }

    /// The store on an open pool, its schema brought up to date.
    pub fn on(pool: Arc<PgPool>) -> anyhow::Result<Self> {
        let store = PostgresStore {
            pool,
            redactor: None,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Redacts bodies with `redactor` before they are written.
    pub fn with_redaction(mut self, redactor: Option<super::Redactor>) -> Self {
        self.redactor = redactor;
        self
    }

    /// Applies the migrations not yet applied (`schema_version`), in one transaction under
    /// an advisory lock; running it again does nothing. Returns the schema version.
    pub fn migrate(&self) -> anyhow::Result<i32> {
        Self::migrate_on(&self.pool)
    }

    /// Brings the trace tables on `pool` up to date.
    pub fn migrate_on(pool: &PgPool) -> anyhow::Result<i32> {
        pool.migrate("traces", MIGRATIONS)
    }
}

/// `($1, $2, …), ($n+1, …)` for `rows` rows of `columns` parameters; `casts` adds a cast
/// to a column's parameter (by index).
fn values_sql(rows: usize, columns: usize, casts: &[(usize, &str)]) -> String {
    let mut sql = String::with_capacity(rows * columns * 6);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ",(" });
        for c in 0..columns {
            if c > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", r * columns + c + 1));
            if let Some((_, cast)) = casts.iter().find(|(i, _)| *i == c) {
                sql.push_str(cast);
            }
        }
        sql.push(')');
    }
    sql
}

/// Inserts `rows` (each `columns.len()` values) into `table`, as many rows per statement as
/// the parameter limit allows.
fn insert_rows(
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    columns: &[&str],
    casts: &[(usize, &str)],
    rows: Vec<Vec<Param>>,
) -> anyhow::Result<()> {
    let per_statement = (MAX_PARAMS / columns.len()).max(1);
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Param>> = rows.by_ref().take(per_statement).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES {}",
            columns.join(", "),
            values_sql(chunk.len(), columns.len(), casts)
        );
        let params: Vec<&(dyn ToSql + Sync)> = chunk.iter().flatten().map(|p| &**p).collect();
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

fn request_row(t: &Trace, id: i64, redactor: Option<&super::Redactor>) -> Vec<Param> {
    let budget = t.input_budget.as_ref();
    vec![
        Box::new(id),
        Box::new(t.span_id.clone()),
        Box::new(t.trace_id.clone()),
        Box::new(t.parent_span_id.clone()),
        Box::new(t.started_at_ms),
        Box::new(t.duration_ms),
        Box::new(t.ttft_ms),
        Box::new(t.route.clone()),
        Box::new(t.class.clone()),
        Box::new(t.conversation_id.clone()),
        Box::new(t.user_id.clone()),
        Box::new(t.stream),
        Box::new(i32::from(t.status)),
        Box::new(t.outcome.clone()),
        Box::new(t.error.clone()),
        Box::new(t.fallback_level.clone()),
        Box::new(t.served_by.clone()),
        Box::new(t.usage.prompt_tokens as i64),
        Box::new(t.usage.completion_tokens as i64),
        Box::new(t.usage.cached_tokens() as i64),
        Box::new(t.cost_usd),
        Box::new(t.attempts.len() as i32),
        Box::new(
            t.request
                .as_ref()
                .map(|b| body_text(redactor, b).into_owned()),
        ),
        Box::new(
            t.response
                .as_ref()
                .map(|b| body_text(redactor, b).into_owned()),
        ),
        Box::new(i16::from(t.capability_level)),
        Box::new(t.cache.clone()),
        Box::new(t.cost_saved_usd),
        Box::new(t.cache_similarity),
        Box::new(
            (!t.guardrails.is_empty())
                .then(|| serde_json::to_string(&t.guardrails).unwrap_or_default()),
        ),
        Box::new(t.confidence),
        Box::new((!t.dropped_params.is_empty()).then(|| t.dropped_params.clone())),
        Box::new(t.prompt_version.clone()),
        Box::new(t.experiment.clone()),
        Box::new(t.variant.clone()),
        Box::new(t.response_model.clone()),
        Box::new(t.system_fingerprint.clone()),
        Box::new((!t.flags.is_empty()).then(|| t.flags.clone())),
        Box::new(budget.map(|b| b.tokens_before as i64)),
        Box::new(budget.map(|b| b.tokens_after as i64)),
        Box::new(budget.map(|b| i64::from(b.trimmed_messages))),
        Box::new(budget.map(|b| b.tokenizer.clone())),
        Box::new(t.tenant.clone()),
        Box::new(t.key_id.clone()),
    ]
}

fn attempt_row(request_id: i64, seq: usize, a: &Attempt) -> Vec<Param> {
    vec![
        Box::new(request_id),
        Box::new(seq as i32),
        Box::new(a.span_id.clone()),
        Box::new(a.target.clone()),
        Box::new(a.provider.clone()),
        Box::new(a.model.clone()),
        Box::new(a.offset_ms),
        Box::new(a.latency_ms),
        Box::new(a.ttft_ms),
        Box::new(a.status.clone()),
        Box::new(a.http_status.map(i32::from)),
        Box::new(a.error.clone()),
        Box::new(a.retryable),
        Box::new(a.cold_start),
        Box::new(a.tokens_in as i64),
        Box::new(a.tokens_out as i64),
        Box::new(a.tokens_cached as i64),
        Box::new(a.cost_usd),
    ]
}

fn summary(row: &Row) -> anyhow::Result<TraceSummary> {
    Ok(TraceSummary {
        trace_id: row.try_get(0)?,
        started_at_ms: row.try_get(1)?,
        duration_ms: row.try_get(2)?,
        ttft_ms: row.try_get(3)?,
        route: row.try_get(4)?,
        conversation_id: row.try_get(5)?,
        user_id: row.try_get(6)?,
        stream: row.try_get(7)?,
        status: u16::try_from(row.try_get::<_, i32>(8)?)?,
        outcome: row.try_get(9)?,
        fallback_level: row.try_get(10)?,
        served_by: row.try_get(11)?,
        tokens_in: u64::try_from(row.try_get::<_, i64>(12)?)?,
        tokens_out: u64::try_from(row.try_get::<_, i64>(13)?)?,
        cost_usd: row.try_get(14)?,
        attempts: u32::try_from(row.try_get::<_, i32>(15)?)?,
        capability_level: u8::try_from(row.try_get::<_, i16>(16)?)?,
        cache: row.try_get(17)?,
        cost_saved_usd: row.try_get(18)?,
        flags: row
            .try_get::<_, Option<Vec<String>>>(19)?
            .unwrap_or_default(),
    })
}

fn attempt(row: &Row) -> anyhow::Result<(i64, Attempt)> {
    Ok((
        row.try_get(0)?,
        Attempt {
            span_id: row.try_get(1)?,
            target: row.try_get(2)?,
            provider: row.try_get(3)?,
            model: row.try_get(4)?,
            offset_ms: row.try_get(5)?,
            latency_ms: row.try_get(6)?,
            ttft_ms: row.try_get(7)?,
            status: row.try_get(8)?,
            http_status: row
                .try_get::<_, Option<i32>>(9)?
                .map(u16::try_from)
                .transpose()?,
            error: row.try_get(10)?,
            retryable: row.try_get(11)?,
            cold_start: row.try_get(12)?,
            tokens_in: u64::try_from(row.try_get::<_, i64>(13)?)?,
            tokens_out: u64::try_from(row.try_get::<_, i64>(14)?)?,
            tokens_cached: u64::try_from(row.try_get::<_, i64>(15)?)?,
            cost_usd: row.try_get(16)?,
        },
    ))
}

/// A request row's fields beyond its summary, in the order the SQLite store gives them.
fn extra(r: &Row) -> anyhow::Result<Map<String, Value>> {
    let text = |i: usize| r.try_get::<_, Option<String>>(i);
    let mut extra = Map::new();
    extra.insert("span_id".into(), json!(r.try_get::<_, String>(20)?));
    extra.insert("parent_span_id".into(), json!(text(21)?));
    extra.insert("class".into(), json!(r.try_get::<_, String>(22)?));
    extra.insert("error".into(), json!(text(23)?));
    extra.insert("tokens_cached".into(), json!(r.try_get::<_, i64>(24)?));
    extra.insert("request".into(), body_value(text(25)?));
    extra.insert("response".into(), body_value(text(26)?));
    extra.insert(
        "cache_similarity".into(),
        json!(r.try_get::<_, Option<f64>>(28)?),
    );
    extra.insert(
        "guardrails".into(),
        text(29)?
            .and_then(|g| serde_json::from_str(&g).ok())
            .unwrap_or_else(|| json!([])),
    );
    extra.insert("confidence".into(), json!(r.try_get::<_, Option<f64>>(30)?));
    extra.insert(
        "dropped_params".into(),
        json!(r.try_get::<_, Option<Vec<String>>>(31)?.unwrap_or_default()),
    );
    for (i, key) in [
        (32, "prompt_version"),
        (33, "experiment"),
        (34, "variant"),
        (35, "response_model"),
        (36, "system_fingerprint"),
    ] {
        extra.insert(key.into(), json!(text(i)?));
    }
    for (i, key) in [
        (37, "input_tokens_before"),
        (38, "input_tokens_after"),
        (39, "trimmed_messages"),
    ] {
        extra.insert(key.into(), json!(r.try_get::<_, Option<i64>>(i)?));
    }
    extra.insert("tokenizer".into(), json!(text(40)?));
    extra.insert("tenant".into(), json!(text(41)?));
    extra.insert("key_id".into(), json!(text(42)?));
    Ok(extra)
}

impl TraceStore for PostgresStore {
    fn write_batch(&mut self, traces: &[Trace]) -> anyhow::Result<()> {
        if traces.is_empty() {
            return Ok(());
        }
        let redactor = self.redactor.as_ref();
        self.pool.with(|client| {
            let mut tx = client.transaction()?;
            // Ids are taken first, in ascending order, so attempts can name their request
            // and newer rows sort after older ones, as in SQLite.
            let mut ids: Vec<i64> = tx
                .query(
                    "SELECT nextval('requests_id_seq') FROM generate_series(1::bigint, $1::bigint)",
                    &[&(traces.len() as i64)],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?;
            ids.sort_unstable();
            anyhow::ensure!(ids.len() == traces.len(), "the id sequence fell short");
            let requests = traces
                .iter()
                .zip(&ids)
                .map(|(t, id)| request_row(t, *id, redactor))
                .collect();
            // guardrails is sent as text and stored as JSONB.
            insert_rows(
                &mut tx,
                "requests",
                REQUEST_COLUMNS,
                &[(28, "::text::jsonb")],
                requests,
            )?;
            let attempts: Vec<Vec<Param>> = traces
                .iter()
                .zip(&ids)
                .flat_map(|(t, id)| {
                    t.attempts
                        .iter()
                        .enumerate()
                        .map(move |(seq, a)| attempt_row(*id, seq, a))
                })
                .collect();
            insert_rows(&mut tx, "attempts", ATTEMPT_COLUMNS, &[], attempts)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn get(&self, trace_id: &str) -> anyhow::Result<Option<Value>> {
        self.pool.with(|client| {
            let rows = client.query(
                &format!(
                    "SELECT {SUMMARY_COLUMNS}, span_id, parent_span_id, class, error, tokens_cached, \
                     request, response, id, cache_similarity, guardrails::text, confidence, \
                     dropped_params, prompt_version, experiment, variant, response_model, \
                     system_fingerprint, input_tokens_before, input_tokens_after, trimmed_messages, \
                     tokenizer, tenant, key_id \
                     FROM requests WHERE trace_id = $1 ORDER BY started_at_ms, id"
                ),
                &[&trace_id],
            )?;
            if rows.is_empty() {
                return Ok(None);
            }
            let ids: Vec<i64> = rows
                .iter()
                .map(|r| r.try_get(27))
                .collect::<Result<_, _>>()?;
            let mut attempts: std::collections::HashMap<i64, Vec<Attempt>> =
                std::collections::HashMap::new();
            for row in client.query(
                "SELECT request_id, span_id, target, provider, model, offset_ms, latency_ms, \
                 ttft_ms, status, http_status, error, retryable, cold_start, tokens_in, \
                 tokens_out, tokens_cached, cost_usd \
                 FROM attempts WHERE request_id = ANY($1) ORDER BY request_id, seq",
                &[&ids],
            )? {
                let (id, a) = attempt(&row)?;
                attempts.entry(id).or_default().push(a);
            }
            let mut requests = Vec::with_capacity(rows.len());
            for (row, id) in rows.iter().zip(ids) {
                let mut obj = match serde_json::to_value(summary(row)?)? {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                obj.extend(extra(row)?);
                obj.insert(
                    "attempts".into(),
                    serde_json::to_value(attempts.remove(&id).unwrap_or_default())?,
                );
                requests.push(Value::Object(obj));
            }
            Ok(Some(
                json!({ "object": "trace", "trace_id": trace_id, "requests": requests }),
            ))
        })
    }

    fn list(&self, filter: &TraceFilter) -> anyhow::Result<Vec<TraceSummary>> {
        self.pool.with(|client| {
            let has_feedback: bool = client
                .query_one("SELECT to_regclass('feedback') IS NOT NULL", &[])?
                .try_get(0)?;
            let (where_sql, args) =
                where_clause(Dialect::Postgres, filter, now_ms(), has_feedback)?;
            let args: Vec<Param> = args
                .into_iter()
                .map(|a| -> Param {
                    match a {
                        Arg::Text(t) => Box::new(t),
                        Arg::Int(i) => Box::new(i),
                    }
                })
                .collect();
            let limit = filter.limit.unwrap_or(100).clamp(1, 1000);
            let sql = format!(
                "SELECT {SUMMARY_COLUMNS} FROM requests {where_sql} \
                 ORDER BY started_at_ms DESC, id DESC LIMIT {limit}"
            );
            let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|p| &**p).collect();
            client.query(&sql, &params)?.iter().map(summary).collect()
        })
    }
}

mod read;
#[cfg(test)]
mod tests;

pub use read::write_app_spans;
