//! The PostgreSQL store's read views: the same answers as the SQLite store's
//! (`store/views.rs`), computed by the same functions from rows fetched here.

use postgres::{Client, Row};
use serde_json::{Value, json};

use super::PostgresStore;
use crate::otlp::AppSpan;
use crate::store::views::{
    ConversationTurn, RouteStats, STATS_ROWS, STATS_SQL, StatsRow, answer_text, attach_feedback,
    question_text, retain_tenant, route_stats,
};
use crate::store::{TraceFilter, TraceReader, TraceStore, TraceSummary};

const SPAN_COLUMNS: &str = "span_id, parent_span_id, name, kind, service, start_ms, end_ms, \
     status_code, status_message, attributes, events, conversation_id, trace_id, tenant";

/// Writes app spans in one transaction; a span sent twice is kept once (the newer).
pub fn write_app_spans(
    client: &mut Client,
    spans: &[AppSpan],
    tenant: Option<&str>,
) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    let st = tx.prepare(
        "INSERT INTO app_spans (trace_id, span_id, parent_span_id, name, kind, service, start_ms, \
         end_ms, status_code, status_message, attributes, events, conversation_id, tenant) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::text::jsonb, $12::text::jsonb, $13, $14) \
         ON CONFLICT (trace_id, span_id) DO UPDATE SET parent_span_id = EXCLUDED.parent_span_id, \
         name = EXCLUDED.name, kind = EXCLUDED.kind, service = EXCLUDED.service, \
         start_ms = EXCLUDED.start_ms, end_ms = EXCLUDED.end_ms, status_code = EXCLUDED.status_code, \
         status_message = EXCLUDED.status_message, attributes = EXCLUDED.attributes, \
         events = EXCLUDED.events, conversation_id = EXCLUDED.conversation_id, tenant = EXCLUDED.tenant",
    )?;
    for s in spans {
        let attributes = Value::Object(s.attributes.clone()).to_string();
        let events = Value::Array(s.events.clone()).to_string();
        tx.execute(
            &st,
            &[
                &s.trace_id,
                &s.span_id,
                &s.parent_span_id,
                &s.name,
                &s.kind,
                &s.service,
                &s.start_ms,
                &s.end_ms,
                &s.status_code,
                &s.status_message,
                &attributes,
                &events,
                &s.conversation_id,
                &tenant,
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// A stored span as the trace API answers it (the SQLite store's shape).
fn span_json(r: &Row) -> anyhow::Result<Value> {
    let json_col = |i: usize| -> anyhow::Result<Value> {
        let text: String = r.try_get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    Ok(json!({
        "span_id": r.try_get::<_, String>(0)?,
        "parent_span_id": r.try_get::<_, Option<String>>(1)?,
        "name": r.try_get::<_, String>(2)?,
        "kind": r.try_get::<_, i32>(3)?,
        "service": r.try_get::<_, Option<String>>(4)?,
        "start_ms": r.try_get::<_, f64>(5)?,
        "end_ms": r.try_get::<_, f64>(6)?,
        "status_code": r.try_get::<_, i32>(7)?,
        "status_message": r.try_get::<_, Option<String>>(8)?,
        "attributes": json_col(9)?,
        "events": json_col(10)?,
        "conversation_id": r.try_get::<_, Option<String>>(11)?,
        "trace_id": r.try_get::<_, String>(12)?,
        "tenant": r.try_get::<_, Option<String>>(13)?,
    }))
}

/// Spans matching `clause` (with `$1` the key), oldest first. JSONB columns are read back
/// as text so the JSON is the one that was written.
fn spans_where(client: &mut Client, clause: &str, key: &str) -> anyhow::Result<Vec<Value>> {
    let columns = SPAN_COLUMNS
        .replace("attributes,", "attributes::text,")
        .replace("events,", "events::text,");
    let sql =
        format!("SELECT {columns} FROM app_spans WHERE {clause} ORDER BY start_ms LIMIT 5000");
    client.query(&sql, &[&key])?.iter().map(span_json).collect()
}

fn feedback_exists(client: &mut Client) -> anyhow::Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass('feedback') IS NOT NULL", &[])?
        .try_get(0)?)
}

fn turn(r: &Row) -> anyhow::Result<ConversationTurn> {
    let body = |i: usize| -> anyhow::Result<Value> {
        let text: Option<String> = r.try_get(i)?;
        Ok(text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null))
    };
    Ok(ConversationTurn {
        trace_id: r.try_get(0)?,
        started_at_ms: r.try_get(1)?,
        duration_ms: r.try_get(2)?,
        ttft_ms: r.try_get(3)?,
        route: r.try_get(4)?,
        status: u16::try_from(r.try_get::<_, i32>(5)?).unwrap_or(0),
        outcome: r.try_get(6)?,
        fallback_level: r.try_get(7)?,
        served_by: r.try_get(8)?,
        cache: r.try_get(9)?,
        tokens_in: r.try_get::<_, i64>(10)?.max(0) as u64,
        tokens_out: r.try_get::<_, i64>(11)?.max(0) as u64,
        cost_usd: r.try_get(12)?,
        flags: r.try_get::<_, Option<Vec<String>>>(13)?.unwrap_or_default(),
        question: question_text(&body(14)?),
        answer: answer_text(&body(15)?),
        feedback: Vec::new(),
    })
}

impl TraceReader for PostgresStore {
    fn get(&self, trace_id: &str) -> anyhow::Result<Option<Value>> {
        TraceStore::get(self, trace_id)
    }

    fn list(&self, filter: &TraceFilter) -> anyhow::Result<Vec<TraceSummary>> {
        TraceStore::list(self, filter)
    }

    fn app_spans(&self, trace_id: &str) -> anyhow::Result<Vec<Value>> {
        self.pool
            .with(|client| spans_where(client, "trace_id = $1", trace_id))
    }

    fn conversation(
        &self,
        conversation_id: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Vec<ConversationTurn>> {
        self.pool.with(|client| {
            let mut turns: Vec<ConversationTurn> = client
                .query(
                    "SELECT trace_id, started_at_ms, duration_ms, ttft_ms, route, status, outcome, \
                     fallback_level, served_by, cache, tokens_in, tokens_out, cost_usd, flags, \
                     request, response FROM requests \
                     WHERE conversation_id = $1 AND ($2::text IS NULL OR tenant = $2) \
                     ORDER BY started_at_ms, id LIMIT 2000",
                    &[&conversation_id, &tenant],
                )?
                .iter()
                .map(turn)
                .collect::<anyhow::Result<_>>()?;
            if turns.is_empty() || !feedback_exists(client)? {
                return Ok(turns);
            }
            let rows = client
                .query(
                    "SELECT trace_id, name, value_num, value_text, negative::int, comment, source \
                     FROM feedback WHERE conversation_id = $1 OR trace_id IN \
                     (SELECT trace_id FROM requests WHERE conversation_id = $1) \
                     ORDER BY created_at_ms",
                    &[&conversation_id],
                )?
                .iter()
                .map(|r| -> anyhow::Result<(String, Value)> {
                    let value = r
                        .try_get::<_, Option<f64>>(2)?
                        .map(Value::from)
                        .or(r.try_get::<_, Option<String>>(3)?.map(Value::from));
                    Ok((
                        r.try_get(0)?,
                        json!({
                            "name": r.try_get::<_, String>(1)?,
                            "value": value,
                            "negative": r.try_get::<_, i32>(4)? != 0,
                            "comment": r.try_get::<_, Option<String>>(5)?,
                            "source": r.try_get::<_, String>(6)?,
                        }),
                    ))
                })
                .collect::<anyhow::Result<_>>()?;
            attach_feedback(&mut turns, rows);
            Ok(turns)
        })
    }

    fn conversation_spans(
        &self,
        conversation_id: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut spans = self.pool.with(|client| {
            spans_where(
                client,
                "conversation_id = $1 OR trace_id IN \
                 (SELECT trace_id FROM requests WHERE conversation_id = $1)",
                conversation_id,
            )
        })?;
        retain_tenant(&mut spans, tenant);
        Ok(spans)
    }

    fn route_stats(&self, since_ms: i64, until_ms: i64) -> anyhow::Result<Vec<RouteStats>> {
        let rows = self.pool.with(|client| {
            client
                .query(STATS_SQL, &[&since_ms, &until_ms, &STATS_ROWS])?
                .iter()
                .map(|r| -> anyhow::Result<StatsRow> {
                    Ok(StatsRow {
                        route: r.try_get(0)?,
                        class: r.try_get(1)?,
                        duration: r.try_get(2)?,
                        ttft: r.try_get(3)?,
                        fallback: r.try_get(4)?,
                        cache: r.try_get(5)?,
                        cost: r.try_get(6)?,
                        conversation: r.try_get(7)?,
                        user: r.try_get(8)?,
                        error: r.try_get::<_, i32>(9)? >= 500,
                        cold: r.try_get(10)?,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })?;
        Ok(route_stats(rows))
    }

    fn traces_with_failed_spans(&self, limit: u32) -> anyhow::Result<Vec<String>> {
        self.pool.with(|client| {
            Ok(client
                .query(
                    "SELECT trace_id FROM app_spans WHERE status_code = 2 \
                     GROUP BY trace_id ORDER BY MAX(start_ms) DESC LIMIT $1",
                    &[&i64::from(limit)],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?)
        })
    }

    fn distinct(&self, column: &str) -> anyhow::Result<Vec<String>> {
        let column = crate::store::distinct_column(column)?;
        self.pool.with(|client| {
            let sql = format!(
                "SELECT DISTINCT {column} FROM (SELECT {column} FROM requests ORDER BY id DESC \
                 LIMIT 20000) recent WHERE {column} IS NOT NULL ORDER BY 1 LIMIT 200"
            );
            Ok(client
                .query(&sql, &[])?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<Result<_, _>>()?)
        })
    }
}
