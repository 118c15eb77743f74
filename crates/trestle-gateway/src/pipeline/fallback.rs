//! Fallback: the levels below `model` (DESIGN.md §2), tried in order when no target served —
//! `cache` (the last good answer to the same normalized request, even stale, marked so; with
//! `cache_semantic`, else a semantic neighbour's above a stricter threshold, checked as a
//! semantic hit is),
//! `template` (the route's prewritten answer) and `omitted` (a structured
//! `feature_unavailable` error an app uses to hide the feature). Each answers in the form the
//! client asked for: JSON, or a well-formed stream.

use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;
use trestle_core::openai::{ChatCompletion, ChatRequest};

use super::deliver::{self, Relay};
use super::ingress::Identity;
use super::record::{SemanticWrite, TraceGuard};
use crate::cache::{guard, learned};
use crate::error::GatewayError;
use crate::resilience::fallback::{self, TemplateVars};
use crate::runtime::{Route, Runtime};

/// What the fallback levels may use of the request.
pub struct Request<'a> {
    pub route: &'a Route,
    pub req: &'a ChatRequest,
    pub identity: &'a Identity,
    /// The normalized-request key, when the route remembers answers.
    pub key: Option<u64>,
    /// The query's place in the semantic index, when the route has a semantic cache.
    pub semantic: Option<SemanticWrite>,
}

/// The level that will answer, and its answer.
pub struct Fallback {
    pub level: &'static str,
    pub cache: &'static str,
    pub age_s: Option<u64>,
    /// The neighbour's similarity, when a semantic neighbour answered.
    pub similarity: Option<f32>,
    answer: Answer,
}

enum Answer {
    Completion {
        completion: ChatCompletion,
        served_by: Option<String>,
    },
    Omitted {
        status: u16,
        body: Value,
    },
}

/// The first fallback level that can answer. `omit` goes straight to `omitted` (capability
/// level 1); `only_fallbacks` ends at `omitted` even when the route did not ask for it
/// (capability level 2: the route turned its models off on purpose).
pub async fn choose(
    runtime: &Runtime,
    r: &Request<'_>,
    error: &GatewayError,
    omit: bool,
    only_fallbacks: bool,
) -> Option<Fallback> {
    let cfg = &r.route.config.fallback;
    if !omit {
        let max_age = std::time::Duration::from_secs(cfg.cache_max_age_s);
        let cached = match r.key {
            Some(key) => runtime.registry.caches.exact.lookup(key, max_age).await,
            None => None,
        };
        if let Some((hit, age)) = cached
            && let Some(completion) = hit.answer.completion()
        {
            return Some(Fallback {
                level: "cache",
                cache: "exact",
                age_s: Some(age.as_secs()),
                similarity: None,
                answer: Answer::Completion {
                    completion,
                    served_by: Some(hit.served_by.clone()),
                },
            });
        }
        if let Some(fb) = semantic_neighbour(runtime, r, max_age) {
            return Some(fb);
        }
        if let Some(template) = &r.route.template {
            let vars = TemplateVars {
                route: &r.route.name,
                req: r.req,
                user_id: r.identity.user_id.as_deref(),
                conversation_id: r.identity.conversation_id.as_deref(),
                error: &error.to_string(),
            };
            match template.render(&vars) {
                Ok(text) => {
                    return Some(Fallback {
                        level: "template",
                        cache: "miss",
                        age_s: None,
                        similarity: None,
                        answer: Answer::Completion {
                            completion: fallback::completion(&r.route.name, text),
                            served_by: None,
                        },
                    });
                }
                Err(e) => {
                    tracing::warn!(route = %r.route.name, error = %e, "template fallback failed")
                }
            }
        }
    }
    (omit || only_fallbacks || cfg.omitted).then(|| Fallback {
        level: "omitted",
        cache: "miss",
        age_s: None,
        similarity: None,
        answer: Answer::Omitted {
            status: cfg.omitted_status,
            body: fallback::omitted_body(cfg, &r.route.name, &error.to_string()),
        },
    })
}

/// The `cache` level's semantic answer (`cache_semantic`): the nearest neighbour up to
/// `cache_max_age_s` old, at `cache_semantic_threshold` or more, that the guard accepts
/// (whatever the route's `guard`) and, with learned thresholds, that was never proven wrong
/// for this query and whose risk at this similarity is within `max_false_hit_rate`.
fn semantic_neighbour(
    runtime: &Runtime,
    r: &Request<'_>,
    max_age: std::time::Duration,
) -> Option<Fallback> {
    let cfg = &r.route.config.fallback;
    let sem = r.route.config.cache.semantic.as_ref()?;
    let probe = r.semantic.as_ref().filter(|_| cfg.cache_semantic)?;
    let caches = &runtime.registry.caches;
    let learning = &caches.learned;
    let query = learned::query_hash(&probe.query);
    let usable = |k: u64| {
        caches.exact.get(k, max_age).is_some_and(|(e, _)| {
            e.query
                .as_deref()
                .is_some_and(|q| guard::compatible(q, &probe.query))
        }) && !(sem.learn && learning.proven_wrong(k, query))
    };
    let n = caches
        .semantic
        .nearest(probe.scope, &probe.vector, usable)?;
    if n.similarity < cfg.cache_semantic_threshold {
        return None;
    }
    let model = sem.learn.then(|| learning.model(&r.route.name, sem));
    if let Some(m) = &model
        && !m.allows(learning.risk(m, n.key, n.similarity))
    {
        return None;
    }
    let (hit, age) = caches.exact.get(n.key, max_age)?;
    let completion = hit.answer.completion()?;
    if let Some(model) = model {
        learning.served(
            &r.identity.trace_id,
            learned::Served {
                model,
                key: n.key,
                similarity: n.similarity,
                query,
            },
        );
    }
    Some(Fallback {
        level: "cache",
        cache: "semantic",
        age_s: Some(age.as_secs()),
        similarity: Some(n.similarity),
        answer: Answer::Completion {
            completion,
            served_by: Some(hit.served_by.clone()),
        },
    })
}

/// Sends the fallback answer and records it on the trace.
pub fn deliver(
    fb: Fallback,
    mut guard: TraceGuard,
    error: &GatewayError,
    stream: bool,
    headers: HeaderMap,
    relay: impl FnOnce(TraceGuard) -> Relay,
) -> Response {
    match fb.answer {
        Answer::Omitted { status, body } => {
            guard.fallback(fb.level, None, &error.to_string());
            let message = body["error"]["message"]
                .as_str()
                .unwrap_or("feature unavailable")
                .to_string();
            guard.fail_with(status, message);
            deliver::json_value(status, &body, headers)
        }
        Answer::Completion {
            completion,
            served_by,
        } => {
            guard.fallback(
                fb.level,
                served_by,
                &format!("served at fallback level {}: {error}", fb.level),
            );
            if fb.similarity.is_some() {
                guard.cache_fallback(fb.cache, fb.similarity);
            }
            deliver::replay(completion, guard, stream, headers, relay)
        }
    }
}
