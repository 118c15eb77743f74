//! The semantic cache's index: per scope (route, prompt version, models, exact-match
//! parameters, and user or tenant when scoped), an HNSW graph over unit-length query
//! embeddings (fast-hnsw, inner-product distance). A node points at an exact-cache entry;
//! entries evicted or expired there are misses here. A scope that reaches its bound is
//! rebuilt from its live entries. Across a restart ([`super::persist`]), a scope comes back
//! from the snapshot of its graph taken at shutdown ([`SemanticIndex::snapshots`],
//! [`SemanticIndex::adopt`]), or is rebuilt from the vectors kept in the store
//! ([`SemanticIndex::restore`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// A scope's graph in fast-hnsw's file format, with the exact-cache key of each node: what
/// the store keeps of a scope across a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub scope: u64,
    pub keys: Vec<u64>,
    pub graph: Vec<u8>,
}

/// A file of its own in `dir` for one graph (fast-hnsw reads and writes only files).
fn scratch_file(dir: &Path, scope: u64) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(
        ".trestle-graph-{}-{scope:016x}-{}.hnsw",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
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

    /// Rebuilds `scope` from `entries` (exact-cache key and vector, oldest first; the newest
    /// `semantic_max_entries` are kept), as loaded from the store at start. The graph is built
    /// without holding the scope, so lookups go on meanwhile and miss what is not in yet; it
    /// is then put in place with whatever was inserted in the meantime added on top. Vectors
    /// whose length is not the newest one's are left out.
    pub fn restore(&self, scope: u64, entries: &[(u64, Arc<[f32]>)]) {
        let Some(dims) = entries.last().map(|(_, v)| v.len()) else {
            return;
        };
        let skip = entries.len().saturating_sub(self.max_per_scope);
        let mut fresh = ScopeIndex::new(dims);
        for (key, v) in &entries[skip..] {
            if v.len() == dims {
                fresh.graph.insert(v.to_vec());
                fresh.keys.push(*key);
            }
        }
        self.install(scope, fresh);
    }

    /// Every non-empty scope's graph and keys, for the store to keep across a restart. Each
    /// graph goes through a file in `scratch`, removed at once; a scope is held while its
    /// graph is written (about 0.2 s for 100,000 vectors).
    pub fn snapshots(&self, scratch: &Path) -> Vec<Snapshot> {
        let scopes: Vec<(u64, Arc<Mutex<ScopeIndex>>)> = match self.scopes.read() {
            Ok(s) => s.iter().map(|(k, v)| (*k, v.clone())).collect(),
            Err(_) => return Vec::new(),
        };
        scopes
            .into_iter()
            .filter_map(|(scope, index)| {
                let index = index.lock().ok()?;
                if index.keys.is_empty() {
                    return None;
                }
                let path = scratch_file(scratch, scope);
                let graph = fast_hnsw::persist::save(&index.graph, &path)
                    .and_then(|()| std::fs::read(&path));
                let _ = std::fs::remove_file(&path);
                match graph {
                    Ok(graph) => Some(Snapshot {
                        scope,
                        keys: index.keys.clone(),
                        graph,
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, dir = %scratch.display(),
                            "semantic index: cannot save a scope's graph; it will be rebuilt at start");
                        None
                    }
                }
            })
            .collect()
    }

    /// Puts `snapshot`'s scope back, then adds the `entries` (key and vector, oldest first)
    /// it does not have: answers stored after it was taken. Returns false, changing nothing,
    /// when the snapshot does not load (the caller then [`restore`](Self::restore)s).
    pub fn adopt(
        &self,
        snapshot: &Snapshot,
        entries: &[(u64, Arc<[f32]>)],
        scratch: &Path,
    ) -> bool {
        let path = scratch_file(scratch, snapshot.scope);
        let graph = std::fs::write(&path, &snapshot.graph)
            .and_then(|()| fast_hnsw::persist::load(&path, DotProduct));
        let _ = std::fs::remove_file(&path);
        let graph = match graph {
            Ok(graph) => graph,
            Err(e) => {
                tracing::warn!(error = %e, dir = %scratch.display(),
                    "semantic index: a saved graph does not load; rebuilding the scope");
                return false;
            }
        };
        let Some(dims) = graph.dim() else {
            return false;
        };
        if graph.len() != snapshot.keys.len() {
            return false;
        }
        let mut fresh = ScopeIndex {
            graph,
            keys: snapshot.keys.clone(),
            dims,
        };
        let known: HashSet<u64> = snapshot.keys.iter().copied().collect();
        for (key, v) in entries {
            if v.len() == dims && !known.contains(key) {
                fresh.graph.insert(v.to_vec());
                fresh.keys.push(*key);
            }
        }
        self.install(snapshot.scope, fresh);
        true
    }

    /// Puts `fresh` in place of `scope`, with what was inserted there meanwhile added on top
    /// (unless that was in other dimensions: another embedder since start, which wins).
    fn install(&self, scope: u64, mut fresh: ScopeIndex) {
        let index = {
            let Ok(mut scopes) = self.scopes.write() else {
                return;
            };
            scopes
                .entry(scope)
                .or_insert_with(|| Arc::new(Mutex::new(ScopeIndex::new(fresh.dims))))
                .clone()
        };
        let Ok(mut index) = index.lock() else {
            return;
        };
        if !index.keys.is_empty() && index.dims != fresh.dims {
            return;
        }
        for (id, &key) in index.keys.iter().enumerate() {
            fresh.graph.insert(index.graph.get_vector(id).to_vec());
            fresh.keys.push(key);
        }
        *index = fresh;
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
    fn a_restored_scope_keeps_the_newest_and_what_was_inserted_meanwhile() {
        let index = SemanticIndex::new(16);
        // Inserted while the restore was building.
        index.insert(1, unit(500, 8), 500, |_| None);
        let loaded: Vec<(u64, Arc<[f32]>)> = (0..20u64).map(|k| (k, unit(k, 8))).collect();
        index.restore(1, &loaded);
        assert_eq!(index.len(), 17, "the newest 16, and the live one");
        assert_eq!(index.nearest(1, &unit(19, 8), |_| true).unwrap().key, 19);
        assert_eq!(index.nearest(1, &unit(500, 8), |_| true).unwrap().key, 500);
        assert_ne!(index.nearest(1, &unit(2, 8), |_| true).unwrap().key, 2);
        // A scope filled since start by another embedder keeps its own vectors.
        index.insert(2, unit(7, 4), 7, |_| None);
        index.restore(2, &loaded);
        assert_eq!(index.len(), 18);
        assert_eq!(index.nearest(2, &unit(7, 4), |_| true).unwrap().key, 7);
    }

    #[test]
    fn a_snapshot_comes_back_with_what_was_stored_after_it() {
        let scratch =
            std::env::temp_dir().join(format!("trestle-snapshot-test-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).unwrap();
        let index = SemanticIndex::new(1_000);
        for k in 0..100u64 {
            index.insert(3, unit(k, 16), k, |_| None);
        }
        let snapshots = index.snapshots(&scratch);
        assert_eq!(snapshots.len(), 1);
        assert_eq!(snapshots[0].keys, (0..100).collect::<Vec<u64>>());

        let after = SemanticIndex::new(1_000);
        // Stored after the snapshot: the last 10 of these are new to it.
        let rows: Vec<(u64, Arc<[f32]>)> = (50..110u64).map(|k| (k, unit(k, 16))).collect();
        assert!(after.adopt(&snapshots[0], &rows, &scratch));
        assert_eq!(after.len(), 110);
        for k in [0, 42, 99, 105] {
            assert_eq!(after.nearest(3, &unit(k, 16), |_| true).unwrap().key, k);
        }
        // A graph that does not load changes nothing.
        let broken = Snapshot {
            graph: b"not a graph".to_vec(),
            ..snapshots[0].clone()
        };
        assert!(!SemanticIndex::new(1_000).adopt(&broken, &rows, &scratch));
        let leftovers = std::fs::read_dir(&scratch).unwrap().count();
        assert_eq!(leftovers, 0, "scratch files are removed");
        std::fs::remove_dir(&scratch).unwrap();
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
