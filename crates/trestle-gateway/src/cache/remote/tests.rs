//! One suite for the exact and tool caches on both backends (an instance's own caches in
//! memory, and the same with Redis behind them), then what only Redis does: an entry one
//! instance stores is found by another, and a dead Redis leaves each instance its own cache
//! without an error. Real time: the Redis timeout must not fire on a paused clock.

use std::future::Future;
use std::time::Instant as StdInstant;

use trestle_core::config::{CacheConfig, StateConfig};

use super::*;
use crate::cache::Caches;
use crate::cache::exact::{Answer, Entry};
use crate::limiter::testing::{self, RedisServer};

const MINUTE: Duration = Duration::from_secs(60);

/// One instance's caches: `None` is memory, else one more link to `state`'s Redis.
async fn instance(state: Option<&StateConfig>) -> Caches {
    let link = match state {
        Some(s) => Some(testing::link(s).await),
        None => None,
    };
    Caches::with_link(&CacheConfig::default(), link)
}

fn raw(id: &str) -> Answer {
    Answer::Raw(Bytes::from(format!(
        r#"{{"id":"{id}","object":"chat.completion","created":1,"model":"m1","choices":[]}}"#
    )))
}

fn key() -> u64 {
    rand::random()
}

/// Retries `f` for up to 5 s until it gives `Some` (a spawned write has to land).
async fn eventually<T, Fut: Future<Output = Option<T>>>(mut f: impl FnMut() -> Fut) -> T {
    let deadline = StdInstant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(StdInstant::now() < deadline, "never happened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// The suite.

async fn exact_entries_are_served_within_their_max_age(c: &Caches) {
    let k = key();
    assert!(c.exact.lookup(k, MINUTE).await.is_none());
    c.exact
        .store(k, Entry::new(raw("a"), "up/m1", 0.002), MINUTE);
    let (hit, age) = c.exact.lookup(k, MINUTE).await.unwrap();
    assert_eq!(hit.served_by, "up/m1");
    assert_eq!(hit.answer.completion().unwrap().id, "a");
    assert!(age < MINUTE);
    assert!(c.exact.lookup(k + 1, MINUTE).await.is_none());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(c.exact.lookup(k, Duration::from_millis(10)).await.is_none());
}

async fn tool_entries_are_put_fetched_and_removed(c: &Caches) {
    let ns = format!("ns{}", key());
    let t = &c.tools;
    let json = || "application/json".to_string();
    t.put(&ns, "sku", Bytes::from_static(b"{}"), json(), Some(MINUTE));
    let (hit, _) = t.fetch(&ns, "sku").await.unwrap();
    assert_eq!(&hit.value[..], b"{}");
    assert!(t.fetch(&ns, "other").await.is_none());
    assert!(t.remove(&ns, "sku").await);
    assert!(t.fetch(&ns, "sku").await.is_none());
    assert!(!t.remove(&ns, "sku").await);
}

async fn suite(c: &Caches) {
    exact_entries_are_served_within_their_max_age(c).await;
    tool_entries_are_put_fetched_and_removed(c).await;
}

#[tokio::test]
async fn memory_backend() {
    suite(&instance(None).await).await;
}

#[tokio::test]
async fn redis_backend() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    suite(&instance(Some(&testing::state(&server.url(), 1))).await).await;
}

// Redis only.

#[tokio::test]
async fn an_entry_stored_by_one_instance_is_a_hit_on_another() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let state = testing::state(&server.url(), 2);
    let (a, b) = (instance(Some(&state)).await, instance(Some(&state)).await);

    // An upstream's bytes, as they were.
    let k = key();
    a.exact
        .store(k, Entry::new(raw("up-1"), "up/m1", 0.003), MINUTE);
    let (hit, age) = eventually(|| b.exact.lookup(k, MINUTE)).await;
    assert_eq!(hit.answer.completion().unwrap().id, "up-1");
    assert_eq!(hit.served_by, "up/m1");
    assert!((hit.cost_usd - 0.003).abs() < 1e-12);
    assert!(age < MINUTE);
    // Kept on B now: found without Redis.
    assert!(b.exact.get(k, MINUTE).is_some());

    // An answer assembled from a stream.
    let k = key();
    let streamed = crate::resilience::fallback::completion("chat", "streamed words".into());
    a.exact.store(
        k,
        Entry::new(Answer::Parsed(streamed.clone()), "up/m1", 0.0),
        MINUTE,
    );
    let (hit, _) = eventually(|| b.exact.lookup(k, MINUTE)).await;
    let back = hit.answer.completion().unwrap();
    assert_eq!(back.id, streamed.id);
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        serde_json::to_value(&streamed).unwrap()
    );

    // Too old for the route's TTL, but kept on B for the `cache` fallback level.
    let k = key();
    a.exact
        .store(k, Entry::new(raw("old"), "up/m1", 0.0), MINUTE);
    eventually(|| instance_lookup(&state, k)).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(b.exact.lookup(k, Duration::from_millis(20)).await.is_none());
    assert!(b.exact.get(k, MINUTE).is_some());

    // The tool cache: a put on A is a hit on B; a delete on B reaches Redis.
    a.tools.put(
        "price",
        "sku-1",
        Bytes::from_static(b"9.99"),
        "text/plain".into(),
        Some(MINUTE),
    );
    let (hit, _) = eventually(|| b.tools.fetch("price", "sku-1")).await;
    assert_eq!(&hit.value[..], b"9.99");
    assert_eq!(hit.content_type, "text/plain");
    assert!(b.tools.remove("price", "sku-1").await);
    let c = instance(Some(&state)).await;
    assert!(c.tools.fetch("price", "sku-1").await.is_none());
}

/// A lookup from a fresh instance (nothing local): whether Redis has the key yet.
async fn instance_lookup(state: &StateConfig, k: u64) -> Option<()> {
    let c = instance(Some(state)).await;
    c.exact.lookup(k, MINUTE).await.map(drop)
}

#[tokio::test]
async fn a_dead_redis_leaves_each_instance_its_own_cache() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let state = testing::state(&server.url(), 2);
    let a = instance(Some(&state)).await;
    server.stop();
    // Misses, not errors; stores land locally.
    for _ in 0..3 {
        assert!(a.exact.lookup(key(), MINUTE).await.is_none());
    }
    suite(&a).await;
}

#[test]
fn entries_round_trip_with_the_payload_as_it_is() {
    let answer = Bytes::from_static(b"{\"id\":\"x\",\n \"choices\":[]}\n");
    let e = ExactValue {
        answer: answer.clone(),
        served_by: "up/m1\n\"quoted\"".into(),
        cost_usd: 0.0025,
        stored_ms: 1_700_000_000_000,
    };
    let raw = Bytes::from(e.encode().unwrap());
    assert!(raw.ends_with(&answer), "the payload is not escaped");
    assert_eq!(ExactValue::decode(&raw).unwrap(), e);

    let t = ToolValue {
        value: Bytes::from_static(&[0, 10, 255, b'\n']),
        content_type: "application/octet-stream".into(),
        stored_ms: 5,
        ttl: MINUTE,
    };
    assert_eq!(
        ToolValue::decode(&Bytes::from(t.encode().unwrap())).unwrap(),
        t
    );
    assert!(ExactValue::decode(&Bytes::from_static(b"no header")).is_none());
    assert!(ExactValue::decode(&Bytes::from_static(b"{}\n{}")).is_none());
}
