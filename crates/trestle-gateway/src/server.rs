//! The HTTP server: routes, operational endpoints, and graceful shutdown that drains open
//! streams up to a deadline and flushes every trace.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use trestle_core::Config;

use crate::error::GatewayError;
use crate::pipeline;
use crate::resilience::Registry;
use crate::runtime::Runtime;
use crate::state::{AppState, SharedState};
use crate::store::{Recorder, TraceFilter, TraceReader, TraceStore};

/// Builds the state for a config: providers, routes, trace store. `config_path` is the file
/// a reload re-reads.
pub fn build_state(
    config: Config,
    config_path: Option<PathBuf>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<SharedState> {
    let store_cfg = config.store.clone();
    let otel = match &config.otel {
        Some(o) => crate::otel::Exporter::start(o, &config)?,
        None => crate::otel::Exporter::disabled(),
    };
    let start_recorder = |store: Box<dyn TraceStore>| {
        Recorder::start_with_sink(
            store,
            store_cfg.queue_capacity,
            store_cfg.batch_size,
            Duration::from_millis(store_cfg.flush_interval_ms),
            otel.feed(),
        )
    };
    let db = crate::db::Db::from_config(&store_cfg)?;
    let (recorder, reader) = match &db {
        Some(db) => {
            let writer = crate::store::open_writer(db, redactor(&config)?)?;
            (
                start_recorder(writer)?,
                Some(crate::store::open_reader(db)?),
            )
        }
        // No store, but traces still go through the recorder's queue to the exporter.
        None if otel.enabled() => (start_recorder(Box::new(crate::store::Discard))?, None),
        None => (Recorder::disabled(), None),
    };
    let online = match &db {
        Some(db) => {
            let queue = config.evals.online.as_ref().map_or(1024, |o| o.queue);
            crate::evals::OnlineEvaluator::start(db.clone(), queue)
        }
        None => crate::evals::OnlineEvaluator::disabled(),
    };
    // `[state]`: the Redis every instance shares limits, pauses and caches through.
    let link = crate::limiter::link::Link::from_config(&config.state)?;
    let limiter = crate::limiter::on(link.clone());
    let registry = Arc::new(Registry::with_link(&config.cache, link));
    // `[cache] persist`: the caches as the last run left them, kept from now on.
    if config.cache.persist
        && let Some(db) = &db
    {
        crate::cache::persist::start(&registry, db.clone(), &config.cache)?;
    }
    let runtime = Runtime::build(config, registry.clone())?;
    report_levels(&runtime);
    let prompt_labels = crate::prompts::PromptLabels::new(db.clone());
    for note in prompt_labels
        .sync(&runtime.prompts)
        .map_err(anyhow::Error::msg)?
    {
        tracing::info!("{note}");
    }
    let keys = crate::keys::Keys::with_limiter(db.clone(), limiter);
    // Tenant and route budgets start from this period's stored spend, before anything is
    // served (on a thread of its own: the PostgreSQL client must not run on a task's).
    let seeded = std::thread::scope(|s| s.spawn(|| keys.seed_budgets(&runtime.config)).join());
    if let Ok(Err(e)) = seeded {
        tracing::warn!("cannot read the budgets' spend so far: {e:#}");
    }
    Ok(Arc::new(AppState {
        runtime: ArcSwap::from_pointee(runtime),
        registry,
        config_path,
        recorder,
        otel,
        // Traces still queued for the store, and the batches the writer holds, stay findable.
        feedback: Arc::new(
            crate::feedback::Feedback::new(db.clone())
                .remembering(store_cfg.queue_capacity + 2 * store_cfg.batch_size),
        ),
        review: crate::review::Review::new(db.clone()),
        keys,
        spans: crate::otlp::SpanStore::new(db.clone()),
        prompt_labels,
        experiments: crate::experiments::ExperimentStates::new(db.clone()),
        online,
        db: db.clone(),
        reader,
        metrics,
        draining: Default::default(),
        hard_stop: CancellationToken::new(),
    }))
}

/// The `[store] redact` guardrails as one function over a text: every `pii` guardrail when
/// the key is unset, none when it is `[]`.
fn redactor(config: &Config) -> anyhow::Result<Option<crate::store::Redactor>> {
    use trestle_core::guard::GuardKind;
    let names: Vec<&String> = match &config.store.redact {
        Some(names) => names.iter().collect(),
        None => config
            .guardrails
            .iter()
            .filter(|(_, g)| g.kind == GuardKind::Pii)
            .map(|(n, _)| n)
            .collect(),
    };
    let mut detectors = Vec::new();
    for name in names {
        if let Some(g) = config.guardrails.get(name) {
            detectors.push(
                trestle_guard::pii::Pii::new(&g.entities, g.threshold)
                    .map_err(|e| anyhow::anyhow!("guardrails.{name}: {e}"))?,
            );
        }
    }
    if detectors.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(move |text: &str| {
        detectors.iter().fold(text.to_string(), |t, pii| {
            let found = pii.find(&t);
            if found.is_empty() {
                t
            } else {
                trestle_guard::redact(&t, &found)
            }
        })
    })))
}

