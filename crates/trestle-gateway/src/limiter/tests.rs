//! One suite for every backend: each check takes `&dyn Limiter`, and runs on memory always
//! and on a real `redis-server` (started here on a free loopback port). Without the binary
//! the Redis tests fail, unless `TRESTLE_SKIP_REDIS=1`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trestle_core::config::StateConfig;

use super::memory::Memory;
use super::redis::RedisLimiter;
use super::testing::RedisServer;
use super::{Limiter, Refusal};
use crate::keys::{Budget, KeyRecord, Period, Usage};

fn key(rpm: Option<u64>, tpm: Option<u64>, budget_usd: Option<f64>) -> KeyRecord {
    KeyRecord {
        id: format!("k{}", rand::random::<u32>()),
        hash: String::new(),
        name: "k".into(),
        tenant: "t".into(),
        routes: None,
        rpm,
        tpm,
        budget: budget_usd.map(|usd| Budget {
            period: Period::Day,
            usd,
        }),
        admin: false,
        created_at_ms: 0,
        expires_at_ms: None,
        revoked_at_ms: None,
        rotated_from: None,
    }
}

fn usage() -> Usage {
    Usage::new(0.0, 0)
}

// The suite.

async fn requests_per_minute_hold(l: &dyn Limiter) {
    let k = key(Some(3), None, None);
    let u = usage();
    for _ in 0..3 {
        assert_eq!(l.admit(&k, &u).await, Ok(()));
    }
    assert_eq!(l.admit(&k, &u).await, Err(Refusal::Requests { limit: 3 }));
    // Another key is not touched.
    let other = key(Some(3), None, None);
    assert_eq!(l.admit(&other, &usage()).await, Ok(()));
}

async fn tokens_per_minute_hold(l: &dyn Limiter) {
    let k = key(None, Some(100), None);
    let u = usage();
    assert_eq!(l.admit(&k, &u).await, Ok(()));
    l.settle(&k, &u, 0.0, 0.0, 60).await;
    assert_eq!(l.admit(&k, &u).await, Ok(()));
    l.settle(&k, &u, 0.0, 0.0, 60).await;
    assert_eq!(l.admit(&k, &u).await, Err(Refusal::Tokens { limit: 100 }));
}

async fn budgets_hold(l: &dyn Limiter) {
    let k = key(None, None, Some(0.01));
    let u = usage();
    assert_eq!(l.admit(&k, &u).await, Ok(()));
    l.settle(&k, &u, 0.004, 0.0, 10).await;
    assert_eq!(l.admit(&k, &u).await, Ok(()));
    l.settle(&k, &u, 0.007, 0.0, 10).await;
    match l.admit(&k, &u).await {
        Err(Refusal::Budget {
            spent_usd,
            limit_usd,
            ..
        }) => {
            assert!((spent_usd - 0.011).abs() < 1e-9, "{spent_usd}");
            assert!((limit_usd - 0.01).abs() < 1e-9);
        }
        other => panic!("expected a budget refusal, got {other:?}"),
    }
}

/// An estimate is held on the budget before the call, refused when it would pass the
/// budget, and replaced by the real cost when the request ends.
async fn reservations_hold(l: &dyn Limiter) {
    let k = key(None, None, Some(1.0));
    let u = usage();
    assert_eq!(l.reserve(&k, &u, 0.6).await, Ok(()));
    // 0.6 held: another 0.6 would pass the budget, 0.3 fits.
    match l.reserve(&k, &u, 0.6).await {
        Err(Refusal::Budget {
            spent_usd,
            limit_usd,
            estimate_usd,
        }) => {
            assert!((spent_usd - 0.6).abs() < 1e-9, "{spent_usd}");
            assert!((limit_usd - 1.0).abs() < 1e-9);
            assert!((estimate_usd - 0.6).abs() < 1e-9);
        }
        other => panic!("expected a budget refusal, got {other:?}"),
    }
    assert_eq!(l.reserve(&k, &u, 0.3).await, Ok(()));
    // The first request cost 0.1 of its 0.6, the second nothing (a cache hit): 0.1 spent.
    l.settle(&k, &u, 0.1, 0.6, 5).await;
    l.settle(&k, &u, 0.0, 0.3, 0).await;
    assert_eq!(l.reserve(&k, &u, 0.9).await, Ok(()));
    l.settle(&k, &u, 0.95, 0.9, 5).await;
    // 1.05 spent: nothing more, not even a request estimated at zero.
    assert!(matches!(
        l.reserve(&k, &u, 0.0).await,
        Err(Refusal::Budget { .. })
    ));
    assert!(matches!(l.admit(&k, &u).await, Err(Refusal::Budget { .. })));
}

async fn suite(l: &dyn Limiter) {
    requests_per_minute_hold(l).await;
    tokens_per_minute_hold(l).await;
    budgets_hold(l).await;
    reservations_hold(l).await;
}

