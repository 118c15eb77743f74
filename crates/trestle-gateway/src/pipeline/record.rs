//! Record: the trace of a request is built as it goes and handed to the recorder when the
//! request ends — including when the client walks away mid-stream (the guard's `Drop`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Map;
use tokio::time::Instant;
use trestle_core::openai::{
    ChatChunk, ChatCompletion, Choice, FunctionCall, ResponseMessage, ToolCall, Usage,
};

use super::infer::Inference;
use super::ingress::Identity;
use crate::cache::exact::{Answer, Entry};
use crate::error::GatewayError;
use crate::metrics::{self, RequestMetrics};
use crate::providers::openai::template::{Template, Text, only_text};
use crate::resilience::Registry;
use crate::resilience::health::Admission;
use crate::runtime::{Route, Target};
use crate::state::SharedState;
use crate::store::{Body, Trace};

/// A body kept past the request (by the trace until the writer has written it, by a cache
/// for its whole life), copied out of the read buffer it is a slice of: a slice pins the
/// whole buffer (8 KB or more, often holding other requests' bytes), so a cached 700-byte
/// answer held 8 KB.
fn owned(body: &Bytes) -> Bytes {
    Bytes::copy_from_slice(body)
}

/// What a pass-through stream's kept frames start with: a typical answer's frames fit.
const FRAMES_CAPACITY: usize = 4096;

/// Where a good answer goes once it has ended well.
pub struct Remember {
    pub registry: Arc<Registry>,
    /// The exact-cache key.
    pub key: u64,
    /// How long the answer may be served, from the cache or as the `cache` fallback level
    /// (how long a shared copy is kept).
    pub keep: Duration,
    /// Where the query goes in the semantic index, when the route has a semantic cache.
    pub semantic: Option<SemanticWrite>,
    /// Keep the answer in the store too (`[cache] persist`): when the route's cache stores
    /// answers, not when only its `cache` fallback level does.
    pub persist: bool,
}

/// A query's place in the semantic index.
#[derive(Clone)]
pub struct SemanticWrite {
    pub scope: u64,
    pub vector: Arc<[f32]>,
    pub query: Arc<str>,
}

/// Owns a request's trace until it is recorded, exactly once.
pub struct TraceGuard {
    state: SharedState,
    trace: Option<Trace>,
    started: Instant,
    target: Option<Arc<Target>>,
    route: Option<Arc<Route>>,
    /// The serving target's admission, released (and its tokens settled) when the answer ends.
    admission: Option<Admission>,
    /// Where a good answer is remembered: the exact cache (and the `cache` fallback level),
    /// and the semantic index.
    remember: Option<Remember>,
    keep_bodies: bool,
    waited: Duration,
    ttft: Option<Duration>,
    stream: Option<StreamSummary>,
    /// Output guardrail outcomes a guarded stream reports when it ends.
    stream_guards: Option<crate::guard::stream::Records>,
    /// The experiment the request is in (its guards watch every outcome).
    experiment: Option<Arc<crate::experiments::Experiment>>,
    /// The caller's key, settled with the request's cost and tokens when it ends.
    caller: Option<crate::keys::Caller>,
    /// The estimated cost reserved on the request's budgets before the call; the real cost
    /// replaces it when the request ends.
    reserved_usd: f64,
    /// A semantic neighbour to compare a good answer with (learned thresholds).
    verify: Option<crate::cache::learned::Pending>,
    /// A pass-through stream's frames as sent (and its usage chunk), kept for the trace's
    /// response body: assembled on the writer thread, not here (`Body::Frames`). Copied as
    /// they go, not held as slices of the upstream's reads, which would pin those read
    /// buffers for the stream's life; the writer thread frees one buffer, not one per read.
    frames: Option<bytes::BytesMut>,
}