/// Sets the capability-level gauge of every route that has levels.
fn report_levels(runtime: &Runtime) {
    for name in runtime.route_names() {
        if let Ok(route) = runtime.resolve(&name)
            && route.config.capability.is_some()
        {
            crate::metrics::capability_level(&name, route.health.level());
        }
    }
}

/// Why a reload was refused; the old config keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the gateway runs the built-in config (no --config file); there is nothing to reload")]
    NoFile,
    #[error("{0}")]
    Invalid(String),
}

/// Re-reads the config file and swaps the runtime in. Requests in flight finish on the
/// runtime they started with; breakers, capability levels and remembered answers carry
/// over. `server.listen` and `[store]` need a restart: changes there are reported, not
/// applied.
pub fn reload(state: &AppState) -> Result<Vec<String>, ReloadError> {
    let result = reload_inner(state);
    crate::metrics::reload(result.is_ok());
    match &result {
        Ok(notes) => tracing::info!(notes = %notes.join("; "), "config reloaded"),
        Err(e) => {
            tracing::error!(error = %e, "config reload rejected; the old config keeps serving")
        }
    }
    result
}

fn reload_inner(state: &AppState) -> Result<Vec<String>, ReloadError> {
    let path = state.config_path.as_ref().ok_or(ReloadError::NoFile)?;
    let loaded = Config::load(path).map_err(|e| {
        ReloadError::Invalid(format!("{} is not a valid config:\n{e}", path.display()))
    })?;
    let mut config = loaded.config;
    let mut notes: Vec<String> = loaded
        .warnings
        .iter()
        .map(|w| format!("warning: {w}"))
        .collect();
    let old = state.runtime();
    if config.server.listen != old.config.server.listen {
        notes.push("server.listen changed: it takes effect on restart".into());
        config.server.listen.clone_from(&old.config.server.listen);
    }
    if config.store.path != old.config.store.path
        || config.store.enabled != old.config.store.enabled
    {
        notes.push("[store] changed: it takes effect on restart".into());
        config.store = old.config.store.clone();
    }
    if config.otel != old.config.otel {
        notes.push("[otel] changed: it takes effect on restart".into());
        config.otel.clone_from(&old.config.otel);
    }
    if config.cache.persist != old.config.cache.persist {
        notes.push("[cache] persist changed: it takes effect on restart".into());
        config.cache.persist = old.config.cache.persist;
    }
    let runtime = Runtime::build(config, state.registry.clone())
        .map_err(|e| ReloadError::Invalid(format!("{}: {e}", path.display())))?;
    notes.extend(
        state
            .prompt_labels
            .sync(&runtime.prompts)
            .map_err(|e| ReloadError::Invalid(format!("{}: {e}", path.display())))?,
    );
    state.registry.caches.tools.configure(&runtime.config.cache);
    state.otel.configure(&runtime.config);
    notes.push(format!("routes: {}", runtime.route_names().join(", ")));
    report_levels(&runtime);
    state.runtime.store(Arc::new(runtime));
    Ok(notes)
}

