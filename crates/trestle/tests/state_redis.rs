//! Shared state end to end: two `trestle serve` processes on one store and one Redis
//! (`[state] kind = "redis"`) enforce one key's requests a minute and budget across both,
//! serve each other's cached answers and tool results, share a target's requests a minute,
//! and both stop sending to a target that answered one of them 429 with a long
//! `Retry-After`; `/ready` reports the state backend. The test starts its own
//! `redis-server` on a free loopback port; without the binary it fails, unless
//! `TRESTLE_SKIP_REDIS=1`.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

async fn call(gw: &Proc, key: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .json(&chat_body("chat", "hello there", false))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until the instance says its shared state is healthy.
async fn shared(gw: &Proc) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = get_json(&format!("{}/ready", gw.url())).await;
        if ready["state"]["healthy"] == true {
            return ready["state"].clone();
        }
        assert!(Instant::now() < deadline, "state never healthy: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_limits_and_budgets_on_redis() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let dir = temp_dir("state-redis");
    let db = dir.join("traces.db");
    let limited = keys_cli(
        &db,
        &["create", "--name", "a", "--tenant", "t", "--rpm", "6"],
    );
    let budgeted = keys_cli(
        &db,
        &[
            "create",
            "--name",
            "b",
            "--tenant",
            "t",
            "--budget-usd",
            "day:0.001",
        ],
    );
    let config = format!(
        r#"
[store]
path = "{}"
flush_interval_ms = 5
[state]
kind = "redis"
url = "redis://127.0.0.1:{}/0"
instances = 2
[providers.local]
kind = "placeholder"
[routes.chat]
targets = ["local/echo"]
# Estimated at under $0.001 before the call (4 output tokens at most), a request really
# costs more: the first request spends the budgeted key's $0.001.
max_tokens = 4
[models."local/echo"]
price = {{ input = 100.0, output = 100.0 }}
"#,
        db.display(),
        redis.port
    );
    let a = gateway(&config, &[]);
    let b = gateway(&config, &[]);
    let state = shared(&a).await;
    assert_eq!(state["kind"], "redis");
    shared(&b).await;

    // Six requests a minute across both instances, alternating: the seventh is refused on
    // either.
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let (status, body) = call(gw, &limited).await;
        assert_eq!(status, 200, "request {}: {body}", i + 1);
    }
    for gw in [&a, &b] {
        let (status, body) = call(gw, &limited).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("6 requests per minute")
        );
    }

    // A budget spent through one instance is spent on the other.
    let (status, _) = call(&a, &budgeted).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = call(&b, &budgeted).await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
            break;
        }
        // The spend is settled just after the answer: at most a request or two slip by.
        assert!(
            Instant::now() < deadline,
            "the budget never held on the other instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_dir_all(dir).ok();
}

/// The number of keys in the Redis on `port` that match `pattern`.
fn redis_keys(port: u16, pattern: &str) -> usize {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--scan", "--pattern", pattern])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// Waits until the Redis on `port` has a key matching `pattern` (a spawned write landed).
async fn landed(port: u16, pattern: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis_keys(port, pattern) == 0 {
        assert!(Instant::now() < deadline, "no key {pattern} in Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn upstream_calls(up: &Proc) -> u64 {
    get_json(&format!("{}/mock/requests", up.url())).await["count"]
        .as_u64()
        .unwrap()
}

async fn ask(gw: &Proc, model: &str, text: &str, stream: bool) -> (String, String, String) {
    let r = post_with(gw, &chat_body(model, text, stream), &[]).await;
    assert_eq!(r.status(), 200);
    let header = |name: &str| r.headers()[name].to_str().unwrap().to_string();
    let (cache, level) = (
        header("x-trestle-cache"),
        header("x-trestle-fallback-level"),
    );
    (cache, level, answer_text(r).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_caches_target_limits_and_pauses() {
    let Some(redis) = Redis::start() else {
        return;
    };
    let up = mock(&[]);
    let backup = mock(&[]);
    // Answers every request 429 with a Retry-After longer than retry_after_pause_ms.
    let limited = mock(&[
        "--fault-rate",
        "1",
        "--faults",
        "429",
        "--retry-after",
        "30",
    ]);
    let config = format!(
        r#"
[store]
enabled = false
[state]
kind = "redis"
url = "redis://127.0.0.1:{port}/0"
instances = 2
prefix = "e2e:"
[providers.up]
kind = "openai"
base_url = "{up}/v1"
[providers.backup]
kind = "openai"
base_url = "{backup}/v1"
[providers.limited]
kind = "openai"
base_url = "{limited}/v1"
[models."up/m2"]
requests_per_minute = 2
[routes.cached]
targets = ["up/m1"]
cache = {{ mode = "on", ttl_s = 60 }}
[routes.counted]
targets = ["up/m2", "backup/m1"]
[routes.paced]
targets = ["limited/m1", "backup/m1"]
"#,
        port = redis.port,
        up = up.url(),
        backup = backup.url(),
        limited = limited.url(),
    );
    let a = gateway(&config, &[]);
    let b = gateway(&config, &[]);
    shared(&a).await;
    shared(&b).await;

    // An answer A cached is a hit on B, streamed or not; and one A streamed is a hit too.
    let (cache, _, text) = ask(&a, "cached", "what does trestle do", false).await;
    assert_eq!(cache, "miss");
    let (_, _, streamed) = ask(&a, "cached", "and what else", true).await;
    landed(redis.port, "e2e:exact:*").await;
    while redis_keys(redis.port, "e2e:exact:*") < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let calls = upstream_calls(&up).await;
    for stream in [false, true] {
        let (cache, _, again) = ask(&b, "cached", "what does trestle do", stream).await;
        assert_eq!((cache.as_str(), again.as_str()), ("exact", text.as_str()));
        let (cache, _, again) = ask(&b, "cached", "and what else", stream).await;
        assert_eq!(
            (cache.as_str(), again.as_str()),
            ("exact", streamed.as_str())
        );
    }
    assert_eq!(upstream_calls(&up).await, calls, "B never asked upstream");

    // The tool cache: a result A stores, B serves.
    let r = client()
        .put(format!("{}/v1/cache/specs/sku-1", a.url()))
        .body("{\"watts\": 40}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    landed(redis.port, "e2e:tool:*").await;
    let r = client()
        .get(format!("{}/v1/cache/specs/sku-1", b.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-trestle-cache"], "hit");
    assert_eq!(r.text().await.unwrap(), "{\"watts\": 40}");

    // up/m2 takes two requests a minute across both instances; then backup serves.
    assert_eq!(ask(&a, "counted", "one", false).await.1, "primary");
    assert_eq!(ask(&b, "counted", "two", false).await.1, "primary");
    for gw in [&a, &b] {
        assert_eq!(ask(gw, "counted", "three", false).await.1, "model");
    }

    // A 429 with a 30 s Retry-After on A pauses `limited` for B too: B sends it nothing.
    assert_eq!(ask(&a, "paced", "hello", false).await.1, "model");
    assert_eq!(upstream_calls(&limited).await, 1);
    landed(redis.port, "e2e:target:limited/m1:pause").await;
    for stream in [false, true] {
        assert_eq!(ask(&b, "paced", "hello", stream).await.1, "model");
    }
    assert_eq!(upstream_calls(&limited).await, 1, "B paced the target");
}
