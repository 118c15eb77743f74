//! Cache: before inference, the exact cache (normalized key, within the route's `ttl_s`;
//! this instance's, then the one shared in Redis with `[state] kind = "redis"`), then the
//! semantic cache (the query's embedding against earlier ones in the same scope: the nearest
//! one the guard accepts, served when its learned threshold allows, [`learned`]; with a
//! `judge`, a candidate the threshold would not serve, from `judge_from` up, is served when
//! the judge says it asks for the same answer, [`judge`]; with a `verifier`, an in-process
//! model gives its verdict first, [`verify`], and the judge sees what it turns down). A miss
//! carries what the answer will be stored under, and a neighbour to compare the fresh answer
//! with when one is to be verified. The judge is awaited on this request's own task, within
//! `judge_timeout_ms`, the verifier on a blocking thread; routes without them never reach
//! them.
//!
//! `cache-control: no-cache` on the request skips the lookup; `no-store` skips storing.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use tokio::time::Instant;
use trestle_core::openai::ChatRequest;

use super::ingress::Identity;
use super::record::{Remember, SemanticWrite};
use crate::cache::exact::Entry;
use crate::cache::judge::{self, Verdict};
use crate::cache::learned::{self, Check, Pending};
use crate::cache::{guard, key, verify};
use crate::guard::GuardRecord;
use crate::metrics;
use crate::runtime::{Route, Runtime};

/// A cached answer to serve.
pub struct Hit {
    /// `exact` or `semantic`.
    pub layer: &'static str,
    pub entry: Arc<Entry>,
    pub age: Duration,
    pub similarity: Option<f32>,
    /// The verifier's and the judge's verdicts on it, for the trace.
    pub judged: Vec<GuardRecord>,
}

pub enum Outcome {
    Hit(Hit),
    /// Where the answer goes once made (none: nothing is stored), the semantic neighbour
    /// to compare it with (learned thresholds), and the verifier's and judge's verdicts on a
    /// candidate they turned down, for the trace.
    Miss(Option<Remember>, Option<Pending>, Vec<GuardRecord>),
}

/// The tenant a request belongs to: `x-trestle-tenant-id`, else `metadata.tenant_id`.
fn tenant<'a>(headers: &'a HeaderMap, req: &'a ChatRequest) -> Option<&'a str> {
    headers
        .get("x-trestle-tenant-id")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            req.metadata
                .as_ref()
                .and_then(|m| m.get("tenant_id"))
                .and_then(|v| v.as_str())
        })
}

fn cache_control(headers: &HeaderMap, directive: &str) -> bool {
    headers
        .get_all("cache-control")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case(directive))
}

