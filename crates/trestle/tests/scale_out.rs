//! Two instances, one truth (docs/deployment.md): two `trestle serve` processes on one
//! PostgreSQL store and one Redis. A key's requests a minute and its budget hold across
//! both, a trace written by either is read from either, and a `kill -9` of one loses no
//! trace it acknowledged longer than its flush interval before (measured and printed).
//!
//! The test starts its own PostgreSQL (initdb on a free loopback port, as
//! `trestle_gateway::store::pg_server` does for the store suite) and its own
//! `redis-server`; without them it fails, unless `TRESTLE_SKIP_POSTGRES=1` /
//! `TRESTLE_SKIP_REDIS=1`.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// How often each instance's recorder flushes (`[store] flush_interval_ms`).
const FLUSH_MS: u64 = 100;

fn config(pg: &str, redis: u16) -> String {
    format!(
        r#"
[store]
kind = "postgres"
url = "{pg}"
flush_interval_ms = {FLUSH_MS}
[state]
kind = "redis"
url = "redis://127.0.0.1:{redis}/0"
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
"#
    )
}

/// Runs `trestle keys ARGS --config FILE` and returns what it printed.
fn keys(config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("keys")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run trestle keys");
    assert!(
        out.status.success(),
        "trestle keys {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One chat request; the status, the trace id the gateway answered with, and the body.
async fn call(gw: &Proc, key: &str, conversation: &str) -> (u16, String, Value) {
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(key)
        .header("x-trestle-conversation-id", conversation)
        .json(&chat_body("chat", "hello there", false))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let trace = r
        .headers()
        .get("x-trestle-trace-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, trace, r.json().await.unwrap_or(Value::Null))
}

async fn read(gw: &Proc, key: &str, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", gw.url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits until `path` answers 200 on `gw`.
async fn eventually(gw: &Proc, key: &str, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = read(gw, key, path).await;
        if status == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready(gw: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = get_json(&format!("{}/ready", gw.url())).await;
        if r["state"]["healthy"] == true && r["status"] == "ready" {
            return;
        }
        assert!(Instant::now() < deadline, "never ready: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_postgres_and_redis_agree() {
    let Some(pg) = trestle_gateway::store::pg_server::database() else {
        return;
    };
    let Some(redis) = Redis::start() else {
        return;
    };
    let dir = temp_dir("scale-out");
    let cfg = dir.join("trestle.toml");
    let text = config(&pg, redis.port);
    std::fs::write(&cfg, &text).unwrap();

    // Keys are made once, in PostgreSQL, and seen by both instances.
    let limited = keys(
        &cfg,
        &["create", "--name", "a", "--tenant", "t1", "--rpm", "60"],
    );
    let budgeted = keys(
        &cfg,
        &[
            "create",
            "--name",
            "b",
            "--tenant",
            "t1",
            "--budget-usd",
            "day:0.001",
        ],
    );
    let other = keys(&cfg, &["create", "--name", "c", "--tenant", "t2"]);
    let a = gateway(&text, &[]);
    let b = gateway(&text, &[]);
    ready(&a).await;
    ready(&b).await;

    // 60 requests a minute across both instances, alternating: the 61st is refused on either.
    let mut traces = Vec::new();
    for i in 0..60 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let (status, trace, body) = call(gw, &limited, "conv-1").await;
        assert_eq!(status, 200, "request {}: {body}", i + 1);
        traces.push(trace);
    }
    for gw in [&a, &b] {
        let (status, _, body) = call(gw, &limited, "conv-1").await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    }

    // A trace written by either is read from either; the conversation holds both halves.
    for (i, trace) in traces.iter().take(2).enumerate() {
        for gw in [&a, &b] {
            let got = eventually(gw, &limited, &format!("/v1/traces/{trace}")).await;
            assert_eq!(got["requests"][0]["route"], "chat", "trace {i}: {got}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let conv = eventually(&b, &limited, "/v1/conversations/conv-1").await;
        if conv["turns"].as_array().unwrap().len() == 60 {
            break;
        }
        assert!(Instant::now() < deadline, "conversation: {conv}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another tenant's key sees none of it, on either instance.
    for gw in [&a, &b] {
        let (status, _) = read(gw, &other, &format!("/v1/traces/{}", traces[0])).await;
        assert_eq!(status, 404);
        let (status, _) = read(gw, &other, "/v1/conversations/conv-1").await;
        assert_eq!(status, 404);
    }

    // A budget spent through one instance is spent on the other.
    let (status, _, _) = call(&a, &budgeted, "conv-2").await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _, body) = call(&b, &budgeted, "conv-2").await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the budget never held on B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // kill -9 of A under load: every trace it acknowledged more than a flush interval (and
    // a batch write) before it died is in PostgreSQL; the rest is the measured loss.
    // A key made while the instances run is seen within `[auth] refresh_ms`.
    let unlimited = keys(&cfg, &["create", "--name", "d", "--tenant", "t1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&a, &unlimited, "conv-3").await.0 == 401 {
        assert!(
            Instant::now() < deadline,
            "a new key never reached the instance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut acked: Vec<(Instant, String)> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1_500) {
        let (status, trace, _) = call(&a, &unlimited, "conv-3").await;
        assert_eq!(status, 200);
        acked.push((Instant::now(), trace));
    }
    let mut a = a;
    let killed_at = Instant::now();
    a.child.kill().unwrap(); // SIGKILL
    a.child.wait().unwrap();
    let mut lost_old = Vec::new();
    let mut lost_recent = 0;
    let grace = Duration::from_millis(FLUSH_MS + 400);
    for (at, trace) in &acked {
        let (status, _) = read(&b, &unlimited, &format!("/v1/traces/{trace}")).await;
        if status != 200 {
            if killed_at.duration_since(*at) > grace {
                lost_old.push(trace.clone());
            } else {
                lost_recent += 1;
            }
        }
    }
    eprintln!(
        "{}",
        json!({
            "kill_9": {
                "acknowledged": acked.len(),
                "lost": lost_old.len() + lost_recent,
                "lost_within_flush_interval": lost_recent,
                "flush_interval_ms": FLUSH_MS,
            }
        })
    );
    assert!(
        lost_old.is_empty(),
        "traces acknowledged more than {grace:?} before kill -9 were lost: {lost_old:?}"
    );
    drop(redis);
    std::fs::remove_dir_all(dir).ok();
}
