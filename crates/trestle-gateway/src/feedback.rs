//! Feedback tied to the answer that earned it (docs/experiments.md): `POST /v1/feedback`
//! checks the kind and value against `[feedback.NAME]` and the trace id against recent traces
//! and the store, and keeps each piece with the trace's route, prompt version, experiment and
//! variant, so readouts and mining join nothing at read time. Implicit signals come from
//! traffic the gateway already sees: a regeneration (the same conversation asking the same
//! thing again within ten minutes) and a correction's edit distance to the answer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;
use serde_json::{Value, json};
use trestle_core::experiment::{FeedbackConfig, FeedbackKind};

use crate::error::GatewayError;
use crate::state::SharedState;

/// What feedback needs to know of a trace.
#[derive(Debug, Clone, Default)]
pub struct TraceMeta {
    pub route: String,
    pub conversation_id: Option<String>,
    pub experiment: Option<String>,
    pub variant: Option<String>,
    pub prompt_version: Option<String>,
    /// The tenant of the key that made the request, when keys are in use.
    pub tenant: Option<String>,
}

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

/// Feedback's place in the trace store, recent traces, and the regeneration detector.
pub struct Feedback {
    conn: Option<Mutex<Connection>>,
    recent: moka::sync::Cache<String, Arc<TraceMeta>>,
    /// conversation id → (hash of the last user message, its trace id).
    last_question: moka::sync::Cache<String, (u64, String)>,
}