pub async fn lookup(
    runtime: &Runtime,
    route: &Route,
    variant: &str,
    req: &ChatRequest,
    identity: &Identity,
    headers: &HeaderMap,
) -> Outcome {
    let cfg = &route.config.cache;
    let reads = cfg.mode.reads() && !cache_control(headers, "no-cache");
    let writes = cfg.mode.writes() && !cache_control(headers, "no-store");
    // The `cache` fallback level needs answers stored even when the cache itself is off.
    let stores = writes || route.config.fallback.cache;
    if !reads && !stores {
        return Outcome::Miss(None, None, Vec::new());
    }
    // The `cache` level's semantic neighbours need the queries indexed even when the cache
    // itself stores nothing.
    let fallback_semantic = route.config.fallback.cache && route.config.fallback.cache_semantic;
    let caches = &runtime.registry.caches;
    let ttl = Duration::from_secs(cfg.ttl_s);
    let exact_key = key::exact_key(route, variant, req, &cfg.normalize);
    if reads && let Some((entry, age)) = caches.exact.lookup(exact_key, ttl).await {
        route.metrics.cache_lookup("exact");
        return Outcome::Hit(Hit {
            layer: "exact",
            entry,
            age,
            similarity: None,
            judged: Vec::new(),
        });
    }
    let mut semantic = None;
    let mut pending = None;
    let mut judged = Vec::new();
    if let Some(sem) = &cfg.semantic
        && (reads || writes || fallback_semantic)
        && (sem.allow_tools || req.tools.as_ref().is_none_or(Vec::is_empty))
        && (sem.allow_temperature || req.temperature.is_none_or(|t| t == 0.0))
        && let Some(embedder) = runtime.embedders.get(&sem.embedder)
    {
        let text = key::query_text(req, sem.query);
        let started = Instant::now();
        match embedder.embed(&text).await {
            Err(e) => {
                metrics::embedding(&sem.embedder, started.elapsed(), false);
                tracing::warn!(route = %route.name, embedder = %sem.embedder, error = %e,
                    "embedding failed; the semantic cache is skipped for this request");
            }
            Ok(vector) => {
                metrics::embedding(&sem.embedder, started.elapsed(), true);
                let scope = key::semantic_scope(
                    route,
                    variant,
                    req,
                    sem.scope,
                    identity.user_id.as_deref(),
                    tenant(headers, req),
                );
                let learning = &caches.learned;
                let query = learned::query_hash(&text);
                // The nearest live entry that agrees on the facts (guard::compatible) and was
                // never proven wrong for this query.
                let usable = |k: u64| {
                    caches.exact.get(k, ttl).is_some_and(|(e, _)| {
                        !sem.guard
                            || e.query
                                .as_deref()
                                .is_none_or(|q| guard::compatible(q, &text))
                    }) && !(sem.learn && learning.proven_wrong(k, query))
                };
                if reads
                    && let Some(n) = caches.semantic.nearest(scope, &vector, usable)
                    && let Some((entry, age)) = caches.exact.get(n.key, ttl)
                {
                    let model = sem.learn.then(|| learning.model(&route.name, sem));
                    // Without learning: the threshold. With it: the entry's risk at this
                    // similarity; a share of hits is verified, a share of near misses explored.
                    let check = match &model {
                        None => (n.similarity < sem.threshold).then_some(Check::Explore),
                        Some(m) if !m.allows(learning.risk(m, n.key, n.similarity)) => {
                            Some(Check::Explore)
                        }
                        Some(_) if rand::random::<f32>() < sem.verify_rate => Some(Check::Verify),
                        Some(_) => None,
                    };
                    // The verifier: on a candidate the threshold would not serve, from its
                    // floor up (with `verifier_all`, on one it would serve too).
                    let verify = sem.verifier.as_deref().filter(|_| {
                        asks_second_opinion(
                            n.similarity,
                            sem.verifier_floor(),
                            sem.verifier_all,
                            check,
                        )
                    });
                    let check = match (verify, entry.query.as_deref()) {
                        (Some(name), Some(cached)) => {
                            let (same, record) = ask_verifier(
                                runtime,
                                route,
                                sem,
                                name,
                                cached,
                                &text,
                                n.similarity,
                            )
                            .await;
                            judged.push(record);
                            if same {
                                None
                            } else {
                                Some(check.unwrap_or(Check::Explore))
                            }
                        }
                        _ => check,
                    };
                    // The judge: on a candidate the threshold would not serve, from its floor
                    // up (with `judge_all`, on one it would serve too).
                    let ask = sem.judge.as_deref().filter(|_| {
                        asks_second_opinion(n.similarity, sem.judge_floor(), sem.judge_all, check)
                    });
                    let check = match (ask, entry.query.as_deref()) {
                        (Some(name), Some(cached)) => {
                            let (same, fresh, record) =
                                ask_judge(runtime, route, sem, name, cached, &text, n.similarity)
                                    .await;
                            judged.push(record);
                            if same {
                                // A fresh yes is evidence for the entry (a remembered one
                                // was counted when it was given).
                                if fresh && let Some(model) = &model {
                                    learning.observe(
                                        model,
                                        n.key,
                                        query,
                                        learned::Observation {
                                            similarity: n.similarity,
                                            wrong: false,
                                            source: learned::Source::Feedback,
                                        },
                                    );
                                }
                                None
                            } else {
                                Some(check.unwrap_or(Check::Explore))
                            }
                        }
                        _ => check,
                    };
                    match (check, model) {
                        (None, model) => {
                            route.metrics.cache_lookup("semantic");
                            if let Some(model) = model {
                                learning.served(
                                    &identity.trace_id,
                                    learned::Served {
                                        model,
                                        key: n.key,
                                        similarity: n.similarity,
                                        query,
                                    },
                                );
                            }
                            return Outcome::Hit(Hit {
                                layer: "semantic",
                                entry,
                                age,
                                similarity: Some(n.similarity),
                                judged,
                            });
                        }
                        (Some(check), Some(model))
                            if n.similarity >= model.floor()
                                && (check == Check::Verify
                                    || rand::random::<f32>() < sem.explore_rate) =>
                        {
                            pending = Some(Pending {
                                registry: runtime.registry.clone(),
                                model,
                                key: n.key,
                                similarity: n.similarity,
                                query,
                                cached: entry,
                                embedder: embedder.clone(),
                                check,
                            });
                        }
                        _ => {}
                    }
                }
                if writes || fallback_semantic {
                    semantic = Some(SemanticWrite {
                        scope,
                        vector: Arc::from(vector),
                        query: Arc::from(text.as_str()),
                    });
                }
            }
        }
    }
    if cfg.mode.reads() {
        route.metrics.cache_lookup("miss");
    }
    let fallback = &route.config.fallback;
    let keep = match (writes, fallback.cache) {
        (true, true) => ttl.max(Duration::from_secs(fallback.cache_max_age_s)),
        (true, false) => ttl,
        (false, _) => Duration::from_secs(fallback.cache_max_age_s),
    };
    let remember = stores.then(|| Remember {
        registry: runtime.registry.clone(),
        key: exact_key,
        keep,
        semantic,
        persist: writes,
    });
    Outcome::Miss(remember, pending, judged)
}

