//! The request path of `POST /v1/chat/completions`, stage by stage (DESIGN.md §1):
//! ingress → resolve → spend → capability → variant → budget → input guardrails → cache → infer →
//! output guardrails → fallback → deliver, with the trace recorded at the end of every path.

mod cache;
mod cascade;
mod deliver;
mod fallback;
mod guard;
mod infer;
pub mod ingress;
mod record;
mod trim;
mod variant;

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::response::Response;
use tokio::time::Instant;
use trestle_core::config::{LevelConfig, ServeMode};
use trestle_core::openai::{ChatRequest, EmbeddingsRequest};

use deliver::Relay;
pub use deliver::{Served as ServedHeaders, frame as sse_frame, trestle_headers};
use infer::{Plan, Served};
use record::TraceGuard;
pub(crate) use record::assemble_frames;

use crate::error::GatewayError;
use crate::runtime::Route;
use crate::state::SharedState;

/// Serves one chat completion.
pub async fn chat(
    state: SharedState,
    caller: Option<crate::keys::Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    if state.draining.load(Ordering::Relaxed) {
        return deliver::error(GatewayError::ShuttingDown, HeaderMap::new());
    }
    // The config this request is served with, even if a reload lands meanwhile.
    let runtime = state.runtime();
    // Ingress: body within its limit, parsed and checked; identity and trace context.
    let raw = match ingress::read_body(&headers, body, &runtime.config.server).await {
        Ok(raw) => raw,
        Err(e) => return deliver::error(e, HeaderMap::new()),
    };
    let parsed = ingress::parse_chat(&raw);
    let identity = ingress::identity(
        &headers,
        parsed.as_ref().ok().unwrap_or(&ChatRequest::default()),
    );
    let model = parsed.as_ref().map(|r| r.model.clone()).unwrap_or_default();
    let keep_bodies = runtime.config.store.record_bodies;
    let mut guard = TraceGuard::new(
        state.clone(),
        keep_bodies,
        &identity,
        &model,
        started,
        Some(raw),
    );
    guard.set_caller(caller.as_ref());
    let bare = || trestle_headers(&identity.trace_id, &identity.span_id, None);
    let req = match parsed {
        Ok(req) => req,
        Err(e) => {
            guard.fail(&e);
            return deliver::error(e, bare());
        }
    };

    // Resolve: the route (or direct target) and its caps.
    let route = match runtime.resolve(&req.model) {
        Ok(route) => route,
        Err(e) => {
            guard.fail(&e);
            return deliver::error(e, bare());
        }
    };
    if let Some(c) = &caller
        && !c.key.allows_route(&route.name)
    {
        let e = forbidden_route(c, &route.name);
        guard.fail(&e);
        return deliver::error(e, bare());
    }
    let stream = req.is_stream();
    guard.set_route(&route, stream);

    // Capability: the level live health allows, and what it changes.
    let (capability, behaviour) = capability(&route, started);
    guard.set_capability(capability);
    let include_usage = req.wants_stream_usage();

    // Variant and prompt: the experiment's variant (sticky per unit) and the prompt version
    // it or the route names, rendered into the messages; then the route's caps.
    let mut req = req;
    if let Some(conversation) = &identity.conversation_id {
        // A regeneration is feedback on the answer regenerated; on an answer the semantic
        // cache served, it teaches that entry (and it is not served for this query again).
        let question = req.last_user_text();
        let regenerated = if runtime.uses_feedback() {
            state
                .feedback
                .question(conversation, &question, &identity.trace_id)
        } else if route.config.cache.semantic.is_some() {
            state
                .feedback
                .regenerated(conversation, &question, &identity.trace_id)
        } else {
            None
        };
        if let Some(previous) = regenerated {
            runtime.registry.caches.learned.signal(&previous, true);
        }
    }
    let applied = match variant::apply(&state, &runtime, &route, &identity, &mut req) {
        Ok(applied) => applied,
        Err(e) => {
            guard.fail(&e);
            return deliver::error(e, bare());
        }
    };
    if let Some(p) = &applied.prompt {
        guard.set_prompt(p);
    }
    if let (Some(e), Some(v)) = (&applied.experiment, &applied.variant) {
        guard.set_variant(e, v);
    }
    let mut req = apply_caps(req, route.config.max_tokens, behaviour.max_tokens);
    // The chain that may serve: the capability level's targets, the variant's, the route's.
    let chain = match behaviour.targets {
        Some(_) => route.level_targets.get(&capability),
        None => None,
    }
    .map(Vec::as_slice)
    .or(applied.targets.as_deref())
    .unwrap_or(&route.targets);

    // Spend: the request's estimated cost reserved on its key's, tenant's and route's
    // budgets for the period (a spent key was already refused with its limits, in auth).
    if caller.as_ref().is_some_and(|c| c.key.budget.is_some()) || runtime.config.has_budgets() {
        let estimate = infer::estimate_cost(&req, chain);
        match state
            .keys
            .reserve(&runtime.config, caller.as_ref(), &route.name, estimate)
            .await
        {
            Ok(reserved) => guard.set_reserved(reserved),
            Err(e) => {
                guard.fail(&e);
                return deliver::error(e, bare());
            }
        }
    }

    // Budget: the input counted against the route's max_input_tokens, trimmed or refused.
    let (budget, too_long) = trim::apply(&route, chain, &mut req).await;
    let trimmed = budget.as_ref().map_or(0, |b| b.trimmed_messages);
    if let Some(b) = budget {
        guard.input_budget(b);
    }
    if let Some(e) = too_long {
        guard.fail(&e);
        return deliver::error(e, bare());
    }

    // Input guardrails: redact or refuse before anything is cached, sent or stored.
    let mut records = Vec::new();
    let input_blocked = guard::input(&route.input_guards, &mut req, &mut records)
        .await
        .err();
    guard.guardrails(records);
    // Confidence needs logprobs; the client sees them only if it asked.
    let wants_confidence = route.config.confidence || route.config.cascade.is_some();
    let client_logprobs = !wants_confidence || cascade::ask_logprobs(&mut req);
    let served = |fallback_level, cache, age_s, stale| {
        let meta = ServedHeaders {
            fallback_level,
            cache,
            capability,
            age_s,
            stale,
        };
        let mut headers = trestle_headers(&identity.trace_id, &identity.span_id, Some(&meta));
        if trimmed > 0 {
            headers.insert("x-trestle-trimmed", axum::http::HeaderValue::from(trimmed));
        }
        for (name, value) in [
            ("x-trestle-variant", &applied.variant),
            ("x-trestle-prompt-version", &applied.prompt),
        ] {
            if let Some(v) = value
                .as_deref()
                .and_then(|v| axum::http::HeaderValue::from_str(v).ok())
            {
                headers.insert(name, v);
            }
        }
        headers
    };
    let mut confidence_header: Option<String> = None;
    let deadline_ms = route.config.total_timeout_ms();
    let relay = |guard| Relay {
        guard,
        deadline: started + Duration::from_millis(deadline_ms),
        deadline_ms,
        include_usage,
        hard_stop: state.hard_stop.clone(),
    };

    // Cache: exact, then semantic; a miss says where the answer will be stored. With keys,
    // a tenant's answers are cached apart from every other tenant's.
    let cache_scope: std::borrow::Cow<'_, str> = match &caller {
        Some(c) => format!("{}|tenant:{}", applied.cache_scope, c.key.tenant).into(),
        None => applied.cache_scope.as_str().into(),
    };
    let lookup = match &input_blocked {
        Some(_) => cache::Outcome::Miss(None, None, Vec::new()),
        None => cache::lookup(&runtime, &route, &cache_scope, &req, &identity, &headers).await,
    };
    let mut verifying = false;
    let remember = match lookup {
        cache::Outcome::Hit(mut hit) => {
            guard.guardrails(std::mem::take(&mut hit.judged));
            guard.cache_hit(hit.layer, &hit.entry, hit.similarity);
            let headers = served("primary", hit.layer, Some(hit.age.as_secs()), false);
            return match hit.entry.answer.completion() {
                Some(c) => deliver::replay(c, guard, stream, headers, relay),
                None => {
                    let e = GatewayError::Internal("a cached answer no longer parses".into());
                    guard.fail(&e);
                    deliver::error(e, headers)
                }
            };
        }
        cache::Outcome::Miss(remember, pending, judged) => {
            guard.guardrails(judged);
            if let Some(p) = pending {
                verifying = true;
                guard.verify(p);
            }
            remember
        }
    };
    let key = remember.as_ref().map(|r| r.key);
    let semantic = remember.as_ref().and_then(|r| r.semantic.clone());

    // Infer: the target chain with breakers, capacity, retries, hedging and model fallback.
    let plan = Plan {
        targets: chain,
        retries: behaviour.retries.unwrap_or(route.config.retries),
        hedge: behaviour.hedge.unwrap_or(route.config.hedge),
        // Pass-through: no stage after inference reads the stream's chunks (no output
        // guardrail, no cache write or check beyond the `cache` fallback level's copy, no
        // confidence), so the upstream's frames go out as they arrived, parsed only where
        // they carry what the trace and spend need.
        relayed: stream
            && route.output_guards.is_empty()
            && remember
                .as_ref()
                .is_none_or(|r| !r.persist && r.semantic.is_none())
            && !verifying
            && !wants_confidence,
    };
    let mut inference = match (input_blocked, behaviour.serve()) {
        (Some(blocked), _) => infer::Inference::failed(blocked),
        (None, ServeMode::Normal) => match &route.config.cascade {
            Some(c) if plan.targets.len() > 1 => {
                cascade::run(
                    &route,
                    &plan,
                    &req,
                    stream,
                    started,
                    c.threshold,
                    &mut guard,
                )
                .await
            }
            _ => infer::run(&route, &plan, &req, stream, started).await,
        },
        (None, mode) => infer::Inference::not_run(format!(
            "capability level {capability} serves {}",
            if mode == ServeMode::Omitted {
                "no AI answers"
            } else {
                "fallback answers only"
            }
        )),
    };
    guard.inference(&mut inference);
    let level = inference.fallback_level();
    // What the serving provider could not take is said, never dropped silently.
    let dropped: Vec<String> = inference
        .target
        .as_ref()
        .map(|t| t.provider.dropped(&req))
        .unwrap_or_default()
        .into_iter()
        .filter(|p| client_logprobs || (p != "logprobs" && p != "top_logprobs"))
        .collect();
    guard.dropped_params(&dropped);
    let dropped_header = (!dropped.is_empty())
        .then(|| axum::http::HeaderValue::from_str(&dropped.join(", ")).ok())
        .flatten();
    // Output guardrails: on the whole answer, or on the stream as it goes.
    let result = match inference.result {
        Ok(served) if !route.output_guards.is_empty() => {
            guard::answer(&route, &plan, &req, served, started, &mut guard).await
        }
        other => other,
    };
    let result = match result {
        Ok(Served::Complete(mut c)) if wants_confidence => {
            let conf = cascade::confidence(&c.body);
            guard.confidence(conf.map(|(mean, _)| mean));
            if !client_logprobs {
                cascade::strip_logprobs(&mut c.body);
                c.raw = None;
            }
            confidence_header = Some(conf.map_or("none".to_string(), |(m, _)| format!("{m:.3}")));
            Ok(Served::Complete(c))
        }
        other => other,
    };
    match result {
        // The request itself is wrong (an upstream refused it, or no target can take it as
        // written): no fallback would be right either.
        Err(e @ (GatewayError::UpstreamRejected { .. } | GatewayError::InvalidRequest { .. })) => {
            guard.fail(&e);
            deliver::error(e, served(level, "miss", None, false))
        }
        // Fallback: cache, template, omitted — or the error when none is configured.
        Err(e) => {
            let omit = behaviour.serve() == ServeMode::Omitted;
            let only_fallbacks = behaviour.serve() != ServeMode::Normal;
            let vars = fallback::Request {
                route: &route,
                req: &req,
                identity: &identity,
                key,
                semantic,
            };
            match fallback::choose(&runtime, &vars, &e, omit, only_fallbacks).await {
                None => {
                    guard.fail(&e);
                    deliver::error(e, served(level, "miss", None, false))
                }
                Some(fb) => {
                    let stale = fb.level == "cache";
                    let headers = served(fb.level, fb.cache, fb.age_s, stale);
                    fallback::deliver(fb, guard, &e, stream, headers, relay)
                }
            }
        }
        Ok(Served::Complete(completion)) => {
            if let Some(r) = remember {
                guard.remember(r);
            }
            let cost = completion
                .body
                .usage
                .and_then(|u| guard.cost_of(&u))
                .and_then(|c| axum::http::HeaderValue::from_str(&format!("{c:.8}")).ok());
            guard.complete(&completion.body, completion.raw.as_ref());
            let mut headers = served(level, "miss", None, false);
            if let Some(v) = cost {
                headers.insert("x-trestle-cost-usd", v);
            }
            if let Some(v) = dropped_header {
                headers.insert("x-trestle-dropped-params", v);
            }
            if let Some(v) = confidence_header
                .as_deref()
                .and_then(|c| axum::http::HeaderValue::from_str(c).ok())
            {
                headers.insert("x-trestle-confidence", v);
            }
            deliver::json(completion, headers)
        }
        Ok(Served::Stream { first, rest }) => {
            if let Some(r) = remember {
                guard.remember(r);
            }
            let mut headers = served(level, "miss", None, false);
            if let Some(v) = dropped_header {
                headers.insert("x-trestle-dropped-params", v);
            }
            if plan.relayed {
                guard.pass_through();
            }
            deliver::sse(relay(guard), first, rest, headers)
        }
    }
}

