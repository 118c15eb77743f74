//! Learned semantic thresholds (docs/caching.md, "Learned thresholds"): each cached entry's
//! threshold moves with evidence of where reusing its answer was right and wrong, keeping the
//! expected share of wrong semantic answers under the route's `max_false_hit_rate`
//! ([`model`] has the estimator).
//!
//! The evidence comes from three signals:
//! - **feedback**: `POST /v1/feedback` on the trace of an answer the semantic cache served
//!   (negative: wrong; positive: right), and a regeneration of such an answer (wrong). A
//!   bounded map from trace id to what was served ([`Learned::served`]) leads a signal back to
//!   its entry; the first signal on a trace counts.
//! - **verification**: a share (`verify_rate`) of semantic hits is answered fresh instead,
//!   and the fresh answer compared with the cached one ([`Pending`]).
//! - **exploration**: a near miss (a neighbour within reach but below its learned threshold)
//!   is answered fresh anyway; a share (`explore_rate`) of those answers is compared with the
//!   neighbour's, which costs no upstream call.
//!
//! An entry proven wrong for a query (a negative signal of any kind) is never served for that
//! query again: the normalized query's hash is kept with the entry, and an entry proven wrong
//! for more than [`MAX_WRONG_QUERIES`] queries is not served semantically at all.
//!
//! All of it is in memory: a restart starts every route again from its configured threshold.

pub mod model;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use trestle_core::config::SemanticConfig;

pub use model::{Evidence, Model, Observation, Params, Source};

use super::embed::Embedder;
use super::exact::Entry;
use crate::feedback::newest;
use crate::resilience::Registry;

/// Queries an entry may be proven wrong for before it is retired from semantic serving.
pub const MAX_WRONG_QUERIES: usize = 32;
/// Entries whose evidence is kept (the least recently used go first).
const MAX_EVIDENCE: u64 = 20_000;
/// Entries whose proven-wrong queries are kept.
const MAX_PROVEN_WRONG: u64 = 100_000;
/// Served semantic answers remembered for feedback, and for how long.
const MAX_SERVED: u64 = 100_000;
const SERVED_FOR: Duration = Duration::from_secs(86_400);
/// Cosine similarity at or above which two answers (that also agree on numbers, negation,
/// contrasts and names) say the same thing.
pub const ANSWER_AGREEMENT: f32 = 0.9;

/// The queries an entry was proven wrong for.
#[derive(Default)]
struct ProvenWrong {
    queries: Vec<u64>,
    /// Proven wrong too often: never served semantically.
    retired: bool,
}

/// A semantic answer that was served, so feedback on its trace reaches its entry.
#[derive(Clone)]
pub struct Served {
    pub model: Arc<Model>,
    /// The exact-cache key of the entry served.
    pub key: u64,
    pub similarity: f32,
    /// [`query_hash`] of the query it was served for.
    pub query: u64,
}

/// Every route's model, every entry's evidence, and the semantic answers served lately.
pub struct Learned {
    models: RwLock<HashMap<String, Arc<Model>>>,
    evidence: moka::sync::Cache<u64, Arc<Mutex<Evidence>>>,
    wrong: moka::sync::Cache<u64, Arc<Mutex<ProvenWrong>>>,
    served: moka::sync::Cache<String, Served>,
}

impl Default for Learned {
    fn default() -> Self {
        Learned::new()
    }
}

impl Learned {
    pub fn new() -> Self {
        Learned {
            models: RwLock::new(HashMap::new()),
            // Least recently used out, every new entry in (`feedback::newest`).
            evidence: newest(MAX_EVIDENCE, None),
            wrong: newest(MAX_PROVEN_WRONG, None),
            served: newest(MAX_SERVED, Some(SERVED_FOR)),
        }
    }

    /// The route's model, built afresh when its settings change (a reload).
    pub fn model(&self, route: &str, sem: &SemanticConfig) -> Arc<Model> {
        let params = Params {
            threshold: sem.threshold,
            floor: sem.floor(),
            max_false_hit_rate: sem.max_false_hit_rate,
        };
        if let Ok(models) = self.models.read()
            && let Some(m) = models.get(route)
            && *m.params() == params
        {
            return m.clone();
        }
        let Ok(mut models) = self.models.write() else {
            return Arc::new(Model::new(params));
        };
        match models.get(route) {
            Some(m) if *m.params() == params => m.clone(),
            _ => {
                let m = Arc::new(Model::new(params));
                models.insert(route.to_string(), m.clone());
                m
            }
        }
    }

    /// Whether the entry was proven wrong for this query (or too often to be served at all).
    pub fn proven_wrong(&self, key: u64, query: u64) -> bool {
        self.wrong.get(&key).is_some_and(|w| {
            w.lock()
                .map(|w| w.retired || w.queries.contains(&query))
                .unwrap_or(true)
        })
    }