/// Asks the route's judge whether `cached` and `query` ask for the same answer: whether to
/// serve, whether the verdict is new (not remembered), and what the trace keeps of it.
/// Anything but a yes is a miss.
async fn ask_judge(
    runtime: &Runtime,
    route: &Route,
    sem: &trestle_core::config::SemanticConfig,
    name: &str,
    cached: &str,
    query: &str,
    similarity: f32,
) -> (bool, bool, GuardRecord) {
    let asked = match runtime
        .resolve(name)
        .ok()
        .and_then(|r| r.targets.first().cloned())
    {
        Some(target) => {
            let timeout = Duration::from_millis(sem.judge_timeout_ms);
            runtime
                .registry
                .caches
                .judge
                .ask(&target, cached, query, timeout)
                .await
        }
        None => judge::Asked::failed(format!("no route or target `{name}`"), None),
    };
    metrics::cache_judge(&route.name, asked.verdict.as_str(), asked.took);
    if let Some(e) = &asked.error {
        tracing::debug!(route = %route.name, judge = name, error = %e,
            "semantic-cache judge gave no verdict; a miss");
    }
    let mut detail = format!("similarity {similarity:.3}");
    if asked.took.is_none() && asked.error.is_none() {
        detail.push_str("; remembered verdict");
    }
    let fresh = asked.took.is_some();
    let (same, record) = record(name, "cache_judge", asked, detail);
    (same, fresh, record)
}

/// Asks the route's verifier (an in-process `[embedders.NAME]`) whether `cached` and `query`
/// ask the same thing: whether to serve, and what the trace keeps of it. Anything but a
/// score at or above `verifier_threshold` is a miss.
async fn ask_verifier(
    runtime: &Runtime,
    route: &Route,
    sem: &trestle_core::config::SemanticConfig,
    name: &str,
    cached: &str,
    query: &str,
    similarity: f32,
) -> (bool, GuardRecord) {
    let (asked, score) = match runtime.embedders.get(name) {
        Some(verifier) => verify::ask(verifier, cached, query, sem.verifier_threshold).await,
        None => (
            judge::Asked::failed(format!("no [embedders.{name}]"), None),
            None,
        ),
    };
    metrics::cache_verifier(&route.name, asked.verdict.as_str(), asked.took);
    if let Some(e) = &asked.error {
        tracing::debug!(route = %route.name, verifier = name, error = %e,
            "semantic-cache verifier gave no verdict; a miss");
    }
    let mut detail = format!("similarity {similarity:.3}");
    if let Some(score) = score {
        detail.push_str(&format!(
            "; score {score:.3} (serves from {:.3})",
            sem.verifier_threshold
        ));
    }
    record(name, "cache_verifier", asked, detail)
}

/// Whether a verdict serves, and its trace record (`kind`: `cache_judge`, `cache_verifier`).
fn record(name: &str, kind: &str, asked: judge::Asked, mut detail: String) -> (bool, GuardRecord) {
    let same = asked.verdict == Verdict::Same;
    if let Some(e) = asked.error {
        detail.push_str("; ");
        detail.push_str(&e);
    }
    let record = GuardRecord {
        guardrail: name.to_string(),
        kind: kind.into(),
        stage: "cache".into(),
        action: if same { "serve" } else { "miss" }.into(),
        outcome: asked.verdict.as_str().into(),
        entities: Default::default(),
        detail: Some(detail),
        latency_ms: asked.took.map_or(0.0, |t| t.as_secs_f64() * 1000.0),
    };
    (same, record)
}

/// Whether the verifier or the judge is asked about a candidate: one the threshold would not
/// serve (a near miss), from `floor` up; with `all`, one it would serve too; never one picked
/// for a fresh-answer check.
fn asks_second_opinion(similarity: f32, floor: f32, all: bool, check: Option<Check>) -> bool {
    similarity >= floor
        && match check {
            Some(Check::Explore) => true,
            None => all,
            Some(Check::Verify) => false,
        }
}

#[cfg(test)]
mod tests;
