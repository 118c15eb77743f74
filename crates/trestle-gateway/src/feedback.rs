//! Feedback tied to the answer that earned it (docs/experiments.md): `POST /v1/feedback`
//! checks the kind and value against `[feedback.NAME]` and the trace id against recent traces
//! and the store, and keeps each piece with the trace's route, prompt version, experiment and
//! variant, so readouts and mining join nothing at read time. Implicit signals come from
//! traffic the gateway already sees: a regeneration (the same conversation asking the same
//! thing again within ten minutes) and a correction's edit distance to the answer.
//! Feedback is kept where the traces are ([`store`]): the SQLite file or PostgreSQL.

pub mod store;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use trestle_core::experiment::{FeedbackConfig, FeedbackKind};

use self::store::{Row, Store};
use crate::db::Db;
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

impl TraceMeta {
    /// Whether a caller scoped to `scope` (a tenant; `None`: every tenant) may see this
    /// trace: another tenant's trace is as good as absent.
    fn visible_to(&self, scope: Option<&str>) -> bool {
        scope.is_none() || self.tenant.as_deref() == scope
    }
}

/// Feedback's place in the store, recent traces, and the regeneration detector.
pub struct Feedback {
    store: Option<Arc<Store>>,
    recent: Recent,
    /// conversation id → (hash of the last user message, its trace id).
    last_question: moka::sync::Cache<String, (u64, String)>,
}

/// How long a repeated question counts as a regeneration.
const REGENERATION_WINDOW: Duration = Duration::from_secs(600);

/// How many finished traces `recent` holds unless told otherwise: more than the trace queue
/// holds with its defaults (`[store] queue_capacity` 16,384 and a batch of 512), so a trace
/// still on its way to the store is found here; older ones are read from the store.
const RECENT_TRACES: usize = 32_768;

/// The newest finished traces, oldest out first, every new one in. Not a moka cache: its
/// default admission turns new keys away from a full cache ([`newest`]), and with its LRU
/// policy the gateway spent 16% more CPU per request with every stage on than with this map
/// and queue (`bench/ab-full.sh`; BENCHMARKS.md, "Seventh session").
struct Recent {
    capacity: usize,
    inner: Mutex<RecentInner>,
}

#[derive(Default)]
struct RecentInner {
    order: VecDeque<Arc<str>>,
    metas: HashMap<Arc<str>, Arc<TraceMeta>>,
}