/// `?ttl_s=N` on a tool-cache write.
#[derive(serde::Deserialize)]
struct TtlQuery {
    ttl_s: Option<u64>,
}

/// A tool cache namespace as stored: a key's tenant has its own.
fn tool_namespace(caller: &crate::auth::MaybeCaller, namespace: &str) -> String {
    match caller {
        Some(c) => format!("{}\u{1f}{namespace}", c.0.key.tenant),
        None => namespace.to_string(),
    }
}

async fn tool_put(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    Path((namespace, key)): Path<(String, String)>,
    query: Result<Query<TtlQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(Query(q)) = query else {
        return GatewayError::invalid("ttl_s must be a whole number of seconds", Some("ttl_s"))
            .into_response();
    };
    let runtime = state.runtime();
    let value = match pipeline::ingress::read_body(&headers, body, &runtime.config.server).await {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_string();
    let tools = &state.registry.caches.tools;
    let ttl = tools.put(
        &tool_namespace(&caller, &namespace),
        &key,
        value,
        content_type,
        Some(
            q.ttl_s
                .map(Duration::from_secs)
                .unwrap_or_else(|| tools.ttl(&namespace)),
        ),
    );
    crate::metrics::tool_cache(&namespace, "write");
    axum::Json(json!({"namespace": namespace, "key": key, "ttl_s": ttl.as_secs()})).into_response()
}

async fn tool_get(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    Path((namespace, key)): Path<(String, String)>,
) -> Response {
    match state
        .registry
        .caches
        .tools
        .fetch(&tool_namespace(&caller, &namespace), &key)
        .await
    {
        Some((entry, age)) => {
            crate::metrics::tool_cache(&namespace, "hit");
            let mut r = (StatusCode::OK, entry.value.clone()).into_response();
            let h = r.headers_mut();
            if let Ok(v) = axum::http::HeaderValue::from_str(&entry.content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            h.insert(header::AGE, age.as_secs().into());
            h.insert(
                "x-trestle-cache",
                axum::http::HeaderValue::from_static("hit"),
            );
            r
        }
        None => {
            crate::metrics::tool_cache(&namespace, "miss");
            GatewayError::NotFound {
                message: format!("no fresh entry `{key}` in tool cache namespace `{namespace}`"),
                code: "cache_miss",
            }
            .into_response()
        }
    }
}

async fn tool_delete(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    Path((namespace, key)): Path<(String, String)>,
) -> Response {
    let deleted = state
        .registry
        .caches
        .tools
        .remove(&tool_namespace(&caller, &namespace), &key)
        .await;
    axum::Json(json!({"namespace": namespace, "key": key, "deleted": deleted})).into_response()
}

async fn admin_reload(State(state): State<SharedState>) -> Response {
    let s = state.clone();
    match tokio::task::spawn_blocking(move || reload(&s)).await {
        Ok(Ok(notes)) => axum::Json(json!({"status": "reloaded", "notes": notes})).into_response(),
        Ok(Err(ReloadError::NoFile)) => {
            GatewayError::invalid(ReloadError::NoFile.to_string(), None).into_response()
        }
        Ok(Err(e)) => GatewayError::InvalidRequest {
            message: e.to_string(),
            param: None,
            code: "invalid_config",
        }
        .into_response(),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}

/// Reloads the config on every SIGHUP until the process ends.
pub fn reload_on_sighup(state: SharedState) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; use POST /admin/reload");
            return;
        };
        while hup.recv().await.is_some() {
            let s = state.clone();
            let _ = tokio::task::spawn_blocking(move || reload(&s)).await;
        }
    });
    #[cfg(not(unix))]
    let _ = state;
}

