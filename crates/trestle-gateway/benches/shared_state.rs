//! The added latency of the state shared on Redis, beside the same thing in memory, in one
//! run (bench/redis-cache.sh): an exact-cache lookup that misses locally and hits in Redis,
//! one that misses in both, and a target's admission (the shared minute and pause). Starts
//! its own `redis-server` on a free loopback port. Prints p50 and p99 of each.

// Bench code: a failed setup is the bench failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use trestle_core::config::{CacheConfig, ModelConfig, StateConfig, StateKind};
use trestle_gateway::cache::Caches;
use trestle_gateway::cache::exact::{Answer, Entry};
use trestle_gateway::limiter::link::Link;
use trestle_gateway::resilience::health::TargetHealth;
use trestle_gateway::resilience::shared::SharedTargets;

const LOOKUPS: usize = 10_000;
const WARMUP: usize = 500;
const MINUTE: Duration = Duration::from_secs(60);

/// A typical short answer, as an upstream sends it (about 600 bytes).
fn answer(i: usize) -> Answer {
    Answer::Raw(Bytes::from(format!(
        r#"{{"id":"chatcmpl-{i:08}","object":"chat.completion","created":1767225600,"model":"m1","choices":[{{"index":0,"message":{{"role":"assistant","content":"Trestle is a gateway in front of OpenAI-compatible providers: it routes each request to a target, retries and falls back when one fails, caches answers, checks them with guardrails, and records a trace of every request so that you can see what was asked, what answered, what it cost and how long it took."}},"finish_reason":"stop","logprobs":null}}],"usage":{{"prompt_tokens":24,"completion_tokens":61,"total_tokens":85}},"system_fingerprint":"fp_1"}}"#
    )))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

fn report(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    println!(
        "{name:>34}: p50 {:>7.1} us  p99 {:>7.1} us",
        pct(&v, 0.5).as_secs_f64() * 1e6,
        pct(&v, 0.99).as_secs_f64() * 1e6
    );
    pct(&v, 0.5)
}

/// Times `f(i)` for `WARMUP + LOOKUPS` values of `i`, keeping the last `LOOKUPS`.
async fn timed<F, Fut>(mut f: F) -> Vec<Duration>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut out = Vec::with_capacity(LOOKUPS);
    for i in 0..WARMUP + LOOKUPS {
        let t = Instant::now();
        f(i).await;
        if i >= WARMUP {
            out.push(t.elapsed());
        }
    }
    out
}

fn main() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("redis://127.0.0.1:{port}/0");
        let state = StateConfig {
            kind: StateKind::Redis,
            url: Some(url.clone()),
            timeout_ms: 1_000,
            instances: 1,
            prefix: "bench:".into(),
        };
        let link = || async {
            let l = Link::start(&url, &state).unwrap();
            while !l.healthy() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            l
        };
        let cfg = CacheConfig {
            max_entries: 100_000,
            ..CacheConfig::default()
        };
        let total = WARMUP + LOOKUPS;

        // Instance A stores every answer; B (another link, an empty moka) looks them up.
        let a = Caches::with_link(&cfg, Some(link().await));
        let b = Caches::with_link(&cfg, Some(link().await));
        let memory = Caches::new(&cfg);
        for i in 0..total {
            a.exact.store(i as u64, Entry::new(answer(i), "up/m1", 0.0001), MINUTE);
            memory
                .exact
                .store(i as u64, Entry::new(answer(i), "up/m1", 0.0001), MINUTE);
        }
        // The writes are spawned: wait for the last to land.
        while b.exact.lookup(total as u64 - 1, MINUTE).await.is_none() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        println!(
            "{LOOKUPS} each, one at a time, after {WARMUP} warm-up; loopback Redis; ~600-byte answers"
        );
        let local_hit = report(
            "exact hit, memory (moka)",
            timed(|i| {
                let m = &memory;
                async move {
                    assert!(m.exact.lookup(i as u64, MINUTE).await.is_some());
                }
            })
            .await,
        );
        let remote_hit = report(
            "exact: local miss, Redis hit",
            timed(|i| {
                let b = &b;
                async move {
                    assert!(b.exact.lookup(i as u64, MINUTE).await.is_some());
                }
            })
            .await,
        );
        let local_miss = report(
            "exact miss, memory",
            timed(|i| {
                let m = &memory;
                async move {
                    assert!(m.exact.lookup(1_000_000 + i as u64, MINUTE).await.is_none());
                }
            })
            .await,
        );
        let remote_miss = report(
            "exact miss, memory and Redis",
            timed(|i| {
                let b = &b;
                async move {
                    assert!(b.exact.lookup(1_000_000 + i as u64, MINUTE).await.is_none());
                }
            })
            .await,
        );

        // A target's admission: the shared minute (requests and tokens) and pause.
        let limits = ModelConfig {
            requests_per_minute: Some(u64::MAX / 2),
            tokens_per_minute: Some(u64::MAX / 2),
            ..ModelConfig::default()
        };
        let now = tokio::time::Instant::now();
        let local = Arc::new(TargetHealth::new("bench/m1", &limits, now));
        let shared = Arc::new(
            TargetHealth::new("bench/m1", &limits, now)
                .with_shared(Some(Arc::new(SharedTargets::new(link().await)))),
        );
        let admit_local = report(
            "target admission, memory",
            timed(|_| {
                let h = &local;
                async move {
                    let mut a = h.admit_shared(100, tokio::time::Instant::now()).await.unwrap();
                    a.report(false, Duration::ZERO, tokio::time::Instant::now());
                }
            })
            .await,
        );
        let admit_shared = report(
            "target admission, Redis",
            timed(|_| {
                let h = &shared;
                async move {
                    let mut a = h.admit_shared(100, tokio::time::Instant::now()).await.unwrap();
                    a.report(false, Duration::ZERO, tokio::time::Instant::now());
                }
            })
            .await,
        );

        let added = |r: Duration, m: Duration| r.saturating_sub(m).as_secs_f64() * 1e3;
        println!(
            "added p50: {:.3} ms on a hit from Redis, {:.3} ms on a miss, {:.3} ms per target admission",
            added(remote_hit, local_hit),
            added(remote_miss, local_miss),
            added(admit_shared, admit_local),
        );
    });
    server.kill().ok();
    server.wait().ok();
}
