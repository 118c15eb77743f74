//! Read views over the trace store that the API and the web UI share: a conversation's
//! turns with their feedback, and per-route latency against budget, fallback, cache and
//! cost figures over a window (docs/observability.md).

use std::collections::{BTreeMap, HashMap, HashSet};

use rusqlite::params;
use serde::Serialize;
use serde_json::{Value, json};

use super::SqliteStore;

/// One request of a conversation, with what the user asked and what they got.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationTurn {
    pub trace_id: String,
    pub started_at_ms: i64,
    pub duration_ms: f64,
    pub ttft_ms: Option<f64>,
    pub route: String,
    pub status: u16,
    pub outcome: String,
    pub fallback_level: String,
    pub served_by: Option<String>,
    pub cache: String,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    pub flags: Vec<String>,
    /// The last user message of the request (as stored: redacted where the store redacts).
    pub question: Option<String>,
    pub answer: Option<String>,
    /// Feedback on this turn: `{name, value, negative, comment, source}`.
    pub feedback: Vec<Value>,
}

/// Latency against the class budget, and where answers came from, for one route.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RouteStats {
    pub route: String,
    pub class: String,
    /// The class's whole-response budget and first-token budget (ms).
    pub budget_ms: u64,
    pub ttft_budget_ms: Option<u64>,
    pub requests: u64,
    /// Percentiles of warm requests (no cold-start attempt); cold ones apart.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub cold_starts: u64,
    pub cold_p50_ms: Option<f64>,
    pub cold_p90_ms: Option<f64>,
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p90_ms: Option<f64>,
    /// Share of requests over the class budget (total, or first token).
    pub over_budget: f64,
    pub error_rate: f64,
    pub cache_hit_rate: f64,
    /// Share of requests per fallback level.
    pub fallback_levels: BTreeMap<String, f64>,
    pub cost_usd: f64,
    pub cost_per_request: f64,
    pub cost_per_conversation: Option<f64>,
    pub cost_per_user: Option<f64>,
}

/// The most rows a stats window reads (the newest).
pub(super) const STATS_ROWS: i64 = 200_000;

/// Keeps the rows (requests or app spans, as JSON) of a tenant; all of them without one.
pub fn retain_tenant(rows: &mut Vec<Value>, tenant: Option<&str>) {
    if let Some(t) = tenant {
        rows.retain(|r| r["tenant"].as_str() == Some(t));
    }
}

/// A trace as `GET /v1/traces/{id}` answers it (with `app_spans`), narrowed to a tenant;
/// `None` when nothing of it is the tenant's.
pub fn scoped_trace(
    trace: Option<Value>,
    mut spans: Vec<Value>,
    tenant: Option<&str>,
) -> Option<(Value, Vec<Value>)> {
    let mut trace = trace.unwrap_or_else(|| json!({"object": "trace", "requests": []}));
    if let Some(requests) = trace["requests"].as_array_mut() {
        retain_tenant(requests, tenant);
    }
    retain_tenant(&mut spans, tenant);
    let empty = trace["requests"].as_array().is_none_or(Vec::is_empty);
    (!empty || !spans.is_empty()).then_some((trace, spans))
}

/// The columns a route's figures are computed from; `?1`/`$1` since, `?2`/`$2` until,
/// `?3`/`$3` the row limit (the same text runs on both backends).
pub(super) const STATS_SQL: &str = "SELECT route, class, duration_ms, ttft_ms, fallback_level, cache, cost_usd, \
     conversation_id, user_id, status, \
     EXISTS (SELECT 1 FROM attempts a WHERE a.request_id = requests.id AND a.cold_start) \
     FROM requests WHERE started_at_ms >= $1 AND started_at_ms < $2 \
     ORDER BY started_at_ms DESC LIMIT $3";