    /// The chance that serving the entry's answer at `similarity` is wrong.
    pub fn risk(&self, model: &Model, key: u64, similarity: f32) -> f64 {
        match self.evidence.get(&key) {
            Some(e) => match e.lock() {
                Ok(e) => model.risk(Some(&e), similarity),
                Err(_) => 1.0,
            },
            None => model.risk(None, similarity),
        }
    }

    /// The lowest similarity at which the entry would be served now (`None`: nowhere).
    pub fn threshold(&self, model: &Model, key: u64) -> Option<f32> {
        match self.evidence.get(&key) {
            Some(e) => e.lock().ok().and_then(|e| model.threshold(Some(&e))),
            None => model.threshold(None),
        }
    }

    /// Records that reusing the entry's answer for `query` was right or wrong; wrong means
    /// never again for that query.
    pub fn observe(&self, model: &Model, key: u64, query: u64, o: Observation) {
        let evidence = self.evidence.get_with(key, Default::default);
        if let Ok(mut e) = evidence.lock() {
            model.observe(&mut e, o);
        }
        if o.wrong {
            let wrong = self.wrong.get_with(key, Default::default);
            if let Ok(mut w) = wrong.lock()
                && !w.queries.contains(&query)
            {
                if w.queries.len() >= MAX_WRONG_QUERIES {
                    w.retired = true;
                } else {
                    w.queries.push(query);
                }
            }
        }
    }

    /// Remembers a semantic answer served on `trace_id`, for the feedback that may follow.
    pub fn served(&self, trace_id: &str, served: Served) {
        self.served.insert(trace_id.to_string(), served);
    }

    /// Feedback on a trace (negative: the answer was wrong, or regenerated). When the trace
    /// was served by the semantic cache, its entry learns from it; only the first signal on a
    /// trace counts. Returns whether it did.
    pub fn signal(&self, trace_id: &str, negative: bool) -> bool {
        let Some(s) = self.served.remove(trace_id) else {
            return false;
        };
        let o = Observation {
            similarity: s.similarity,
            wrong: negative,
            source: Source::Feedback,
        };
        self.observe(&s.model, s.key, s.query, o);
        true
    }
}

/// The hash an entry remembers a query by: its words, lowercased, without edge punctuation
/// (so a regeneration of the same question matches).
pub fn query_hash(text: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    for word in text.split_whitespace() {
        let w = word.trim_matches(|c: char| !c.is_alphanumeric());
        if !w.is_empty() {
            w.to_lowercase().hash(&mut h);
        }
    }
    h.finish()
}

/// Why a fresh answer is compared with a cached one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A hit answered fresh instead (`verify_rate`).
    Verify,
    /// A near miss (`explore_rate`).
    Explore,
}

/// A fresh answer to compare with a neighbour's cached one, once it is made.
pub struct Pending {
    pub registry: Arc<Registry>,
    pub model: Arc<Model>,
    pub key: u64,
    pub similarity: f32,
    pub query: u64,
    pub cached: Arc<Entry>,
    pub embedder: Embedder,
    pub check: Check,
}

impl Pending {
    /// Compares `fresh` with the cached answer off the request path and records the outcome
    /// on the entry. An answer without text (tool calls) teaches nothing.
    pub fn compare(self, fresh: Option<String>) {
        let Some(fresh) = fresh.filter(|f| !f.trim().is_empty()) else {
            return;
        };
        let Some(cached) = self
            .cached
            .answer
            .completion()
            .and_then(|c| c.choices.into_iter().next())
            .and_then(|c| c.message.content)
        else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let Some(same) = agree(&self.embedder, &cached, &fresh).await else {
                return;
            };
            let o = Observation {
                similarity: self.similarity,
                wrong: !same,
                source: Source::Verification,
            };
            self.registry
                .caches
                .learned
                .observe(&self.model, self.key, self.query, o);
            tracing::debug!(key = self.key, similarity = self.similarity, same, check = ?self.check,
                "semantic neighbour verified");
        });
    }
}

/// Whether two answers say the same thing: the same text, or agreeing on numbers, negation,
/// contrasts and names ([`super::guard::lexically_compatible`]) and close in meaning (embeddings at
/// [`ANSWER_AGREEMENT`] or more). Errs towards "not the same": that only costs hits.
/// `None` when the embedder fails.
pub async fn agree(embedder: &Embedder, cached: &str, fresh: &str) -> Option<bool> {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    if norm(cached) == norm(fresh) {
        return Some(true);
    }
    if !super::guard::lexically_compatible(cached, fresh) {
        return Some(false);
    }
    let v = embedder
        .embed_many(vec![cached.to_string(), fresh.to_string()])
        .await
        .ok()?;
    let (a, b) = (v.first()?, v.get(1)?);
    let cosine: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    Some(cosine >= ANSWER_AGREEMENT)
}
