//! Shared state end to end: two `trestle serve` processes on one store and one Redis
//! (`[state] kind = "redis"`) enforce one key's requests a minute and budget across both,
//! and `/ready` reports the state backend. The test starts its own `redis-server` on a free
//! loopback port; without the binary it fails, unless `TRESTLE_SKIP_REDIS=1`.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A `redis-server` on a free loopback port, stopped when dropped.
struct Redis {
    port: u16,
    child: Child,
}

impl Redis {
    fn start() -> Option<Redis> {
        let port = free_port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if std::env::var("TRESTLE_SKIP_REDIS").as_deref() == Ok("1") => {
                eprintln!("skipping: cannot run redis-server: {e}");
                return None;
            }
            Err(e) => panic!(
                "cannot run redis-server ({e}): install it (apt-get install redis-server) or set TRESTLE_SKIP_REDIS=1"
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis { port, child })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
[models."local/echo"]
price = {{ input = 1000.0, output = 1000.0 }}
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