/// One request as route figures see it.
pub(super) struct StatsRow {
    pub route: String,
    pub class: String,
    pub duration: f64,
    pub ttft: Option<f64>,
    pub fallback: String,
    pub cache: String,
    pub cost: f64,
    pub conversation: Option<String>,
    pub user: Option<String>,
    pub error: bool,
    pub cold: bool,
}

/// Per-route figures of a window's requests, whichever store they came from.
pub(super) fn route_stats(rows: Vec<StatsRow>) -> Vec<RouteStats> {
    let mut by_route: BTreeMap<String, Vec<StatsRow>> = BTreeMap::new();
    for row in rows {
        by_route.entry(row.route.clone()).or_default().push(row);
    }
    let mut out = Vec::with_capacity(by_route.len());
    for (route, rows) in by_route {
        let class = rows.first().map(|r| r.class.clone()).unwrap_or_default();
        let (budget_ms, ttft_budget_ms) = match class.as_str() {
            "sync" => (1_000, None),
            "progressive" => (5_000, Some(500)),
            _ => (20_000, None),
        };
        let n = rows.len() as f64;
        let warm = sorted(
            rows.iter()
                .filter(|r| !r.cold)
                .map(|r| r.duration)
                .collect(),
        );
        let cold = sorted(rows.iter().filter(|r| r.cold).map(|r| r.duration).collect());
        let ttft = sorted(rows.iter().filter_map(|r| r.ttft).collect());
        let over = rows
            .iter()
            .filter(|r| crate::anomaly::over_budget(&r.class, r.duration, r.ttft))
            .count();
        let mut levels: BTreeMap<String, f64> = BTreeMap::new();
        for r in &rows {
            *levels.entry(r.fallback.clone()).or_default() += 1.0;
        }
        levels.values_mut().for_each(|c| *c /= n);
        let cost: f64 = rows.iter().map(|r| r.cost).sum();
        let per = |key: fn(&StatsRow) -> Option<&String>| -> Option<f64> {
            let mut sums: HashMap<&String, f64> = HashMap::new();
            for r in &rows {
                if let Some(k) = key(r) {
                    *sums.entry(k).or_default() += r.cost;
                }
            }
            (!sums.is_empty()).then(|| sums.values().sum::<f64>() / sums.len() as f64)
        };
        out.push(RouteStats {
            route,
            class: class.clone(),
            budget_ms,
            ttft_budget_ms,
            requests: rows.len() as u64,
            p50_ms: percentile(&warm, 0.50),
            p90_ms: percentile(&warm, 0.90),
            p99_ms: percentile(&warm, 0.99),
            cold_starts: cold.len() as u64,
            cold_p50_ms: percentile(&cold, 0.50),
            cold_p90_ms: percentile(&cold, 0.90),
            ttft_p50_ms: percentile(&ttft, 0.50),
            ttft_p90_ms: percentile(&ttft, 0.90),
            over_budget: over as f64 / n,
            error_rate: rows.iter().filter(|r| r.error).count() as f64 / n,
            cache_hit_rate: rows.iter().filter(|r| r.cache != "miss").count() as f64 / n,
            fallback_levels: levels,
            cost_usd: cost,
            cost_per_request: cost / n,
            cost_per_conversation: per(|r| r.conversation.as_ref()),
            cost_per_user: per(|r| r.user.as_ref()),
        });
    }
    out
}