#[tokio::test]
async fn memory_backend() {
    let m = Memory::new(1);
    suite(&m).await;
    assert!(m.status().healthy);
}

#[tokio::test]
async fn memory_shares_divide_the_limits() {
    let m = Memory::new(2);
    let k = key(Some(4), None, Some(1.0));
    let u = usage();
    assert_eq!(m.admit(&k, &u).await, Ok(()));
    assert_eq!(m.admit(&k, &u).await, Ok(()));
    assert_eq!(m.admit(&k, &u).await, Err(Refusal::Requests { limit: 2 }));
}

// Redis.

fn config(url: &str, instances: u32) -> StateConfig {
    super::testing::state(url, instances)
}

/// A Redis limiter, once it has connected.
async fn connected(url: &str, config: &StateConfig) -> Arc<dyn Limiter> {
    let l = RedisLimiter::start(url, config).unwrap();
    wait_health(l.as_ref(), true).await;
    l
}

async fn wait_health(l: &dyn Limiter, healthy: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while l.status().healthy != healthy {
        assert!(
            Instant::now() < deadline,
            "the limiter's health stayed {}",
            !healthy
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn redis_backend() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let l = connected(&server.url(), &config(&server.url(), 1)).await;
    suite(l.as_ref()).await;
    assert_eq!(l.status().kind, "redis");
}

#[tokio::test]
async fn redis_limits_hold_across_instances() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let cfg = config(&server.url(), 2);
    let (a, b) = (
        connected(&server.url(), &cfg).await,
        connected(&server.url(), &cfg).await,
    );
    // Requests a minute: four across both, whichever serves them.
    let k = key(Some(4), None, None);
    let (ua, ub) = (usage(), usage());
    for _ in 0..2 {
        assert_eq!(a.admit(&k, &ua).await, Ok(()));
        assert_eq!(b.admit(&k, &ub).await, Ok(()));
    }
    assert_eq!(a.admit(&k, &ua).await, Err(Refusal::Requests { limit: 4 }));
    assert_eq!(b.admit(&k, &ub).await, Err(Refusal::Requests { limit: 4 }));
    // A budget spent on one instance is spent on the other.
    let k = key(None, None, Some(0.05));
    assert_eq!(b.admit(&k, &ub).await, Ok(()));
    a.settle(&k, &ua, 0.06, 0.0, 5).await;
    assert!(matches!(
        b.admit(&k, &ub).await,
        Err(Refusal::Budget { .. })
    ));
    // A budget's spend starts from what an instance knew (the store's traces) when Redis
    // has no count for the period yet.
    let k = key(None, None, Some(1.0));
    let known = Usage::new(2.0, Period::Day.bounds(crate::store::now_ms()).0);
    assert!(matches!(
        a.admit(&k, &known).await,
        Err(Refusal::Budget { .. })
    ));
}

#[tokio::test]
async fn redis_down_falls_back_to_a_share_and_recovers() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let cfg = config(&server.url(), 2);
    let l = connected(&server.url(), &cfg).await;
    let k = key(Some(4), None, None);
    let u = usage();
    assert_eq!(l.admit(&k, &u).await, Ok(()));
    server.stop();
    // Decisions keep coming, each within the timeout, on this instance's share (4 / 2),
    // which the request served through Redis already counts toward.
    let started = Instant::now();
    assert_eq!(l.admit(&k, &u).await, Ok(()));
    assert_eq!(l.admit(&k, &u).await, Err(Refusal::Requests { limit: 2 }));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let status = l.status();
    assert!(!status.healthy);
    let other = key(Some(4), None, None);
    let uo = usage();
    for _ in 0..20 {
        let t = Instant::now();
        let _ = l.admit(&other, &uo).await;
        assert!(t.elapsed() < Duration::from_millis(200));
    }
    assert_eq!(
        l.admit(&other, &uo).await,
        Err(Refusal::Requests { limit: 2 })
    );
    // Redis back on the same port: shared again, from an empty count.
    let _again = RedisServer::on(server.port).unwrap();
    wait_health(l.as_ref(), true).await;
    assert!(l.status().since_ms >= status.since_ms);
    let fresh = key(Some(4), None, None);
    let uf = usage();
    for _ in 0..4 {
        assert_eq!(l.admit(&fresh, &uf).await, Ok(()));
    }
    assert_eq!(
        l.admit(&fresh, &uf).await,
        Err(Refusal::Requests { limit: 4 })
    );
}

#[tokio::test]
async fn an_unreachable_redis_at_start_is_not_fatal() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let l = RedisLimiter::start(&url, &config(&url, 1)).unwrap();
    let k = key(Some(1), None, None);
    let u = usage();
    assert_eq!(l.admit(&k, &u).await, Ok(()));
    assert_eq!(l.admit(&k, &u).await, Err(Refusal::Requests { limit: 1 }));
    assert!(!l.status().healthy);
}
