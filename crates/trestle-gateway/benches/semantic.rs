//! The semantic cache's lookup at scale: 100,000 cached queries of 384 dimensions (the
//! MiniLM size) in one scope. Criterion times a lookup; the setup also prints the insert
//! rate and the p50/p99 of 10,000 single lookups, and the index's memory per entry.
//!
//! `cargo bench -p trestle-gateway --bench semantic`; results in docs/caching.md.

// Bench code: a failed setup is the bench failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use trestle_gateway::cache::semantic::{SemanticIndex, normalize};

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

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn lookup(c: &mut Criterion) {
    let index = SemanticIndex::new(2 * ENTRIES);
    let data = vectors(ENTRIES, 7);
    let before = rss_kib();
    let started = Instant::now();
    for (k, v) in data.iter().enumerate() {
        index.insert(1, v.clone(), k as u64, |_| None);
    }
    let took = started.elapsed();
    let grew = rss_kib().saturating_sub(before);
    eprintln!(
        "inserted {ENTRIES} × {DIMS}: {:.1} s ({:.0} inserts/s); index memory ≈ {:.0} bytes per entry (vector {} bytes)",
        took.as_secs_f64(),
        ENTRIES as f64 / took.as_secs_f64(),
        grew as f64 * 1024.0 / ENTRIES as f64,
        DIMS * 4
    );
    let queries = vectors(10_000, 99);
    let mut times: Vec<f64> = queries
        .iter()
        .map(|q| {
            let t = Instant::now();
            black_box(index.nearest(1, q, |_| true));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    times.sort_by(f64::total_cmp);
    eprintln!(
        "10,000 lookups: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        times[times.len() / 2],
        times[times.len() * 99 / 100],
        times[times.len() - 1]
    );
    let mut i = 0;
    c.bench_function("semantic lookup, 100k × 384", |b| {
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(index.nearest(1, &queries[i], |_| true))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = lookup
}
criterion_main!(benches);
