//! Caching (DESIGN.md §4): the exact response cache, the semantic cache over it, and the
//! tool-response cache. All in memory, bounded, and kept across config reloads (they live in
//! the [`Registry`](crate::resilience::Registry)); keys cover the route, its prompt version
//! and models, so a config change never serves an answer made under another.

pub mod embed;
pub mod eval;
pub mod exact;
pub mod guard;
pub mod key;
pub mod semantic;
pub mod tool;

use trestle_core::config::CacheConfig;

pub struct Caches {
    pub exact: exact::ExactCache,
    pub semantic: semantic::SemanticIndex,
    pub tools: tool::ToolCache,
}

impl Caches {
    pub fn new(cfg: &CacheConfig) -> Self {
        Caches {
            exact: exact::ExactCache::new(cfg.max_entries),
            semantic: semantic::SemanticIndex::new(cfg.semantic_max_entries),
            tools: tool::ToolCache::new(cfg),
        }
    }
}