impl TraceGuard {
    pub fn new(
        state: SharedState,
        keep_bodies: bool,
        identity: &Identity,
        route: &str,
        started: Instant,
        raw: Option<Bytes>,
    ) -> Self {
        let started_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64 - started.elapsed().as_millis() as i64)
            .unwrap_or(0);
        let trace = Trace {
            trace_id: identity.trace_id.clone(),
            span_id: identity.span_id.clone(),
            parent_span_id: identity.parent_span_id.clone(),
            started_at_ms,
            duration_ms: 0.0,
            ttft_ms: None,
            route: route.to_string(),
            class: String::new(),
            conversation_id: identity.conversation_id.clone(),
            user_id: identity.user_id.clone(),
            stream: false,
            status: 0,
            outcome: String::new(),
            error: None,
            fallback_level: "primary".into(),
            capability_level: 5,
            cache: "miss".into(),
            cost_saved_usd: 0.0,
            cache_similarity: None,
            served_by: None,
            usage: Usage::default(),
            cost_usd: 0.0,
            request: raw.filter(|_| keep_bodies).map(|b| Body::Raw(owned(&b))),
            response: None,
            attempts: Vec::new(),
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
        };
        TraceGuard {
            state,
            trace: Some(trace),
            started,
            target: None,
            route: None,
            admission: None,
            remember: None,
            keep_bodies,
            waited: Duration::ZERO,
            ttft: None,
            stream: None,
            stream_guards: None,
            experiment: None,
            caller: None,
            reserved_usd: 0.0,
            verify: None,
            frames: None,
        }
    }

    /// Adds guardrail outcomes to the trace.
    pub fn guardrails(&mut self, records: Vec<crate::guard::GuardRecord>) {
        if let Some(t) = self.trace.as_mut() {
            t.guardrails.extend(records);
        }
    }

    /// The answer's confidence.
    pub fn confidence(&mut self, confidence: Option<f64>) {
        if let Some(t) = self.trace.as_mut() {
            t.confidence = confidence;
        }
    }

    /// How the input was counted against the route's `max_input_tokens`, and trimmed.
    pub fn input_budget(&mut self, budget: crate::store::InputBudget) {
        if let Some(t) = self.trace.as_mut() {
            t.input_budget = Some(budget);
        }
    }

    /// The request parameters the serving provider left out.
    pub fn dropped_params(&mut self, dropped: &[String]) {
        if let Some(t) = self.trace.as_mut() {
            t.dropped_params = dropped.to_vec();
        }
    }

    /// Adds a row to the trace's attempts (a cascade step that escalated).
    pub fn note(&mut self, attempt: crate::store::Attempt) {
        if let Some(t) = self.trace.as_mut() {
            t.attempts.push(attempt);
        }
    }

    /// Where a guarded stream reports its guardrails' outcomes when it ends.
    pub fn stream_guardrails(&mut self, records: crate::guard::stream::Records) {
        self.stream_guards = Some(records);
    }

    pub fn set_route(&mut self, route: &Arc<Route>, stream: bool) {
        if let Some(t) = self.trace.as_mut() {
            t.route.clone_from(&route.name);
            t.class = route.config.class.as_str().to_string();
            t.stream = stream;
        }
        self.route = Some(route.clone());
    }

    /// The key the request came with: its id and tenant go on the trace, and its usage is
    /// settled when the request ends.
    pub fn set_caller(&mut self, caller: Option<&crate::keys::Caller>) {
        if let (Some(t), Some(c)) = (self.trace.as_mut(), caller) {
            t.tenant = Some(c.key.tenant.clone());
            t.key_id = Some(c.key.id.clone());
        }
        self.caller = caller.cloned();
    }

    /// What the request's budgets reserved before the call.
    pub fn set_reserved(&mut self, usd: f64) {
        self.reserved_usd = usd;
    }

    /// The prompt version rendered into the request.
    pub fn set_prompt(&mut self, id: &str) {
        if let Some(t) = self.trace.as_mut() {
            t.prompt_version = Some(id.to_string());
        }
    }

    /// The experiment and variant the request was assigned.
    pub fn set_variant(&mut self, experiment: &Arc<crate::experiments::Experiment>, variant: &str) {
        if let Some(t) = self.trace.as_mut() {
            t.experiment = Some(experiment.name.clone());
            t.variant = Some(variant.to_string());
        }
        self.experiment = Some(experiment.clone());
    }

    pub fn set_capability(&mut self, level: u8) {
        if let Some(t) = self.trace.as_mut() {
            t.capability_level = level;
        }
    }

    /// Remember the answer, if it ends well.
    pub fn remember(&mut self, remember: Remember) {
        self.remember = Some(remember);
    }

    /// Compare the answer, if it ends well, with a semantic neighbour's.
    pub fn verify(&mut self, pending: crate::cache::learned::Pending) {
        self.verify = Some(pending);
    }

    /// Notes that the `cache` fallback level served from this cache layer.
    pub fn cache_fallback(&mut self, layer: &str, similarity: Option<f32>) {
        if let Some(t) = self.trace.as_mut() {
            t.cache = layer.to_string();
            t.cache_similarity = similarity.map(f64::from);
        }
    }

    /// Notes that a cache layer served the answer.
    pub fn cache_hit(&mut self, layer: &str, entry: &Entry, similarity: Option<f32>) {
        self.remember = None;
        if let Some(t) = self.trace.as_mut() {
            t.cache = layer.to_string();
            t.served_by = Some(entry.served_by.clone());
            t.cost_saved_usd = entry.cost_usd;
            t.cache_similarity = similarity.map(f64::from);
        }
        metrics::cache_saved(entry.cost_usd);
    }

    /// Puts a good answer into the caches.
    fn store(&mut self, answer: Answer, usage: &Usage) {
        let (Some(r), Some(target)) = (self.remember.take(), &self.target) else {
            return;
        };
        let cost = target.price.map(|p| p.cost(usage)).unwrap_or(0.0);
        let mut entry = Entry::new(answer, &target.name, cost);
        if let Some(s) = &r.semantic {
            entry.embedding = Some(s.vector.clone());
            entry.query = Some(s.query.clone());
            entry.scope = Some(s.scope);
        }
        r.registry
            .caches
            .exact
            .store_as(r.key, entry, r.keep, r.persist);
        if let Some(SemanticWrite { scope, vector, .. }) = r.semantic {
            // An HNSW insert is CPU work: off the request's thread.
            let (registry, key) = (r.registry, r.key);
            tokio::task::spawn_blocking(move || {
                let caches = &registry.caches;
                caches.semantic.insert(scope, vector, key, |k| {
                    caches
                        .exact
                        .get(k, Duration::MAX)
                        .and_then(|(e, _)| e.embedding.clone())
                });
            });
        }
    }

    /// Notes that a fallback level served: `note` says why the models did not.
    pub fn fallback(&mut self, level: &str, served_by: Option<String>, note: &str) {
        self.remember = None;
        self.verify = None;
        if let Some(t) = self.trace.as_mut() {
            t.fallback_level = level.to_string();
            t.served_by = served_by;
            t.error = Some(note.to_string());
        }
    }

    /// Takes the attempts and the serving target from the chain.
    pub fn inference(&mut self, inference: &mut Inference) {
        self.target = inference.target.clone();
        self.admission = inference.admission.take();
        self.waited = inference.waited;
        if let Some(t) = self.trace.as_mut() {
            // Appended: a reask's attempts follow the first answer's.
            t.attempts.append(&mut inference.attempts);
            t.fallback_level = inference.fallback_level().to_string();
            t.served_by = inference.target.as_ref().map(|t| t.name.clone());
        }
    }

    pub fn fail(mut self, error: &GatewayError) {
        self.fail_with(error.status().as_u16(), error.to_string());
    }

    /// Ends the trace as an error answer with this status.
    pub fn fail_with(&mut self, status: u16, message: String) {
        if let Some(t) = self.trace.as_mut() {
            t.status = status;
            t.outcome = "error".into();
            t.error = Some(message);
            if t.fallback_level != "omitted" {
                t.served_by = None;
            }
        }
        self.finish();
    }

    /// What an answer with this usage costs at the serving target's price (`None` when the
    /// target has no price).
    pub fn cost_of(&self, usage: &trestle_core::openai::Usage) -> Option<f64> {
        self.target.as_ref()?.price.map(|p| p.cost(usage))
    }

    pub fn complete(mut self, completion: &ChatCompletion, raw: Option<&Bytes>) {
        let keep = self.keep_bodies;
        if let Some(pending) = self.verify.take() {
            pending.compare(answer_text(completion));
        }
        // One copy, shared by the cache and the trace.
        let raw = raw.filter(|_| keep || self.remember.is_some()).map(owned);
        if self.remember.is_some() {
            let answer = match &raw {
                Some(b) => Answer::Raw(b.clone()),
                None => Answer::Parsed(completion.clone()),
            };
            self.store(answer, &completion.usage.unwrap_or_default());
        }
        let upstream = self.target.is_some();
        if let Some(t) = self.trace.as_mut() {
            t.status = 200;
            t.outcome = "ok".into();
            t.usage = completion.usage.unwrap_or_default();
            if upstream {
                t.response_model = Some(completion.model.clone()).filter(|m| !m.is_empty());
                t.system_fingerprint = fingerprint(&completion.extra);
            }
            if keep {
                t.response = Some(match raw {
                    Some(b) => Body::Raw(b),
                    None => Body::Completion(Box::new(completion.clone())),
                });
            }
        }
        self.finish();
    }

    /// Notes that the first bytes of a stream are going out.
    pub fn stream_started(&mut self) {
        self.ttft = Some(self.started.elapsed());
        self.stream = Some(StreamSummary::default());
        metrics::streams_open(1.0);
    }

    /// The stream is relayed as the upstream's frames: the trace (when it keeps bodies) and
    /// the `cache` fallback level keep them instead of an answer assembled on the request path.
    pub fn pass_through(&mut self) {
        if self.keep_bodies || self.remember.is_some() {
            self.frames = Some(bytes::BytesMut::with_capacity(FRAMES_CAPACITY));
        }
    }

    /// Whether [`TraceGuard::frame`] keeps what it is given.
    pub fn keeps_frames(&self) -> bool {
        self.frames.is_some()
    }

    /// One or more whole SSE frames of a pass-through stream.
    pub fn frame(&mut self, frames: &Bytes) {
        if let Some(kept) = self.frames.as_mut() {
            kept.extend_from_slice(frames);
        }
    }

    pub fn observe(&mut self, chunk: &ChatChunk) {
        if let Some(s) = self.stream.as_mut() {
            s.observe(chunk);
        }
    }

    /// Ends a stream: `error` is `None` when it ended normally.
    pub fn end_stream(&mut self, outcome: &str, error: Option<String>) {
        if let Some(t) = self.trace.as_mut() {
            t.status = 200;
            t.outcome = outcome.to_string();
            t.error = error;
        }
        self.finish();
    }

    fn finish(&mut self) {
        let Some(mut t) = self.trace.take() else {
            return;
        };
        let total = self.started.elapsed();
        t.duration_ms = total.as_secs_f64() * 1000.0;
        if let Some(records) = self.stream_guards.take()
            && let Ok(mut r) = records.lock()
        {
            t.guardrails.append(&mut r);
        }
        t.ttft_ms = self.ttft.map(|d| d.as_secs_f64() * 1000.0);
        if let Some(s) = self.stream.take() {
            metrics::streams_open(-1.0);
            t.usage = s.usage.unwrap_or_default();
            if self.target.is_some() {
                t.response_model = Some(s.model.clone()).filter(|m| !m.is_empty());
                t.system_fingerprint.clone_from(&s.fingerprint);
            }
            if t.outcome != "ok" {
                self.remember = None;
                self.verify = None;
            }
            if let Some(frames) = self.frames.take() {
                let frames = frames.freeze();
                if self.remember.is_some() {
                    // A copy of its exact size: the buffer grew by doubling.
                    self.store(Answer::Frames(Bytes::copy_from_slice(&frames)), &t.usage);
                }
                if self.keep_bodies {
                    t.response = Some(Body::Frames(vec![frames]));
                }
            } else if self.keep_bodies || self.remember.is_some() || self.verify.is_some() {
                let completion = s.into_completion();
                if let Some(pending) = self.verify.take() {
                    pending.compare(answer_text(&completion));
                }
                if self.remember.is_some() {
                    self.store(Answer::Parsed(completion.clone()), &t.usage);
                }
                if self.keep_bodies {
                    t.response = Some(Body::Completion(Box::new(completion)));
                }
            }
        }
        if let Some(mut admission) = self.admission.take() {
            let now = Instant::now();
            if t.outcome == "stream_error" {
                admission.report_broken_stream(now);
            }
            admission.settle_tokens(t.usage.prompt_tokens + t.usage.completion_tokens, now);
        }
        // Usage and cost belong to the serving attempt: the last one that succeeded (a
        // cancelled hedge may follow it).
        let serving = t.attempts.iter_mut().rev().find(|a| a.status == "ok");
        if let (Some(target), Some(a)) = (&self.target, serving) {
            a.tokens_in = t.usage.prompt_tokens;
            a.tokens_out = t.usage.completion_tokens;
            a.tokens_cached = t.usage.cached_tokens();
            let cost = target.price.map(|p| p.cost(&t.usage));
            a.cost_usd = cost.unwrap_or(0.0);
            let (input, output, cached) = (a.tokens_in, a.tokens_out, a.tokens_cached);
            match &self.route {
                Some(r) => r.metrics.usage(&target.name, input, output, cached, cost),
                None => metrics::usage(&t.route, &target.name, input, output, cached, cost),
            }
        }
        t.cost_usd = t.attempts.iter().map(|a| a.cost_usd).sum();
        // Spend: the key's, its tenant's and the route's, settled off the request path.
        let tokens = t.usage.prompt_tokens + t.usage.completion_tokens;
        let (cost, caller, reserved) = (t.cost_usd, self.caller.clone(), self.reserved_usd);
        // Without a key, only a route with a budget has spend to settle: no task otherwise.
        let route = self.route.as_ref().map(|r| r.name.clone());
        let route_budget = route.as_deref().is_some_and(|r| {
            let runtime = self.state.runtime();
            runtime
                .config
                .routes
                .get(r)
                .is_some_and(|c| c.budget_usd.is_some())
        });
        if caller.is_some() || reserved > 0.0 || (cost > 0.0 && route_budget) {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let state = self.state.clone();
                    rt.spawn(async move {
                        let runtime = state.runtime();
                        state
                            .keys
                            .settle_request(
                                &runtime.config,
                                caller.as_ref(),
                                route.as_deref(),
                                cost,
                                reserved,
                                tokens,
                            )
                            .await;
                    });
                }
                Err(_) => {
                    if let Some(c) = &caller {
                        let reserved = if c.key.budget.is_some() {
                            reserved
                        } else {
                            0.0
                        };
                        c.usage.settle_reserved(cost, reserved, tokens);
                    }
                }
            }
        }
        let ready_at = self.ttft.unwrap_or(total);
        let m = RequestMetrics {
            route: &t.route,
            status: t.status,
            fallback_level: &t.fallback_level,
            total,
            ttft: self.ttft,
            overhead: (!t.attempts.is_empty()).then(|| ready_at.saturating_sub(self.waited)),
        };
        match &self.route {
            Some(r) => {
                r.metrics.request(&m);
                let served = if t.status >= 400 && t.fallback_level != "omitted" {
                    "error"
                } else {
                    &t.fallback_level
                };
                r.served.count(served, Instant::now());
            }
            None => metrics::request(&m),
        }
        if t.outcome != "ok" {
            tracing::info!(trace_id = %t.trace_id, route = %t.route, status = t.status, outcome = %t.outcome,
                error = t.error.as_deref().unwrap_or(""), "request did not end normally");
        }
        self.state.online.offer(&self.state.runtime, &t);
        if let (Some(e), Some(v)) = (&self.experiment, &t.variant) {
            let outcome = crate::experiments::Outcome {
                error: t.status >= 500,
                fallback: !matches!(t.fallback_level.as_str(), "primary" | "model"),
                guardrail: t.guardrails.iter().any(|g| g.outcome != "pass"),
                latency_ms: t.duration_ms,
            };
            self.state.experiments.observe(e, v, outcome);
        }
        // Feedback may arrive before the store has the trace (only where feedback is used).
        if self.state.runtime.load().uses_feedback() {
            self.state.feedback.remember(
                &t.trace_id,
                crate::feedback::TraceMeta {
                    route: t.route.clone(),
                    conversation_id: t.conversation_id.clone(),
                    experiment: t.experiment.clone(),
                    variant: t.variant.clone(),
                    prompt_version: t.prompt_version.clone(),
                    tenant: t.tenant.clone(),
                },
            );
        }
        self.state.recorder.record(t);
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if let Some(t) = self.trace.as_mut() {
            t.outcome = "client_disconnected".into();
            if t.status == 0 {
                t.status = 499;
            }
            t.error = Some("the client went away before the response ended".into());
            self.finish();
        }
    }
}