pub fn router(state: SharedState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .merge(anthropic_front_door())
        .route("/v1/models", get(models))
        .route("/v1/traces", get(list_traces).post(crate::otlp::ingest))
        .route("/v1/traces/{id}", get(get_trace))
        .route("/v1/stats", get(stats))
        .route("/v1/evals/online", get(online_evals))
        .route(
            "/v1/feedback",
            post(crate::feedback::post).get(crate::feedback::list),
        )
        .route("/v1/prompts", get(crate::api::prompts))
        .route("/v1/prompts/{name}", get(crate::api::prompt))
        .route("/v1/prompts/{name}/labels", post(crate::api::promote))
        .route("/v1/experiments", get(crate::api::experiments))
        .route("/v1/experiments/{name}", get(crate::api::experiment))
        .route("/v1/experiments/{name}/ship", post(crate::api::ship))
        .route("/v1/guardrails/{name}/check", post(guardrail_check))
        .route(
            "/v1/review/labels",
            get(crate::review::list).post(crate::review::post),
        )
        .route("/v1/conversations/{id}", get(conversation))
        .route("/v1/stats/routes", get(route_stats))
        .route("/v1/drift", get(crate::drift::api::report))
        .route("/v1/alerts", get(crate::drift::api::list))
        .merge(crate::ui::router())
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(admin_reload))
        .route(
            "/v1/cache/{namespace}/{key}",
            get(tool_get).put(tool_put).delete(tool_delete),
        )
        .route("/v1/keys", get(keys_report))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authorize,
        ))
        // Outside auth, so its refusals on the Anthropic front door are Anthropic-shaped too.
        .layer(axum::middleware::from_fn(
            crate::frontdoor::anthropic::anthropic_errors,
        ))
        .with_state(state)
}

async fn chat(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    pipeline::chat(state, caller.map(|c| c.0), headers, body).await
}

/// `POST /v1/messages` and `/v1/messages/count_tokens`: Anthropic's API, Anthropic's errors.
fn anthropic_front_door() -> Router<SharedState> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

async fn messages(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    crate::frontdoor::anthropic::messages(state, caller.map(|c| c.0), headers, body).await
}

async fn count_tokens(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    crate::frontdoor::anthropic::count_tokens(state, caller.map(|c| c.0), headers, body).await
}

async fn embeddings(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    pipeline::embeddings(state, caller.map(|c| c.0), headers, body).await
}