impl Recent {
    fn new(capacity: usize) -> Self {
        Recent {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    fn insert(&self, trace_id: &str, meta: TraceMeta) {
        let (id, meta) = (Arc::<str>::from(trace_id), Arc::new(meta));
        let Ok(mut r) = self.inner.lock() else {
            return;
        };
        if r.metas.insert(id.clone(), meta).is_none() {
            r.order.push_back(id);
        }
        // One in, at most one out.
        if r.order.len() > self.capacity
            && let Some(oldest) = r.order.pop_front()
        {
            r.metas.remove(&oldest);
        }
    }

    fn get(&self, trace_id: &str) -> Option<Arc<TraceMeta>> {
        self.inner.lock().ok()?.metas.get(trace_id).cloned()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map_or(0, |r| r.metas.len())
    }
}

/// A cache of the newest entries: least recently used out first, and every new entry in.
/// moka's default policy (TinyLFU) admits a new key into a full cache only when the key was
/// asked for more often than the one it would evict, so once full a cache of keys seen once
/// (trace ids, conversations) would keep its oldest entries and turn the newest away.
/// `ttl`: how long an entry lives at most (`None`: until evicted).
pub(crate) fn newest<K, V>(capacity: u64, ttl: Option<Duration>) -> moka::sync::Cache<K, V>
where
    K: std::hash::Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let builder = moka::sync::Cache::builder()
        .max_capacity(capacity)
        .eviction_policy(moka::policy::EvictionPolicy::lru());
    match ttl {
        Some(ttl) => builder.time_to_live(ttl).build(),
        None => builder.build(),
    }
}

impl Feedback {
    /// Feedback kept in `db` (none: feedback cannot be kept). May be called from inside
    /// the async runtime.
    pub fn new(db: Option<Db>) -> Self {
        let store = db.and_then(|db| match Store::open(db) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::error!("feedback store unavailable: {e:#}");
                None
            }
        });
        Feedback {
            store,
            recent: Recent::new(RECENT_TRACES),
            last_question: newest(200_000, Some(REGENERATION_WINDOW)),
        }
    }

    /// Holds the newest `traces` finished traces (at least one) instead of
    /// [`RECENT_TRACES`]: the gateway passes what its trace queue can hold, plus two batches.
    pub fn remembering(mut self, traces: usize) -> Self {
        self.recent = Recent::new(traces);
        self
    }

    /// Remembers a finished trace for feedback that comes before the store has it.
    pub fn remember(&self, trace_id: &str, meta: TraceMeta) {
        self.recent.insert(trace_id, meta);
    }

    /// A request's question in a conversation: when it repeats the last one, the last answer
    /// was regenerated, which is recorded as feedback `regenerated` on that answer's trace
    /// (returned). Called on the request path: on PostgreSQL the row is written on a
    /// blocking thread.
    pub fn question(
        &self,
        conversation_id: &str,
        question: &str,
        trace_id: &str,
    ) -> Option<String> {
        let previous = self.regenerated(conversation_id, question, trace_id)?;
        let Some(store) = &self.store else {
            return Some(previous);
        };
        let on_postgres = matches!(**store, Store::Postgres(_));
        let cached = self.recent.get(&previous).map(|m| (*m).clone());
        let store = store.clone();
        let id = format!("{previous}:regenerated:{trace_id}");
        let regenerated = previous.clone();
        let write = move || {
            let meta = cached.or_else(|| store.trace_meta(&regenerated).ok().flatten());
            let row = Row {
                id,
                trace_id: regenerated,
                name: "regenerated".into(),
                value_num: Some(1.0),
                value_text: None,
                negative: true,
                comment: None,
                correction: None,
                source: "implicit",
                meta: meta.unwrap_or_default(),
            };
            if let Err(e) = store.insert(&row) {
                tracing::warn!("regeneration of {}: {e}", row.trace_id);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) if on_postgres => {
                rt.spawn_blocking(write);
            }
            _ => write(),
        }
        Some(previous)
    }

    /// The trace whose answer this question regenerates (the conversation's last question,
    /// asked again within ten minutes), without recording anything; remembers the question.
    pub fn regenerated(
        &self,
        conversation_id: &str,
        question: &str,
        trace_id: &str,
    ) -> Option<String> {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        question.trim().hash(&mut h);
        let hash = h.finish();
        let previous = self
            .last_question
            .get(conversation_id)
            .filter(|(last, previous)| *last == hash && previous != trace_id)
            .map(|(_, previous)| previous);
        self.last_question
            .insert(conversation_id.to_string(), (hash, trace_id.to_string()));
        previous
    }

    /// A trace's meta: recent traces first, then the store; `None` when neither has it.
    fn meta(&self, trace_id: &str) -> Result<Option<TraceMeta>, String> {
        if let Some(m) = self.recent.get(trace_id) {
            return Ok(Some((*m).clone()));
        }
        match &self.store {
            Some(store) => store.trace_meta(trace_id),
            None => Ok(None),
        }
    }

    /// The answer text of a trace, from the store.
    fn answer(&self, trace_id: &str) -> Option<String> {
        let body = self.store.as_ref()?.response(trace_id)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["choices"][0]["message"]["content"]
            .as_str()
            .map(String::from)
    }

    fn store(&self) -> Result<&Store, String> {
        self.store
            .as_deref()
            .ok_or_else(|| "feedback needs the trace store ([store] enabled)".to_string())
    }

    /// Inserts a row; `Ok(false)` when a row with its id exists already (a retry).
    fn insert(&self, r: &Row) -> Result<bool, String> {
        self.store()?.insert(r)
    }

    fn list(
        &self,
        trace_id: Option<&str>,
        conversation_id: Option<&str>,
    ) -> Result<Vec<Value>, String> {
        self.store()?.list(trace_id, conversation_id)
    }

    /// The rows a caller scoped to `scope` may see: those on its tenant's traces.
    fn visible(&self, rows: Vec<Value>, scope: Option<&str>) -> Result<Vec<Value>, String> {
        if scope.is_none() {
            return Ok(rows);
        }
        let mut seen: std::collections::HashMap<String, bool> = Default::default();
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            let trace = row["trace_id"].as_str().unwrap_or_default().to_string();
            let visible = match seen.get(&trace) {
                Some(v) => *v,
                None => {
                    let v = self.meta(&trace)?.is_some_and(|m| m.visible_to(scope));
                    seen.insert(trace, v);
                    v
                }
            };
            if visible {
                kept.push(row);
            }
        }
        Ok(kept)
    }
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
    let signalled = req.trace_id.clone();
    let scope = crate::auth::tenant(&caller);
    let work = tokio::task::spawn_blocking(move || -> Result<(StatusCode, Value), GatewayError> {
        let meta = fb
            .meta(&trace_id)
            .map_err(GatewayError::Internal)?
            .filter(|m| m.visible_to(scope.as_deref()))
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
        Ok(Ok((status, body))) => {
            if status == StatusCode::CREATED {
                // An answer the semantic cache served learns from it (learned thresholds).
                runtime.registry.caches.learned.signal(&signalled, negative);
            }
            (status, axum::Json(body)).into_response()
        }
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
        let rows = fb.list(q.trace_id.as_deref(), q.conversation_id.as_deref())?;
        fb.visible(rows, scope.as_deref())
    })
    .await
    {
        Ok(Ok(rows)) => axum::Json(json!({"object": "list", "data": rows})).into_response(),
        Ok(Err(e)) => GatewayError::Internal(e).into_response(),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests;