/// A streamed answer assembled for the trace.
#[derive(Default)]
struct StreamSummary {
    id: String,
    model: String,
    created: u64,
    content: String,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    /// The upstream's `system_fingerprint` (the first chunk that carries one).
    fingerprint: Option<String>,
}

/// A pass-through stream's answer from its frames (`data: CHUNK\n\n`, several to a piece),
/// assembled as the parsed relay assembles it: run by the trace writer, off the request path.
/// Each frame is read into borrowed strings ([`Piece`]), not a [`ChatChunk`]: only what the
/// answer keeps is taken. A frame that repeats the last parsed one around another text is not
/// parsed again: it is that chunk with that text (`providers/openai/template.rs`).
pub(crate) fn assemble_frames(frames: &[Bytes]) -> ChatCompletion {
    let mut summary = StreamSummary::default();
    let mut last: Option<(Template<&[u8]>, Piece<'_>)> = None;
    for piece in frames {
        let mut rest = &piece[..];
        while !rest.is_empty() {
            let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
            let line = &rest[..end];
            rest = rest.get(end + 1..).unwrap_or_default();
            let Some(payload) = line.strip_prefix(b"data: ") else {
                continue;
            };
            if let Some((template, chunk)) = &last
                && let Some(text) = template.text(payload)
            {
                summary.observe_piece(chunk, Some(text));
                continue;
            }
            if let Ok(chunk) = serde_json::from_slice::<Piece<'_>>(payload) {
                summary.observe_piece(&chunk, None);
                last = chunk
                    .text()
                    .and_then(|text| Template::learn(payload, text))
                    .map(|template| (template, chunk));
            }
        }
    }
    summary.into_completion()
}

