//! Fallback: the levels below `model` (DESIGN.md §2), tried in order when no target served —
//! `cache` (the last good answer to the same normalized request, even stale, marked so),
//! `template` (the route's prewritten answer) and `omitted` (a structured
//! `feature_unavailable` error an app uses to hide the feature). Each answers in the form the
//! client asked for: JSON, or a well-formed stream.

use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::Value;
use trestle_core::openai::{ChatCompletion, ChatRequest};

use super::deliver::{self, Relay};
use super::ingress::Identity;
use super::record::TraceGuard;
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
}

/// The level that will answer, and its answer.
pub struct Fallback {
    pub level: &'static str,
    pub cache: &'static str,
    pub age_s: Option<u64>,
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
                answer: Answer::Completion {
                    completion,
                    served_by: Some(hit.served_by.clone()),
                },
            });
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
        answer: Answer::Omitted {
            status: cfg.omitted_status,
            body: fallback::omitted_body(cfg, &r.route.name, &error.to_string()),
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
            deliver::replay(completion, guard, stream, headers, relay)
        }
    }
}
