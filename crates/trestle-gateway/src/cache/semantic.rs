//! The semantic cache's index: per scope (route, prompt version, models, exact-match
//! parameters, and user or tenant when scoped), an HNSW graph over unit-length query
//! embeddings (fast-hnsw, inner-product distance). A node points at an exact-cache entry;
//! entries evicted or expired there are misses here. A scope that reaches its bound is
//! rebuilt from its live entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use fast_hnsw::distance::DotProduct;
use fast_hnsw::{Builder, Hnsw};

/// How many neighbours a lookup considers: the nearest live one wins.
const CANDIDATES: usize = 4;
/// Search breadth: recall against speed.
const EF_SEARCH: usize = 48;

struct ScopeIndex {
    graph: Hnsw<DotProduct>,
    /// Node id → exact-cache key.
    keys: Vec<u64>,
    dims: usize,
}

impl ScopeIndex {
    fn new(dims: usize) -> Self {
        ScopeIndex {
            graph: Builder::new()
                .m(12)
                .ef_construction(96)
                .seed(7)
                .build(DotProduct),
            keys: Vec::new(),
            dims,
        }
    }
}

/// A hit: the exact-cache key and the cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub key: u64,
    pub similarity: f32,
}

pub struct SemanticIndex {
    scopes: RwLock<HashMap<u64, Arc<Mutex<ScopeIndex>>>>,
    max_per_scope: usize,
}

impl SemanticIndex {
    pub fn new(max_per_scope: usize) -> Self {
        SemanticIndex {
            scopes: RwLock::new(HashMap::new()),
            max_per_scope: max_per_scope.max(16),
        }
    }

    fn scope(&self, scope: u64) -> Option<Arc<Mutex<ScopeIndex>>> {
        self.scopes.read().ok()?.get(&scope).cloned()
    }

    /// The nearest stored queries in `scope`, most similar first, that `alive` accepts.
    pub fn nearest(
        &self,
        scope: u64,
        query: &[f32],
        alive: impl Fn(u64) -> bool,
    ) -> Option<Neighbour> {
        let index = self.scope(scope)?;
        let index = index.lock().ok()?;
        if index.dims != query.len() || index.keys.is_empty() {
            return None;
        }
        index
            .graph
            .search(query, CANDIDATES, EF_SEARCH)
            .into_iter()
            .filter_map(|r| {
                let key = *index.keys.get(r.id)?;
                Some(Neighbour {
                    key,
                    similarity: 1.0 - r.distance,
                })
            })
            .find(|n| alive(n.key))
    }

    /// Adds a query embedding pointing at `key`. When the scope is full, it is rebuilt from
    /// the entries `live` still returns (key and embedding) before the new one goes in.
    pub fn insert(
        &self,
        scope: u64,
        vector: Arc<[f32]>,
        key: u64,
        live: impl Fn(u64) -> Option<Arc<[f32]>>,
    ) {
        let index = match self.scope(scope) {
            Some(index) => index,
            None => {
                let Ok(mut scopes) = self.scopes.write() else {
                    return;
                };
                scopes
                    .entry(scope)
                    .or_insert_with(|| Arc::new(Mutex::new(ScopeIndex::new(vector.len()))))
                    .clone()
            }
        };
        let Ok(mut index) = index.lock() else {
            return;
        };
        if index.dims != vector.len() {
            // The embedder changed (a reload): start the scope afresh.
            *index = ScopeIndex::new(vector.len());
        }
        if index.keys.len() >= self.max_per_scope {
            let mut fresh = ScopeIndex::new(index.dims);
            let mut seen = std::collections::HashSet::new();
            for &k in index.keys.iter().rev() {
                if seen.insert(k)
                    && let Some(v) = live(k)
                    && v.len() == fresh.dims
                    && fresh.keys.len() < self.max_per_scope / 2
                {
                    fresh.graph.insert(v.to_vec());
                    fresh.keys.push(k);
                }
            }
            *index = fresh;
        }
        index.graph.insert(vector.to_vec());
        index.keys.push(key);
    }

    /// Vectors held, all scopes together.
    pub fn len(&self) -> usize {
        self.scopes
            .read()
            .map(|s| {
                s.values()
                    .filter_map(|i| i.lock().ok().map(|i| i.keys.len()))
                    .sum()
            })
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Scales a vector to unit length (inner product is then cosine similarity).
pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Arc<[f32]> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        normalize(v).into()
    }

    #[test]
    fn finds_the_nearest_live_entry_within_its_scope_only() {
        let index = SemanticIndex::new(1_000);
        for k in 0..200u64 {
            index.insert(1, unit(k, 32), k, |_| None);
        }
        let q = unit(42, 32);
        let hit = index.nearest(1, &q, |_| true).unwrap();
        assert_eq!(hit.key, 42);
        assert!((hit.similarity - 1.0).abs() < 1e-4);
        // Another scope sees nothing; a dead entry is passed over.
        assert!(index.nearest(2, &q, |_| true).is_none());
        let next = index.nearest(1, &q, |k| k != 42).unwrap();
        assert_ne!(next.key, 42);
        assert!(next.similarity < 0.9);
        // Wrong dimensions never panic.
        assert!(index.nearest(1, &unit(1, 16), |_| true).is_none());
        index.insert(1, unit(1, 16), 999, |_| None);
        assert_eq!(index.nearest(1, &unit(1, 16), |_| true).unwrap().key, 999);
    }

    #[test]
    fn a_full_scope_is_rebuilt_from_live_entries() {
        let index = SemanticIndex::new(16);
        for k in 0..16u64 {
            index.insert(1, unit(k, 8), k, |_| None);
        }
        // Only even keys are still alive in the exact cache.
        index.insert(1, unit(100, 8), 100, |k| (k % 2 == 0).then(|| unit(k, 8)));
        assert!(index.len() <= 9, "{}", index.len());
        assert_eq!(index.nearest(1, &unit(100, 8), |_| true).unwrap().key, 100);
        assert_eq!(index.nearest(1, &unit(14, 8), |_| true).unwrap().key, 14);
    }
}