/// What [`StreamSummary`] keeps of a chunk, borrowed from its frame.
#[derive(serde::Deserialize)]
struct Piece<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    created: u64,
    #[serde(default, borrow)]
    model: Cow<'a, str>,
    #[serde(default, borrow)]
    choices: Vec<PieceChoice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
}

impl<'a> Piece<'a> {
    /// The one choice's text, when it was borrowed (it had no escapes): a template's.
    fn text(&self) -> Option<&'a str> {
        only_text(&self.choices, |c| c.delta.content.as_ref())
    }
}

#[derive(serde::Deserialize)]
struct PieceChoice<'a> {
    #[serde(default)]
    index: u32,
    #[serde(default, borrow)]
    delta: PieceDelta<'a>,
    #[serde(default, borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(serde::Deserialize, Default)]
struct PieceDelta<'a> {
    #[serde(default, borrow)]
    content: Option<Text<'a>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<PieceCall<'a>>>,
}

#[derive(serde::Deserialize)]
struct PieceCall<'a> {
    index: u32,
    #[serde(default, borrow)]
    id: Option<Text<'a>>,
    #[serde(default, borrow)]
    function: Option<PieceFunction<'a>>,
}

#[derive(serde::Deserialize)]
struct PieceFunction<'a> {
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    arguments: Option<Text<'a>>,
}