async fn models(State(state): State<SharedState>) -> Response {
    let data: Vec<_> = state
        .runtime()
        .model_ids()
        .into_iter()
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn list_traces(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    query: Result<Query<TraceFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filter = match query {
        Ok(Query(filter)) => filter,
        Err(e) => {
            return GatewayError::invalid(
                format!(
                    "bad query ({}): filter on trace_id, conversation_id, user_id, route, since, until, \
                     outcome, fallback_level, guardrail, feedback, flag, experiment, prompt_version, \
                     and limit (a number up to 1000)",
                    e.body_text()
                ),
                None,
            )
            .into_response();
        }
    };
    if let Err(e) = filter.validate() {
        return GatewayError::invalid(format!("bad query: {e}"), None).into_response();
    }
    let mut filter = filter;
    filter.tenant = crate::auth::tenant(&caller);
    match read(&state, move |store| store.list(&filter)).await {
        Ok(list) => axum::Json(json!({"object": "list", "data": list})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn get_trace(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    Path(id): Path<String>,
) -> Response {
    let key = id.clone();
    let tenant = crate::auth::tenant(&caller);
    let found = read(&state, move |store| {
        let trace = store.get(&key)?;
        let app = store.app_spans(&key)?;
        Ok(
            crate::store::scoped_trace(trace, app, tenant.as_deref()).map(|(mut t, app)| {
                t["trace_id"] = json!(key);
                t["app_spans"] = json!(app);
                t
            }),
        )
    })
    .await;
    match found {
        Ok(Some(trace)) => axum::Json(trace).into_response(),
        Ok(None) => GatewayError::NotFound {
            message: format!(
                "no trace `{id}` (traces are written within a moment of the response)"
            ),
            code: "trace_not_found",
        }
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/keys` (admin): every key without its secret, its spend in the budget period,
/// and each tenant's roll-up.
async fn keys_report(State(state): State<SharedState>) -> Response {
    axum::Json(state.keys.report()).into_response()
}

/// `GET /v1/conversations/{id}`: the turns in order with their feedback, the total cost,
/// and the app's spans (what the UI's conversation page shows).
async fn conversation(
    State(state): State<SharedState>,
    caller: crate::auth::MaybeCaller,
    Path(id): Path<String>,
) -> Response {
    let key = id.clone();
    let tenant = crate::auth::tenant(&caller);
    let found = read(&state, move |store| {
        let t = tenant.as_deref();
        Ok((
            store.conversation(&key, t)?,
            store.conversation_spans(&key, t)?,
        ))
    })
    .await;
    match found {
        Ok((turns, spans)) if !turns.is_empty() || !spans.is_empty() => {
            let cost: f64 = turns.iter().map(|t| t.cost_usd).sum();
            axum::Json(json!({
                "object": "conversation",
                "conversation_id": id,
                "total_cost_usd": cost,
                "turns": turns,
                "app_spans": spans,
            }))
            .into_response()
        }
        Ok(_) => GatewayError::NotFound {
            message: format!("no conversation `{id}` (x-trestle-conversation-id)"),
            code: "conversation_not_found",
        }
        .into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteStatsQuery {
    window: Option<String>,
}

/// `GET /v1/stats/routes?window=24h`: latency against budget, cold starts, TTFT, fallback
/// and cache shares and cost per route, from the store.
async fn route_stats(
    State(state): State<SharedState>,
    query: Result<Query<RouteStatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let window = match query {
        Ok(Query(q)) => q.window.unwrap_or_else(|| "24h".into()),
        Err(_) => {
            return GatewayError::invalid(
                "bad query: window is like 15m, 24h or 7d",
                Some("window"),
            )
            .into_response();
        }
    };
    let span = match trestle_core::window::window_ms(&window) {
        Ok(w) => w,
        Err(e) => {
            return GatewayError::invalid(format!("window {e}"), Some("window")).into_response();
        }
    };
    let now = crate::store::now_ms();
    match read(&state, move |store| store.route_stats(now - span, now + 1)).await {
        Ok(routes) => {
            axum::Json(json!({"object": "route_stats", "window": window, "routes": routes}))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Runs a read against the store off the async runtime.
async fn read<T: Send + 'static>(
    state: &SharedState,
    f: impl FnOnce(&dyn TraceReader) -> anyhow::Result<T> + Send + 'static,
) -> Result<T, GatewayError> {
    let Some(reader) = state.reader.clone() else {
        return Err(GatewayError::NotFound {
            message: "the trace store is disabled (store.enabled = false)".into(),
            code: "store_disabled",
        });
    };
    tokio::task::spawn_blocking(move || f(&*reader))
        .await
        .map_err(|e| GatewayError::Internal(e.to_string()))?
        .map_err(|e| GatewayError::Internal(format!("trace store: {e}")))
}

/// `POST /v1/guardrails/{name}/check`: one guardrail on one text, as apps and evals call
/// it: `{"text", "system"?, "context"?, "schema"?}` → `{"findings", "text", "violated",
/// "action", "detail"}`, offsets in characters, `text` redacted.
async fn guardrail_check(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct CheckRequest {
        text: String,
        #[serde(default)]
        system: String,
        #[serde(default)]
        context: String,
        schema: Option<serde_json::Value>,
    }
    let runtime = state.runtime();
    let Some(guardrail) = runtime.guardrails.get(&name).cloned() else {
        let mut names: Vec<&str> = runtime.guardrails.keys().map(String::as_str).collect();
        names.sort_unstable();
        return GatewayError::NotFound {
            message: format!(
                "no guardrail `{name}`; configured: {}",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ),
            code: "guardrail_not_found",
        }
        .into_response();
    };
    let raw = match pipeline::ingress::read_body(&headers, body, &runtime.config.server).await {
        Ok(raw) => raw,
        Err(e) => return e.into_response(),
    };
    let req: CheckRequest = match pipeline::ingress::parse_json(&raw) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let schema = match req.schema.as_ref().map(trestle_guard::schema::compile) {
        None => None,
        Some(Ok(v)) => Some(Arc::new(v)),
        Some(Err(e)) => {
            return GatewayError::invalid(
                format!("the schema does not compile: {e}"),
                Some("schema"),
            )
            .into_response();
        }
    };
    let ctx = crate::guard::Context {
        system: req.system,
        context: req.context,
        schema,
    };
    match guardrail.check(&req.text, &ctx).await {
        Ok(v) => {
            let text = trestle_guard::redact(&req.text, &v.findings);
            axum::Json(json!({
                "guardrail": name,
                "kind": guardrail.kind.as_str(),
                "action": guardrail.action.as_str(),
                "violated": v.violated,
                "findings": v.findings,
                "text": text,
                "detail": v.detail,
            }))
            .into_response()
        }
        Err(e) => {
            let mut r = GatewayError::UpstreamFailed {
                message: format!("guardrail `{name}` failed: {e}"),
                timed_out: false,
            }
            .into_response();
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
    }
}

#[derive(serde::Deserialize)]
struct StatsQuery {
    window_s: Option<u64>,
}

/// What served each route's requests over the last `window_s` seconds (default 300, at most
/// 900): by a model, or by which fallback level.
async fn stats(
    State(state): State<SharedState>,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let window_s = match query {
        Ok(Query(StatsQuery { window_s: None })) => 300,
        Ok(Query(StatsQuery {
            window_s: Some(w @ 10..=900),
        })) => w,
        _ => {
            return GatewayError::invalid(
                "bad query: window_s is a number of seconds from 10 to 900",
                Some("window_s"),
            )
            .into_response();
        }
    };
    let routes = state.registry.served_shares(Duration::from_secs(window_s));
    axum::Json(json!({"object": "stats", "window_s": window_s, "routes": routes})).into_response()
}

#[derive(serde::Deserialize)]
struct OnlineQuery {
    days: Option<u32>,
    route: Option<String>,
}

/// `GET /v1/evals/online?days=7&route=`: the daily aggregates of `[evals.online]` per route,
/// prompt version and category, and the scorer's counters (nothing skipped goes uncounted).
async fn online_evals(
    State(state): State<SharedState>,
    query: Result<Query<OnlineQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let (days, route) = match query {
        Ok(Query(OnlineQuery { days, route })) if days.is_none_or(|d| (1..=366).contains(&d)) => {
            (days.unwrap_or(7), route)
        }
        _ => {
            return GatewayError::invalid(
                "bad query: days is a number of days from 1 to 366, route a route name",
                Some("days"),
            )
            .into_response();
        }
    };
    let runtime = state.runtime();
    let config = &runtime.config;
    let plan = config.evals.online.as_ref();
    let head = json!({
        "object": "online_evals",
        "enabled": plan.is_some() && config.store.enabled,
        "sample": plan.map(|p| p.sample),
        "counters": state.online.stats.snapshot(),
    });
    let Some(db) = state.db.clone() else {
        return axum::Json(head).into_response();
    };
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let since = trestle_eval::store::utc(now_s - i64::from(days - 1) * 86_400)[..10].to_string();
    let read =
        tokio::task::spawn_blocking(move || crate::evals::daily(&db, &since, route.as_deref()))
            .await;
    match read {
        Ok(Ok(daily)) => {
            let mut body = head;
            body["days"] = json!(daily);
            axum::Json(body).into_response()
        }
        Ok(Err(e)) => GatewayError::Internal(e).into_response(),
        Err(e) => GatewayError::Internal(e.to_string()).into_response(),
    }
}

async fn health() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn ready(State(state): State<SharedState>) -> Response {
    let stats = state.recorder.stats();
    let body = json!({
        "status": if state.draining.load(Ordering::Relaxed) { "draining" } else { "ready" },
        "traces": {
            "enabled": state.recorder.enabled(),
            "recorded": stats.recorded.load(Ordering::Relaxed),
            "written": stats.written.load(Ordering::Relaxed),
            "dropped": stats.dropped.load(Ordering::Relaxed),
            "failed": stats.failed.load(Ordering::Relaxed),
            // Present while the store refuses writes (a full disk): serving goes on, traces
            // wait in the queue and are retried.
            "store_error": stats.store_error(),
        },
        "otel": state.otel.snapshot(),
        // Where limits, pauses and caches are shared; `healthy: false` with Redis means local
        // limits and caches.
        "state": state.keys.state(),
    });
    let status = if state.draining.load(Ordering::Relaxed) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<SharedState>) -> Response {
    match &state.metrics {
        Some(handle) => {
            for (route, shares) in state.registry.served_shares(Duration::from_secs(300)) {
                crate::metrics::model_served_share(&route, shares.model_served_share);
            }
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
                .into_response()
        }
        None => GatewayError::NotFound {
            message: "metrics are not enabled in this process".into(),
            code: "metrics_disabled",
        }
        .into_response(),
    }
}

async fn not_found(uri: axum::http::Uri) -> Response {
    GatewayError::NotFound {
        message: format!(
            "no endpoint at {}; see /v1/chat/completions, /v1/embeddings, /v1/models, /v1/traces, /v1/stats, /v1/evals/online, /v1/feedback, /v1/prompts, /v1/experiments, /health, /ready, /metrics, /admin/reload",
            uri.path()
        ),
        code: "unknown_endpoint",
    }
    .into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let mut r = GatewayError::invalid(format!("{method} is not allowed on {}", uri.path()), None)
        .into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// Serves until SIGTERM/SIGINT (or `stop` resolves), then drains: new requests get 503, open
/// streams get `shutdown_grace_ms` to finish before they are ended with an error event, and
/// the trace queue is flushed before returning.
pub async fn serve(
    state: SharedState,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = Duration::from_millis(state.runtime().config.server.shutdown_grace_ms);
    let draining = CancellationToken::new();
    let app = router(state.clone());
    let signal_state = state.clone();
    let drain_signal = draining.clone();
    tokio::spawn(async move {
        stop.await;
        signal_state.draining.store(true, Ordering::Relaxed);
        drain_signal.cancel();
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutting down: draining open requests"
        );
        tokio::time::sleep(grace).await;
        tracing::warn!("grace period over: ending open streams");
        signal_state.hard_stop.cancel();
    });
    crate::keys::spawn_refresh(state.clone());
    let options = ConnOptions {
        header_read_timeout: Duration::from_millis(
            state.runtime().config.server.header_read_timeout_ms,
        ),
        killable: false,
        admin: false,
    };
    let admin_listen = state.runtime().config.server.admin_listen.clone();
    if let Some(addr) = admin_listen {
        let admin = bind_admin(&addr).await?;
        tracing::info!(%addr, "admin listener (no admin key needed here)");
        let admin_options = ConnOptions {
            admin: true,
            ..options
        };
        tokio::spawn(serve_router(
            admin,
            app.clone(),
            admin_options,
            draining.clone(),
        ));
    }
    serve_router(listener, app, options, draining).await;
    state.recorder.close(Duration::from_secs(30)).await;
    crate::cache::persist::close(state.registry.clone(), Duration::from_secs(10)).await;
    // The recorder's last batches are in the exporter's queue now.
    state.otel.close(Duration::from_secs(10)).await;
    let s = state.recorder.stats();
    tracing::info!(
        written = s.written.load(Ordering::Relaxed),
        dropped = s.dropped.load(Ordering::Relaxed),
        failed = s.failed.load(Ordering::Relaxed),
        "stopped; traces flushed"
    );
    Ok(())
}

/// How accepted connections are served.
#[derive(Debug, Clone, Copy)]
pub struct ConnOptions {
    /// A client that has not sent its request headers by then is disconnected (slow loris).
    pub header_read_timeout: Duration,
    /// Give each request a [`ConnKill`] for its connection, and close connections with a
    /// reset instead of a FIN (the mock's `reset` fault).
    pub killable: bool,
    /// The admin listener ([`crate::auth::ConnInfo::admin`]).
    pub admin: bool,
}

/// Cancelling it resets the request's connection at once (see [`ConnOptions::killable`]).
#[derive(Debug, Clone, Default)]
pub struct ConnKill(pub CancellationToken);

/// Serves `app` on `listener` until `stop` is cancelled, then lets open connections finish.
///
/// Each connection gets TCP_NODELAY (an SSE frame goes out when it is written, not when
/// Nagle's algorithm and the client's delayed ACK allow: a 40 ms stall per stream on a
/// kept-alive connection otherwise) and HTTP/1.1 or HTTP/2 as the client speaks, with a
/// header read timeout, which `axum::serve` does not offer.
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    options: ConnOptions,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    // Every connection task, so shutdown can wait for them to drain.
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let kill = ConnKill::default();
        if options.killable
            && let Err(e) = tcp.set_zero_linger()
        {
            tracing::debug!(error = %e, "cannot set SO_LINGER");
        }
        // Each request learns who connected, and on which listener (crate::auth).
        let info = crate::auth::ConnInfo {
            peer,
            admin: options.admin,
        };
        let conn_kill = options.killable.then(|| kill.clone());
        let router = app.clone();
        let service = hyper::service::service_fn(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(info);
                if let Some(k) = &conn_kill {
                    req.extensions_mut().insert(k.clone());
                }
                tower::ServiceExt::oneshot(router.clone(), req)
            },
        );
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        // The connection's own wakes (its request body's channel) re-poll it in place instead
        // of rescheduling the task and waking a second worker (crate::repoll).
        let (killable, stopping) = (options.killable, stop.clone());
        tracker.spawn(crate::repoll::Repoll::new(async move {
            let mut conn = std::pin::pin!(conn);
            // Shutdown lets the connection finish its request and close (graceful). The
            // signal is polled only when it fires (crate::repoll::OnWake): not at every wake
            // of the connection, once or twice per streamed chunk. Only a killable listener
            // (the mock's) watches the kill signal.
            let mut stop = crate::repoll::OnWake::new(Box::pin(stopping.cancelled_owned()));
            let mut draining = false;
            let ended = loop {
                tokio::select! {
                    biased;
                    ended = conn.as_mut() => break Some(ended),
                    () = &mut stop, if !draining => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    // Dropping the connection with SO_LINGER 0 resets it.
                    () = kill.0.cancelled(), if killable => break None,
                }
            };
            if let Some(Err(e)) = ended {
                // hyper names a header read timeout so; anything else is a peer going
                // away, which is ordinary.
                let text = e.to_string();
                if text.contains("timeout") || text.contains("timed out") {
                    crate::metrics::refused_early("header_timeout");
                    tracing::info!(error = %text, "connection closed: headers too slow to arrive");
                } else {
                    tracing::debug!(error = %text, "connection ended with an error");
                }
            }
        }));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Binds the admin listener, which must be a loopback address.
async fn bind_admin(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let parsed: SocketAddr = addr.parse().map_err(|_| {
        anyhow::anyhow!("server.admin_listen: `{addr}` is not an address like 127.0.0.1:8788")
    })?;
    if !parsed.ip().is_loopback() {
        anyhow::bail!(
            "server.admin_listen: `{addr}` is not a loopback address; the admin listener needs no key, so it only listens on 127.0.0.1 or ::1"
        );
    }
    bind(addr).await
}

/// Binds an address, with a clear message when it is taken.
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| anyhow::anyhow!("`{addr}` is not an address like 127.0.0.1:8787"))?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