/// Gives each turn its feedback (`(trace id, feedback)` rows, oldest first), once each.
pub(super) fn attach_feedback(turns: &mut [ConversationTurn], rows: Vec<(String, Value)>) {
    let mut by_trace: HashMap<String, Vec<Value>> = HashMap::new();
    let mut seen = HashSet::new();
    for (trace, v) in rows {
        if seen.insert((trace.clone(), v.to_string())) {
            by_trace.entry(trace).or_default().push(v);
        }
    }
    for t in turns {
        if let Some(f) = by_trace.remove(&t.trace_id) {
            t.feedback = f;
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The last user message's text in a stored request body.
pub fn question_text(request: &Value) -> Option<String> {
    let messages = request["messages"].as_array()?;
    let m = messages.iter().rev().find(|m| m["role"] == "user")?;
    Some(content_text(&m["content"]))
}

/// The first choice's text in a stored response body.
pub fn answer_text(response: &Value) -> Option<String> {
    let message = &response["choices"][0]["message"];
    if message.is_null() {
        return response.as_str().map(str::to_string);
    }
    let text = content_text(&message["content"]);
    if !text.is_empty() {
        return Some(text);
    }
    message["refusal"]
        .as_str()
        .map(str::to_string)
        .or_else(|| (!message["tool_calls"].is_null()).then(|| message["tool_calls"].to_string()))
}

fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

impl SqliteStore {
    /// A conversation's requests, oldest first, with their feedback.
    pub fn conversation(
        &self,
        conversation_id: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Vec<ConversationTurn>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT trace_id, started_at_ms, duration_ms, ttft_ms, route, status, outcome, \
             fallback_level, served_by, cache, tokens_in, tokens_out, cost_usd, flags, request, response \
             FROM requests WHERE conversation_id = ?1 AND (?2 IS NULL OR tenant = ?2) \
             ORDER BY started_at_ms, id LIMIT 2000",
        )?;
        let mut turns: Vec<ConversationTurn> = stmt
            .query_map(params![conversation_id, tenant], |r| {
                let body = |i: usize| -> rusqlite::Result<Value> {
                    let text: Option<String> = r.get(i)?;
                    Ok(text
                        .and_then(|t| serde_json::from_str(&t).ok())
                        .unwrap_or(Value::Null))
                };
                let flags: Option<String> = r.get(13)?;
                Ok(ConversationTurn {
                    trace_id: r.get(0)?,
                    started_at_ms: r.get(1)?,
                    duration_ms: r.get(2)?,
                    ttft_ms: r.get(3)?,
                    route: r.get(4)?,
                    status: r.get(5)?,
                    outcome: r.get(6)?,
                    fallback_level: r.get(7)?,
                    served_by: r.get(8)?,
                    cache: r.get(9)?,
                    tokens_in: r.get(10)?,
                    tokens_out: r.get(11)?,
                    cost_usd: r.get(12)?,
                    flags: flags
                        .map(|f| f.split(',').map(str::to_string).collect())
                        .unwrap_or_default(),
                    question: question_text(&body(14)?),
                    answer: answer_text(&body(15)?),
                    feedback: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        if turns.is_empty() || !super::sqlite::table_exists(&self.conn, "feedback")? {
            return Ok(turns);
        }
        let mut fb = self.conn.prepare_cached(
            "SELECT trace_id, name, value_num, value_text, negative, comment, source \
             FROM feedback WHERE conversation_id = ?1 OR trace_id IN \
             (SELECT trace_id FROM requests WHERE conversation_id = ?1) ORDER BY created_at_ms",
        )?;
        let rows = fb.query_map(params![conversation_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                json!({
                    "name": r.get::<_, String>(1)?,
                    "value": r.get::<_, Option<f64>>(2)?.map(Value::from)
                        .or(r.get::<_, Option<String>>(3)?.map(Value::from)),
                    "negative": r.get::<_, bool>(4)?,
                    "comment": r.get::<_, Option<String>>(5)?,
                    "source": r.get::<_, String>(6)?,
                }),
            ))
        })?;
        attach_feedback(&mut turns, rows.collect::<Result<Vec<_>, _>>()?);
        Ok(turns)
    }

    /// The app's OTLP spans of a conversation: those carrying its id, and those of its
    /// requests' traces; oldest first.
    pub fn conversation_spans(
        &self,
        conversation_id: &str,
        tenant: Option<&str>,
    ) -> anyhow::Result<Vec<Value>> {
        let mut spans = crate::otlp::read_conversation(&self.conn, conversation_id)?;
        retain_tenant(&mut spans, tenant);
        Ok(spans)
    }

    /// Per-route figures for requests started in `[since_ms, until_ms)`.
    pub fn route_stats(&self, since_ms: i64, until_ms: i64) -> anyhow::Result<Vec<RouteStats>> {
        let mut stmt = self.conn.prepare_cached(STATS_SQL)?;
        let rows = stmt.query_map(params![since_ms, until_ms, STATS_ROWS], |r| {
            Ok(StatsRow {
                route: r.get(0)?,
                class: r.get(1)?,
                duration: r.get(2)?,
                ttft: r.get(3)?,
                fallback: r.get(4)?,
                cache: r.get(5)?,
                cost: r.get(6)?,
                conversation: r.get(7)?,
                user: r.get(8)?,
                error: r.get::<_, u16>(9)? >= 500,
                cold: r.get(10)?,
            })
        })?;
        Ok(route_stats(rows.collect::<Result<_, _>>()?))
    }

    /// Traces whose app spans (OTLP) include a failed one, newest first.
    pub fn traces_with_failed_spans(&self, limit: u32) -> anyhow::Result<Vec<String>> {
        if !super::sqlite::table_exists(&self.conn, "app_spans")? {
            return Ok(Vec::new());
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT trace_id FROM app_spans WHERE status_code = 2 \
             GROUP BY trace_id ORDER BY MAX(start_ms) DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every distinct value of a column seen recently (for the UI's filter lists).
    pub fn distinct(&self, column: &str) -> anyhow::Result<Vec<String>> {
        let column = super::distinct_column(column)?;
        let mut stmt = self.conn.prepare(&format!(
            "SELECT DISTINCT {column} FROM (SELECT {column} FROM requests ORDER BY id DESC LIMIT 20000) \
             WHERE {column} IS NOT NULL ORDER BY 1 LIMIT 200"
        ))?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{TraceStore, sqlite_sample};

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = sorted((1..=100).map(f64::from).collect());
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn route_stats_split_cold_starts_and_count_over_budget() {
        let dir = std::env::temp_dir().join(format!("trestle-views-{}", std::process::id()));
        let mut store = SqliteStore::open(&dir.join("t.db")).unwrap();
        let mut traces = Vec::new();
        for i in 0..10 {
            let mut t = sqlite_sample(&format!("t{i}"), &format!("s{i}"), "c1");
            t.class = "sync".into();
            t.duration_ms = 100.0 * f64::from(i + 1);
            t.ttft_ms = None;
            t.attempts[0].cold_start = i == 9;
            t.cost_usd = 0.01;
            t.user_id = Some(format!("u{}", i % 2));
            traces.push(t);
        }
        // Over the sync budget, and warm.
        traces[8].duration_ms = 1_500.0;
        store.write_batch(&traces).unwrap();
        let stats = store.route_stats(0, i64::MAX).unwrap();
        assert_eq!(stats.len(), 1);
        let s = &stats[0];
        assert_eq!(s.requests, 10);
        assert_eq!(s.cold_starts, 1);
        assert_eq!(s.cold_p50_ms, Some(1_000.0));
        assert_eq!(s.p99_ms, Some(1_500.0));
        assert!((s.over_budget - 0.1).abs() < 1e-9, "{}", s.over_budget);
        assert!((s.cost_per_conversation.unwrap() - 0.1).abs() < 1e-9);
        assert!((s.cost_per_user.unwrap() - 0.05).abs() < 1e-9);
        assert_eq!(s.fallback_levels["model"], 1.0);
        let turns = store.conversation("c1", None).unwrap();
        assert!(store.conversation("c1", Some("other")).unwrap().is_empty());
        assert_eq!(turns.len(), 10);
        assert!(turns[0].started_at_ms <= turns[9].started_at_ms);
        std::fs::remove_dir_all(dir).ok();
    }
}