/// The route's capability level now, and the behaviour configured for it.
fn capability(route: &Route, now: Instant) -> (u8, LevelConfig) {
    match &route.config.capability {
        None => (5, LevelConfig::default()),
        Some(cfg) => {
            let level = route.health.evaluate(cfg, now);
            let behaviour = if level >= 5 {
                LevelConfig::default()
            } else {
                cfg.behaviour(level)
            };
            (level, behaviour)
        }
    }
}

/// Lowers the client's output cap to the route's `max_tokens` (and the capability level's).
/// Records a request a front door refused before the pipeline (its body could not be read
/// or translated): a trace with the error and the body, as [`chat`] keeps for its own
/// refusals. Returns the trace id, for the answer's `x-trestle-trace-id`.
pub fn record_refused(
    state: &SharedState,
    caller: Option<&crate::keys::Caller>,
    headers: &HeaderMap,
    model: &str,
    raw: Option<bytes::Bytes>,
    error: &GatewayError,
) -> String {
    let keep_bodies = state.runtime().config.store.record_bodies;
    let identity = ingress::identity(headers, &ChatRequest::default());
    let mut guard = TraceGuard::new(
        state.clone(),
        keep_bodies,
        &identity,
        model,
        Instant::now(),
        raw,
    );
    guard.set_caller(caller);
    guard.fail(error);
    identity.trace_id
}

