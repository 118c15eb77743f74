//! The added latency of a per-key decision on Redis against the same decision in memory,
//! side by side in one run (bench/redis-limiter.sh). Starts its own `redis-server` on a free
//! loopback port. Prints p50 and p99 of each, and the added p50.

// Bench code: a failed setup is the bench failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trestle_core::config::{StateConfig, StateKind};
use trestle_gateway::keys::{Budget, KeyRecord, Period, Usage};
use trestle_gateway::limiter::Limiter;
use trestle_gateway::limiter::memory::Memory;
use trestle_gateway::limiter::redis::RedisLimiter;

const DECISIONS: usize = 20_000;

fn key(i: usize) -> KeyRecord {
    KeyRecord {
        id: format!("bench{i}"),
        hash: String::new(),
        name: "bench".into(),
        tenant: "t".into(),
        routes: None,
        // Limits high enough that every decision is a full check and count.
        rpm: Some(u64::MAX / 2),
        tpm: Some(u64::MAX / 2),
        budget: Some(Budget {
            period: Period::Day,
            usd: 1e9,
        }),
        admin: false,
        created_at_ms: 0,
        expires_at_ms: None,
        revoked_at_ms: None,
        rotated_from: None,
    }
}

async fn measure(l: &dyn Limiter) -> Vec<Duration> {
    let keys: Vec<KeyRecord> = (0..16).map(key).collect();
    let usage = Usage::new(0.0, 0);
    let mut out = Vec::with_capacity(DECISIONS);
    for i in 0..DECISIONS + 1_000 {
        let t = Instant::now();
        l.admit(&keys[i % keys.len()], &usage).await.unwrap();
        if i >= 1_000 {
            out.push(t.elapsed());
        }
    }
    out.sort();
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
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
        let config = StateConfig {
            kind: StateKind::Redis,
            url: Some(url.clone()),
            timeout_ms: 1_000,
            instances: 1,
            prefix: "bench:".into(),
        };
        let redis: Arc<dyn Limiter> = RedisLimiter::start(&url, &config).unwrap();
        while !redis.status().healthy {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let memory = Memory::new(1);
        let m = measure(&memory).await;
        let r = measure(redis.as_ref()).await;
        println!("{DECISIONS} decisions each, one at a time, 16 keys, loopback Redis");
        for (name, v) in [("memory", &m), ("redis", &r)] {
            println!(
                "{name:>7}: p50 {:>8.1} us  p99 {:>8.1} us",
                pct(v, 0.5).as_secs_f64() * 1e6,
                pct(v, 0.99).as_secs_f64() * 1e6
            );
        }
        println!(
            "added p50: {:.3} ms (target < 0.3 ms)",
            (pct(&r, 0.5).saturating_sub(pct(&m, 0.5))).as_secs_f64() * 1e3
        );
    });
    server.kill().ok();
    server.wait().ok();
}
