//! A cold start of the caches kept in the store (`[cache] persist`): 100,000 answers, each
//! with a 384-dimension query vector (the MiniLM size; 200 clustered topics with noise) in
//! `SCOPES` semantic scopes (default 1, the slowest to index), written to a fresh SQLite
//! file, then loaded by a new registry as `trestle serve` does at start: first as after a
//! crash (no saved graph: the index is rebuilt from the vectors), then as after a clean stop
//! (the graph saved at shutdown is loaded). Prints how long the writes took, how long until
//! the exact cache was full (the gateway listens from then on), and how long until the
//! semantic index was back.
//!
//! `cargo bench -p trestle-gateway --bench cache_load`; results in docs/caching.md.

// Bench code: a failed setup is the bench failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use trestle_core::config::CacheConfig;
use trestle_gateway::cache::persist::store::{AnswerRow, Change, SemanticPart, Store};
use trestle_gateway::cache::remote::ExactValue;
use trestle_gateway::cache::semantic::normalize;
use trestle_gateway::db::Db;
use trestle_gateway::resilience::Registry;

const ENTRIES: usize = 100_000;
const DIMS: usize = 384;

/// Unit vectors with some structure (200 topics, noise around each), like query embeddings.
fn vectors(n: usize, seed: u64) -> Vec<Arc<[f32]>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 20_000) as f32 / 10_000.0 - 1.0
    };
    let topics: Vec<Vec<f32>> = (0..200)
        .map(|_| (0..DIMS).map(|_| next()).collect())
        .collect();
    (0..n)
        .map(|i| {
            let t = &topics[i % topics.len()];
            let v: Vec<f32> = t.iter().map(|c| c + 0.6 * next()).collect();
            Arc::from(normalize(v))
        })
        .collect()
}

/// An answer as an upstream sends it: about 700 bytes of JSON.
fn answer(i: usize) -> Bytes {
    let text = format!(
        "Answer {i}: you can return an item within 30 days of delivery for a full refund. \
         Start the return from your orders page, print the label, and drop the parcel at any \
         post office; the refund reaches your card within five working days of our receiving \
         it. Items bought on sale can be exchanged but not refunded."
    );
    Bytes::from(
        serde_json::json!({
            "id": format!("chatcmpl-{i}"), "object": "chat.completion", "created": 1_764_000_000,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 42, "completion_tokens": 71, "total_tokens": 113}
        })
        .to_string(),
    )
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Starts a registry on `db` as `trestle serve` does; prints when the exact cache was full
/// and when the semantic index was back. Returns the registry and how many scopes came back
/// from a saved graph.
fn cold_start(db: &Db, cfg: &CacheConfig, what: &str) -> (Arc<Registry>, usize) {
    let before = rss_mib();
    let registry = Arc::new(Registry::new(cfg));
    let began = Instant::now();
    let mut started = trestle_gateway::cache::persist::start(&registry, db.clone(), cfg).unwrap();
    let ready = began.elapsed();
    assert_eq!(registry.caches.exact.entry_count(), ENTRIES as u64);
    let back = started.indexing.take().unwrap().join().unwrap();
    let indexed = began.elapsed();
    assert_eq!(registry.caches.semantic.len(), ENTRIES);
    eprintln!(
        "cold start {what}: {} answers, exact cache full in {:.2} s; semantic index ({} vectors) \
         back {:.2} s after start; RSS +{:.0} MiB",
        started.answers,
        ready.as_secs_f64(),
        started.vectors,
        indexed.as_secs_f64(),
        rss_mib() - before
    );
    (registry, back.from_saved_graphs)
}

fn main() {
    let scopes: u64 = std::env::var("SCOPES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let dir = std::env::temp_dir().join(format!("trestle-cache-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = Db::Sqlite(dir.join("cache.db"));

    let data = vectors(ENTRIES, 7);
    let now = trestle_gateway::store::now_ms();
    let mut store = Store::open(&db).unwrap();
    let began = Instant::now();
    for (batch, chunk) in data.chunks(512).enumerate() {
        let changes: Vec<Change> = chunk
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let i = batch * 512 + j;
                let stored_ms = now - 3_600_000 + i as i64;
                Change::Answer(AnswerRow {
                    key: (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    expires_ms: stored_ms + 86_400_000,
                    value: ExactValue {
                        answer: answer(i),
                        served_by: "openai/gpt-4o-mini".into(),
                        cost_usd: 0.000_05,
                        stored_ms,
                    },
                    semantic: Some(SemanticPart {
                        scope: i as u64 % scopes,
                        vector: v.clone(),
                        query: Arc::from(format!("How do I return item {i} I bought last week?")),
                    }),
                })
            })
            .collect();
        store.write(&changes).unwrap();
    }
    drop(store);
    let wrote = began.elapsed();
    let size = std::fs::metadata(dir.join("cache.db")).map_or(0, |m| m.len());
    eprintln!(
        "wrote {ENTRIES} answers with {DIMS}-dim vectors in {scopes} scope(s): {:.1} s \
         ({:.0} rows/s, batches of 512); file {:.0} MB",
        wrote.as_secs_f64(),
        ENTRIES as f64 / wrote.as_secs_f64(),
        size as f64 / 1e6
    );
    drop(data);

    let cfg = CacheConfig::default();
    // After a crash: no saved graph, the index is rebuilt from the vectors.
    let (registry, _) = cold_start(&db, &cfg, "after a crash (no saved graph)");
    let t = Instant::now();
    registry
        .caches
        .persisted()
        .unwrap()
        .close_blocking(&registry.caches.semantic);
    eprintln!(
        "clean stop: graph saved to the store in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    drop(registry);
    // After a clean stop: the saved graph is loaded instead.
    let (registry, graphs) = cold_start(&db, &cfg, "after a clean stop (saved graph)");
    assert_eq!(graphs as u64, scopes, "each scope from its saved graph");
    registry
        .caches
        .persisted()
        .unwrap()
        .close_blocking(&registry.caches.semantic);
    let _ = std::fs::remove_dir_all(&dir);
}
