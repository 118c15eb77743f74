//! Caching (DESIGN.md §4): the exact response cache, the semantic cache over it, and the
//! tool-response cache. All in memory, bounded, and kept across config reloads (they live in
//! the [`Registry`](crate::resilience::Registry)); keys cover the route, its prompt version
//! and models, so a config change never serves an answer made under another. With `[cache]
//! persist` (the default while the store is on) all three are kept in the store too and
//! loaded at start ([`persist`]). With `[state] kind = "redis"` the exact and tool caches are
//! shared by every instance too ([`remote`]); the semantic index stays each instance's own.

pub mod embed;
pub mod eval;
pub mod exact;
pub mod guard;
pub mod judge;
pub mod key;
pub mod learned;
pub mod persist;
pub mod remote;
pub mod semantic;
pub mod tool;
pub mod verify;

use std::sync::{Arc, OnceLock};

use trestle_core::config::CacheConfig;

use crate::limiter::link::Link;

pub struct Caches {
    pub exact: exact::ExactCache,
    pub semantic: semantic::SemanticIndex,
    pub tools: tool::ToolCache,
    /// Learned semantic thresholds: every entry's evidence, and the semantic answers served.
    pub learned: learned::Learned,
    /// The semantic judge's verdicts, per (judge, cached question, query).
    pub judge: judge::Verdicts,
    /// The store's writer, with `[cache] persist`.
    persist: OnceLock<Arc<persist::Persist>>,
}

impl Caches {
    pub fn new(cfg: &CacheConfig) -> Self {
        Caches::with_link(cfg, None)
    }

    /// Caches whose exact and tool entries are shared through `link` when there is one.
    pub fn with_link(cfg: &CacheConfig, link: Option<Arc<Link>>) -> Self {
        let remote = link.map(|l| Arc::new(remote::Remote::new(l)));
        Caches {
            exact: exact::ExactCache::with_remote(cfg.max_entries, remote.clone()),
            semantic: semantic::SemanticIndex::new(cfg.semantic_max_entries),
            tools: tool::ToolCache::with_remote(cfg, remote),
            learned: learned::Learned::new(),
            judge: judge::Verdicts::new(),
            persist: OnceLock::new(),
        }
    }

    /// Keeps every exact-cache entry stored and every tool-cache write and delete from now on
    /// in the store, through `persist` ([`persist::start`]).
    pub(crate) fn persist_to(&self, persist: Arc<persist::Persist>) {
        self.exact.persist_to(persist.clone());
        self.tools.persist_to(persist.clone());
        let _ = self.persist.set(persist);
    }

    /// The store's writer, when the caches are kept there ([`persist::close`] stops it).
    pub fn persisted(&self) -> Option<&Arc<persist::Persist>> {
        self.persist.get()
    }
}