/// The text of an answer's first choice.
fn answer_text(completion: &ChatCompletion) -> Option<String> {
    completion.choices.first()?.message.content.clone()
}

/// The `system_fingerprint` an OpenAI-compatible answer or chunk carries.
fn fingerprint(extra: &Map<String, serde_json::Value>) -> Option<String> {
    extra
        .get("system_fingerprint")
        .and_then(|v| v.as_str())
        .filter(|f| !f.is_empty())
        .map(str::to_string)
}

impl StreamSummary {
    fn observe(&mut self, chunk: &ChatChunk) {
        self.head(&chunk.id, &chunk.model, chunk.created, chunk.usage);
        if self.fingerprint.is_none() {
            self.fingerprint = fingerprint(&chunk.extra);
        }
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            for call in choice.delta.tool_calls.iter().flatten() {
                let f = call.function.as_ref();
                self.tool_call_piece(
                    call.index,
                    call.id.as_deref(),
                    f.and_then(|f| f.name.as_deref()),
                    f.and_then(|f| f.arguments.as_deref()),
                );
            }
            self.delta(
                choice.delta.content.as_deref(),
                choice.finish_reason.as_deref(),
            );
        }
    }

    /// [`StreamSummary::observe`] for a borrowed chunk (the fingerprint is the request
    /// path's, not the assembled answer's); `text`, when given, stands for its first choice's.
    fn observe_piece(&mut self, chunk: &Piece<'_>, text: Option<&str>) {
        self.head(&chunk.id, &chunk.model, chunk.created, chunk.usage);
        for choice in chunk.choices.iter().filter(|c| c.index == 0) {
            for call in choice.delta.tool_calls.iter().flatten() {
                let f = call.function.as_ref();
                self.tool_call_piece(
                    call.index,
                    call.id.as_deref(),
                    f.and_then(|f| f.name.as_deref()),
                    f.and_then(|f| f.arguments.as_deref()),
                );
            }
            self.delta(
                text.or(choice.delta.content.as_deref()),
                choice.finish_reason.as_deref(),
            );
        }
    }

    /// The stream's identity from its first chunk; the usage from whichever carries it.
    fn head(&mut self, id: &str, model: &str, created: u64, usage: Option<Usage>) {
        if self.id.is_empty() {
            self.id = id.to_string();
            self.model = model.to_string();
            self.created = created;
        }
        if usage.is_some() {
            self.usage = usage;
        }
    }

    /// The first choice's text and finish reason from one chunk.
    fn delta(&mut self, content: Option<&str>, finish_reason: Option<&str>) {
        if let Some(text) = content {
            self.content.push_str(text);
        }
        if let Some(reason) = finish_reason {
            self.finish_reason = Some(reason.to_string());
        }
    }

    /// Adds one streamed piece of tool call `index` to the calls assembled so far.
    fn tool_call_piece(
        &mut self,
        index: u32,
        id: Option<&str>,
        name: Option<&str>,
        arguments: Option<&str>,
    ) {
        let i = index as usize;
        while self.tool_calls.len() <= i {
            self.tool_calls.push(ToolCall {
                id: None,
                kind: "function".into(),
                function: FunctionCall::default(),
            });
        }
        let slot = &mut self.tool_calls[i];
        if let Some(id) = id {
            slot.id = Some(id.to_string());
        }
        slot.function.name.push_str(name.unwrap_or_default());
        slot.function
            .arguments
            .push_str(arguments.unwrap_or_default());
    }

    fn into_completion(self) -> ChatCompletion {
        ChatCompletion {
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant".into(),
                    content: (!self.content.is_empty() || self.tool_calls.is_empty())
                        .then_some(self.content),
                    tool_calls: (!self.tool_calls.is_empty()).then_some(self.tool_calls),
                    extra: Map::new(),
                },
                finish_reason: self.finish_reason,
                extra: Map::new(),
            }],
            usage: self.usage,
            extra: Map::new(),
        }
    }
}