/// How long a repeated question counts as a regeneration.
const REGENERATION_WINDOW: Duration = Duration::from_secs(600);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Feedback {
    pub fn new(db: Option<PathBuf>) -> Self {
        let conn = db.and_then(|p| {
            let c = Connection::open(&p).ok()?;
            c.busy_timeout(Duration::from_secs(5)).ok()?;
            match c.execute_batch(SCHEMA) {
                Ok(()) => Some(Mutex::new(c)),
                Err(e) => {
                    tracing::error!("feedback store {}: {e}", p.display());
                    None
                }
            }
        });
        Feedback {
            conn,
            recent: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(Duration::from_secs(86_400))
                .build(),
            last_question: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(REGENERATION_WINDOW)
                .build(),
        }
    }

    /// Remembers a finished trace for feedback that comes before the store has it.
    pub fn remember(&self, trace_id: &str, meta: TraceMeta) {
        self.recent.insert(trace_id.to_string(), Arc::new(meta));
    }

    /// A request's question in a conversation: when it repeats the last one, the last answer
    /// was regenerated, which is recorded as feedback `regenerated` on that answer's trace.
    pub fn question(&self, conversation_id: &str, question: &str, trace_id: &str) {
        use std::hash::{Hash, Hasher};
        if self.conn.is_none() {
            return;
        }
        let mut h = std::hash::DefaultHasher::new();
        question.trim().hash(&mut h);
        let hash = h.finish();
        if let Some((last, previous)) = self.last_question.get(conversation_id)
            && last == hash
            && previous != trace_id
        {
            let meta = self.meta(&previous);
            let row = Row {
                id: format!("{previous}:regenerated:{trace_id}"),
                trace_id: previous.clone(),
                name: "regenerated".into(),
                value_num: Some(1.0),
                value_text: None,
                negative: true,
                comment: None,
                correction: None,
                source: "implicit",
                meta: meta.unwrap_or_default(),
            };
            let _ = self.insert(&row);
        }
        self.last_question
            .insert(conversation_id.to_string(), (hash, trace_id.to_string()));
    }

    fn meta(&self, trace_id: &str) -> Option<TraceMeta> {
        if let Some(m) = self.recent.get(trace_id) {
            return Some((*m).clone());
        }
        let conn = self.conn.as_ref()?.lock().ok()?;
        conn.query_row(
            "SELECT route, conversation_id, experiment, variant, prompt_version, tenant FROM requests WHERE trace_id = ?1 LIMIT 1",
            [trace_id],
            |r| Ok(TraceMeta { route: r.get(0)?, conversation_id: r.get(1)?, experiment: r.get(2)?, variant: r.get(3)?, prompt_version: r.get(4)?, tenant: r.get(5)? }),
        )
        .optional()
        .ok()
        .flatten()
    }

    /// The answer text of a trace, from the store.
    fn answer(&self, trace_id: &str) -> Option<String> {
        let conn = self.conn.as_ref()?.lock().ok()?;
        let body: Option<String> = conn
            .query_row("SELECT response FROM requests WHERE trace_id = ?1 AND response IS NOT NULL LIMIT 1", [trace_id], |r| r.get(0))
            .optional()
            .ok()
            .flatten();
        let v: Value = serde_json::from_str(&body?).ok()?;
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(String::from)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Connection>, String> {
        let conn = self
            .conn
            .as_ref()
            .ok_or("feedback needs the trace store ([store] enabled)")?;
        conn.lock()
            .map_err(|_| "feedback store poisoned".to_string())
    }

    /// Inserts a row; `Ok(false)` when a row with its id exists already (a retry).
    fn insert(&self, r: &Row) -> Result<bool, String> {
        let conn = self.lock()?;
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO feedback (id, trace_id, name, value_num, value_text, negative, comment, correction, source, created_at_ms,
                                                 route, conversation_id, experiment, variant, prompt_version)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    r.id, r.trace_id, r.name, r.value_num, r.value_text, r.negative, r.comment, r.correction, r.source, now_ms(),
                    r.meta.route, r.meta.conversation_id, r.meta.experiment, r.meta.variant, r.meta.prompt_version
                ],
            )
            .map_err(|e| format!("feedback store: {e}"))?;
        Ok(n == 1)
    }

    fn list(
        &self,
        trace_id: Option<&str>,
        conversation_id: Option<&str>,
    ) -> Result<Vec<Value>, String> {
        let conn = self.lock()?;
        let mut st = conn
            .prepare(
                "SELECT id, trace_id, name, value_num, value_text, negative, comment, correction, source, created_at_ms,
                        route, conversation_id, experiment, variant, prompt_version
                 FROM feedback WHERE (?1 IS NULL OR trace_id = ?1) AND (?2 IS NULL OR conversation_id = ?2)
                 ORDER BY created_at_ms, rowid LIMIT 1000",
            )
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map(params![trace_id, conversation_id], |r| {
                Ok(json!({
                    "id": r.get::<_, String>(0)?, "trace_id": r.get::<_, String>(1)?, "name": r.get::<_, String>(2)?,
                    "value": r.get::<_, Option<String>>(4)?.map(Value::String).unwrap_or_else(|| json!(r.get::<_, Option<f64>>(3).ok().flatten())),
                    "negative": r.get::<_, bool>(5)?, "comment": r.get::<_, Option<String>>(6)?, "correction": r.get::<_, Option<String>>(7)?,
                    "source": r.get::<_, String>(8)?, "created_at_ms": r.get::<_, i64>(9)?, "route": r.get::<_, Option<String>>(10)?,
                    "conversation_id": r.get::<_, Option<String>>(11)?, "experiment": r.get::<_, Option<String>>(12)?,
                    "variant": r.get::<_, Option<String>>(13)?, "prompt_version": r.get::<_, Option<String>>(14)?,
                }))
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }
}

struct Row {
    id: String,
    trace_id: String,
    name: String,
    value_num: Option<f64>,
    value_text: Option<String>,
    negative: bool,
    comment: Option<String>,
    correction: Option<String>,
    source: &'static str,
    meta: TraceMeta,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackRequest {
    trace_id: String,
    name: String,
    #[serde(default)]
    value: Option<Value>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    correction: Option<String>,
    #[serde(default)]
    id: Option<String>,
}

/// Checks a value against its kind: (number, text, negative).
fn typed(
    name: &str,
    f: &FeedbackConfig,
    v: &Value,
) -> Result<(Option<f64>, Option<String>, bool), GatewayError> {
    let bad = |msg: String| GatewayError::invalid(msg, Some("value"));
    match f.kind {
        FeedbackKind::Boolean => v
            .as_bool()
            .map(|b| (Some(f64::from(u8::from(b))), None, !b))
            .ok_or_else(|| {
                bad(format!(
                    "feedback `{name}` is a boolean (true or false), not {v}"
                ))
            }),
        FeedbackKind::Number => {
            let n = v
                .as_f64()
                .ok_or_else(|| bad(format!("feedback `{name}` is a number, not {v}")))?;
            if f.min.is_some_and(|lo| n < lo) || f.max.is_some_and(|hi| n > hi) {
                return Err(bad(format!(
                    "feedback `{name}` is between {} and {}, not {n}",
                    f.min.unwrap_or(f64::MIN),
                    f.max.unwrap_or(f64::MAX)
                )));
            }
            let negative = match (f.min, f.max) {
                (Some(lo), Some(hi)) => n < (lo + hi) / 2.0,
                _ => n < 0.0,
            };
            Ok((Some(n), None, negative))
        }
        FeedbackKind::Category => {
            let c = v
                .as_str()
                .filter(|c| f.categories.iter().any(|k| k == c))
                .ok_or_else(|| {
                    bad(format!(
                        "feedback `{name}` is one of {}, not {v}",
                        f.categories.join(", ")
                    ))
                })?;
            Ok((None, Some(c.to_string()), f.negative.iter().any(|n| n == c)))
        }
    }
}

fn random_id() -> String {
    format!(
        "fb_{:016x}{:08x}",
        rand::random::<u64>(),
        rand::random::<u32>()
    )
}

/// `POST /v1/feedback`.
pub async fn post(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let runtime = state.runtime();
    let req: FeedbackRequest = match crate::api::read_json(&runtime, &headers, body).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(kind) = runtime.config.feedback.get(&req.name) else {
        let known: Vec<&str> = runtime.config.feedback.keys().map(String::as_str).collect();
        return GatewayError::invalid(
            format!(
                "unknown feedback `{}`; configured [feedback]: {}",
                req.name,
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ),
            Some("name"),
        )
        .into_response();
    };
    let (value_num, value_text, negative) = match (&req.value, &req.correction) {
        (Some(v), _) => match typed(&req.name, kind, v) {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        },
        // A correction alone says the answer was wrong.
        (None, Some(_)) => (None, None, true),
        (None, None) => {
            return GatewayError::invalid(
                "feedback needs a `value` (or a `correction`)",
                Some("value"),
            )
            .into_response();
        }
    };
    let fb = state.feedback.clone();
    let trace_id = req.trace_id.clone();
    let scope = crate::auth::tenant(&caller);
    let work = tokio::task::spawn_blocking(move || -> Result<(StatusCode, Value), GatewayError> {
        // Another tenant's trace is as good as absent.
        let meta = fb
            .meta(&trace_id)
            .filter(|m| scope.is_none() || m.tenant == scope)
            .ok_or_else(|| GatewayError::NotFound { message: format!("no trace `{trace_id}` (feedback refers to an answer's x-trestle-trace-id)"), code: "trace_not_found" })?;
        let id = req.id.clone().unwrap_or_else(random_id);
        let row = Row {
            id: id.clone(),
            trace_id: trace_id.clone(),
            name: req.name.clone(),
            value_num,
            value_text,
            negative,
            comment: req.comment.clone(),
            correction: req.correction.clone(),
            source: "api",
            meta: meta.clone(),
        };
        let created = fb.insert(&row).map_err(GatewayError::Internal)?;
        if created
            && let Some(correction) = &req.correction
            && let Some(answer) = fb.answer(&trace_id)
        {
            // 0: the answer was kept as it was; 1: rewritten entirely.
            let distance = 1.0 - strsim::normalized_levenshtein(&answer, correction);
            let _ = fb.insert(&Row {
                id: format!("{id}:distance"),
                trace_id: trace_id.clone(),
                name: "correction_distance".into(),
                value_num: Some(distance),
                value_text: None,
                negative: false,
                comment: None,
                correction: None,
                source: "implicit",
                meta,
            });
        }
        let status = if created { StatusCode::CREATED } else { StatusCode::OK };
        Ok((status, json!({"object": "feedback", "id": id, "trace_id": trace_id, "name": req.name, "value": req.value, "created": created})))
    })
    .await;
    match work {
        Ok(Ok((status, body))) => (status, axum::Json(body)).into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    trace_id: Option<String>,
    conversation_id: Option<String>,
}

/// `GET /v1/feedback?trace_id=|conversation_id=`.
pub async fn list(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return GatewayError::invalid("bad query: trace_id or conversation_id", Some("trace_id"))
            .into_response();
    };
    if q.trace_id.is_none() && q.conversation_id.is_none() {
        return GatewayError::invalid("give trace_id or conversation_id", Some("trace_id"))
            .into_response();
    }
    let fb = state.feedback.clone();
    let scope = crate::auth::tenant(&caller);
    match tokio::task::spawn_blocking(move || {
        let mut rows = fb.list(q.trace_id.as_deref(), q.conversation_id.as_deref())?;
        if scope.is_some() {
            rows.retain(|r| {
                r["trace_id"]
                    .as_str()
                    .and_then(|t| fb.meta(t))
                    .is_some_and(|m| m.tenant == scope)
            });
        }
        Ok::<_, String>(rows)
    })
    .await
    {
        Ok(Ok(rows)) => axum::Json(json!({"object": "list", "data": rows})).into_response(),
        Ok(Err(e)) => GatewayError::Internal(e).into_response(),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}