fn apply_caps(mut req: ChatRequest, route_cap: Option<u32>, level_cap: Option<u32>) -> ChatRequest {
    let cap = match (route_cap, level_cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(cap) = cap
        && req.output_cap().is_none_or(|asked| asked > cap)
    {
        if req.max_completion_tokens.is_some() {
            req.max_completion_tokens = Some(cap);
            req.max_tokens = req.max_tokens.map(|m| m.min(cap));
        } else {
            req.max_tokens = Some(cap);
        }
    }
    req
}

/// Serves `POST /v1/embeddings` from the route's first target that has embeddings.
/// The 403 for a route outside a key's list.
fn forbidden_route(caller: &crate::keys::Caller, route: &str) -> GatewayError {
    GatewayError::Forbidden {
        message: format!(
            "API key {} may not call `{route}`; its routes: {}",
            caller.key.id,
            caller
                .key
                .routes
                .as_ref()
                .map(|r| r.join(", "))
                .unwrap_or_default()
        ),
        code: "route_not_allowed",
    }
}

pub async fn embeddings(
    state: SharedState,
    caller: Option<crate::keys::Caller>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let runtime = state.runtime();
    let raw = match ingress::read_body(&headers, body, &runtime.config.server).await {
        Ok(raw) => raw,
        Err(e) => return deliver::error(e, HeaderMap::new()),
    };
    let req: EmbeddingsRequest = match ingress::parse_json(&raw) {
        Ok(r) => r,
        Err(e) => return deliver::error(e, HeaderMap::new()),
    };
    let route = match runtime.resolve(&req.model) {
        Ok(r) => r,
        Err(e) => return deliver::error(e, HeaderMap::new()),
    };
    if let Some(c) = &caller
        && !c.key.allows_route(&route.name)
    {
        return deliver::error(forbidden_route(c, &route.name), HeaderMap::new());
    }
    let timeout = Duration::from_millis(route.config.total_timeout_ms());
    let mut failures = Vec::new();
    for target in &route.targets {
        match tokio::time::timeout(timeout, target.provider.embed(&target.model, &req)).await {
            Ok(Ok(mut answer)) => {
                answer.model.clone_from(&target.model);
                return axum::response::IntoResponse::into_response(axum::Json(answer));
            }
            Ok(Err(e)) => failures.push(format!("{}: {e}", target.name)),
            Err(_) => failures.push(format!("{}: timed out", target.name)),
        }
    }
    deliver::error(
        GatewayError::UpstreamFailed {
            message: format!(
                "no target of `{}` produced embeddings: {}",
                route.name,
                failures.join("; ")
            ),
            timed_out: false,
        },
        HeaderMap::new(),
    )
}