#[cfg(test)]
mod frames_tests {
    use super::*;

    /// The answer assembled from frames equals the one assembled from parsed chunks: text,
    /// tool calls, finish reason, usage.
    #[test]
    fn frames_assemble_as_parsed_chunks_do() {
        let usage = r#"data: {"id":"x","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#;
        for fixture in [
            include_str!("../providers/openai/fixtures/stream.sse"),
            include_str!("../providers/openai/fixtures/tool_stream.sse"),
        ] {
            let text = format!("{fixture}{usage}\n\n");
            let mut parsed = StreamSummary::default();
            for line in text.lines() {
                if let Some(Ok(c)) = line
                    .strip_prefix("data: ")
                    .map(serde_json::from_str::<ChatChunk>)
                {
                    parsed.observe(&c);
                }
            }
            let framed = assemble_frames(&[Bytes::from(text.clone())]);
            assert_eq!(
                serde_json::to_value(&framed).unwrap(),
                serde_json::to_value(parsed.into_completion()).unwrap()
            );
            assert!(framed.usage.is_some());
        }
    }

    /// A chunk's JSON with this text, as upstreams send them: the same bytes around each text.
    fn chunk(text: &str, finish: bool) -> String {
        let finish = if finish { "\"stop\"" } else { "null" };
        format!(
            r#"{{"id":"c9","object":"chat.completion.chunk","created":7,"model":"m1","choices":[{{"index":0,"delta":{{"content":{}}},"finish_reason":{finish}}}],"system_fingerprint":"fp"}}"#,
            serde_json::to_string(text).unwrap()
        )
    }

    proptest::proptest! {
        /// Frames that repeat the last parsed chunk around another text (the template path)
        /// assemble as parsed chunks do, whatever the texts hold (quotes, escapes, control
        /// characters, any Unicode) and however the frames are cut into pieces; so do frames
        /// that only look alike (a raw control character or a stray quote in the text).
        #[test]
        fn templated_frames_assemble_as_parsed_chunks_do(
            texts in proptest::collection::vec("(\\PC|[\"\\\\\n\t\u{7f}\u{2028}é✓]){0,12}", 1..12),
            raw in proptest::collection::vec(proptest::prelude::any::<bool>(), 12),
            cuts in proptest::collection::vec(0usize..4096, 0..4),
        ) {
            let mut wire = String::new();
            let mut parsed = StreamSummary::default();
            for (i, text) in texts.iter().enumerate() {
                let json = if raw[i] {
                    // The text put in unescaped: valid JSON or not, as it happens.
                    chunk("\u{1}", false).replace("\\u0001", text)
                } else {
                    chunk(text, i + 1 == texts.len())
                };
                if let Ok(c) = serde_json::from_str::<ChatChunk>(&json) {
                    parsed.observe(&c);
                }
                wire.push_str(&format!("data: {json}\n\n"));
            }
            let bytes = Bytes::from(wire);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            // Pieces end where frames end (the relay sends whole frames): cut after a `\n\n`.
            let mut pieces = Vec::new();
            let mut from = 0;
            for cut in cuts {
                if let Some(at) = memchr::memmem::find(&bytes[cut.max(from)..], b"\n\n") {
                    let to = cut.max(from) + at + 2;
                    pieces.push(bytes.slice(from..to));
                    from = to;
                }
            }
            pieces.push(bytes.slice(from..));
            proptest::prop_assert_eq!(
                serde_json::to_value(assemble_frames(&pieces)).unwrap(),
                serde_json::to_value(parsed.into_completion()).unwrap()
            );
        }
    }
}
