//! End-to-end: the real `trestle serve` in front of real `trestle mock` upstreams, over
//! loopback sockets.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

async fn post(gw: &Proc, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(body)
        .send()
        .await
        .expect("request")
}

/// Reads an SSE body into its `data:` payloads.
async fn sse(r: reqwest::Response) -> Vec<String> {
    let text = r.text().await.expect("body");
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_through_the_primary_with_key_caps_and_passthrough() {
    let up = mock(&["--api-key", "sk-up"]);
    let backup = mock(&[]);
    let gw = gateway(&reference_config(&up, &backup, ""), &[("UP_KEY", "sk-up")]);
    let body = json!({"model": "chat", "max_tokens": 5000, "seed": 42, "logit_bias": {"50256": -100},
        "messages": [{"role": "user", "content": "hello gateway"}]});
    let r = post(&gw, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-trestle-fallback-level"], "primary");
    assert_eq!(r.headers()["x-trestle-cache"], "miss");
    assert_eq!(r.headers()["x-trestle-capability-level"], "5");
    let trace_id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "hello gateway");

    // The upstream got the key, the upstream model name, the route's cap and unknown fields.
    let seen: Value = get_json(&format!("{}/mock/requests", up.url())).await;
    let last = &seen["recent"][0];
    assert_eq!(last["model"], "m1");
    assert_eq!(last["max_tokens"], 300);
    assert_eq!(last["seed"], 42);
    assert_eq!(last["logit_bias"]["50256"], -100);
    assert_eq!(last["_mock_authorization_sent"], true);

    let t = trace(&gw, &trace_id).await;
    let req = &t["requests"][0];
    assert_eq!(req["served_by"], "up/m1");
    assert_eq!(req["attempts"][0]["cold_start"], true);
    assert!(
        req["cost_usd"].as_f64().unwrap() > 0.0,
        "priced model has a cost: {req}"
    );
    assert_eq!(req["request"]["seed"], 42);
    assert_eq!(
        req["response"]["choices"][0]["message"]["content"],
        "hello gateway"
    );
    // The API key appears nowhere in the trace.
    assert!(!t.to_string().contains("sk-up"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_fault_falls_back_to_the_next_target() {
    let backup = mock(&[]);
    for fault in ["500", "429", "malformed", "disconnect", "hang"] {
        let up = mock(&[
            "--fault-rate",
            "1",
            "--faults",
            fault,
            "--retry-after",
            "0.05",
        ]);
        let gw = gateway(
            &reference_config(&up, &backup, "attempt_timeout_ms = 800"),
            &[],
        );
        for stream in [false, true] {
            let r = post(&gw, &chat_body("chat", "fall back please", stream)).await;
            assert_eq!(r.status(), 200, "fault {fault} stream {stream}");
            if stream && matches!(fault, "malformed" | "disconnect") {
                // These break a stream after its first tokens reached the client: no retry is
                // allowed then, so the stream ends with an error event and [DONE].
                assert_eq!(r.headers()["x-trestle-fallback-level"], "primary");
                let events = sse(r).await;
                assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
                assert!(
                    events[events.len() - 2].contains("stream_interrupted"),
                    "{events:?}"
                );
                continue;
            }
            assert_eq!(
                r.headers()["x-trestle-fallback-level"],
                "model",
                "fault {fault}"
            );
            let id = r.headers()["x-trestle-trace-id"]
                .to_str()
                .unwrap()
                .to_string();
            let text = if stream {
                let events = sse(r).await;
                assert_eq!(
                    events.last().map(String::as_str),
                    Some("[DONE]"),
                    "fault {fault}"
                );
                events
                    .iter()
                    .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                    .filter_map(|c| {
                        c["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(str::to_string)
                    })
                    .collect::<String>()
            } else {
                let v: Value = r.json().await.unwrap();
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            };
            assert_eq!(text, "fall back please", "fault {fault} stream {stream}");
            let t = trace(&gw, &id).await;
            let attempts = t["requests"][0]["attempts"].as_array().unwrap().clone();
            // A retryable failure is tried twice on `up` (retries = 1), then `backup` serves.
            // A 429 instead cools `up` down for its Retry-After and `backup` serves at once
            // (a request that finds `up` still cooling skips it without a call).
            let (rows, first_status) = match fault {
                "429" => (2, ["error", "skipped"]),
                _ => (3, ["error", "error"]),
            };
            assert_eq!(
                attempts.len(),
                rows,
                "fault {fault} stream {stream}: {attempts:?}"
            );
            assert_eq!(attempts[0]["target"], "up/m1");
            assert!(
                first_status.contains(&attempts[0]["status"].as_str().unwrap()),
                "{attempts:?}"
            );
            assert_eq!(attempts[rows - 1]["target"], "backup/m1");
            assert_eq!(attempts[rows - 1]["status"], "ok");
            assert_eq!(t["requests"][0]["fallback_level"], "model");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_targets_answer_502_or_504_saying_what_was_tried() {
    let up = mock(&["--fault-rate", "1", "--faults", "500"]);
    let backup = mock(&["--fault-rate", "1", "--faults", "500"]);
    let gw = gateway(&reference_config(&up, &backup, ""), &[]);
    let r = post(&gw, &chat_body("chat", "x", false)).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("up/m1") && msg.contains("backup/m1"), "{msg}");
    assert_eq!(v["error"]["type"], "upstream_error");

    let up = mock(&["--fault-rate", "1", "--faults", "hang"]);
    let backup = mock(&["--fault-rate", "1", "--faults", "hang"]);
    let gw = gateway(&reference_config(&up, &backup, ""), &[]);
    let started = std::time::Instant::now();
    let r = post(&gw, &chat_body("chat", "x", true)).await;
    assert_eq!(r.status(), 504);
    // Four first-token timeouts of 500 ms, within the 5 s route budget.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_after_the_first_token_ends_the_stream_with_an_error_event() {
    let up = mock(&[
        "--mode",
        "lorem",
        "--lorem-words",
        "30",
        "--fault-rate",
        "1",
        "--faults",
        "disconnect",
    ]);
    let backup = mock(&[]);
    // One target only: the failure happens after tokens were sent, so nothing may retry it.
    let config = reference_config(&up, &backup, "").replace(
        r#"targets = ["up/m1", "backup/m1"]"#,
        r#"targets = ["up/m1"]"#,
    );
    let gw = gateway(&config, &[]);
    let r = post(&gw, &chat_body("chat", "x", true)).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let events = sse(r).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let err: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(err["error"]["code"], "stream_interrupted");
    let t = trace(&gw, &id).await;
    assert_eq!(t["requests"][0]["outcome"], "stream_error");
    assert_eq!(t["requests"][0]["attempts"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_openai_errors() {
    let up = mock(&[]);
    let backup = mock(&[]);
    let gw = gateway(
        &format!(
            "[server]\nmax_body_bytes = 2000\n{}",
            reference_config(&up, &backup, "")
        ),
        &[],
    );
    let url = format!("{}/v1/chat/completions", gw.url());
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client().post(&url).body("{\"model\": "),
            400,
            "not valid JSON",
        ),
        (
            client()
                .post(&url)
                .json(&json!({"model": "chat", "messages": [{"role": "robot", "content": "x"}]})),
            400,
            "messages[0]",
        ),
        (
            client()
                .post(&url)
                .json(&json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]})),
            404,
            "Routes: chat",
        ),
        (
            client()
                .post(&url)
                .json(&chat_body("chat", &"x".repeat(5000), false)),
            413,
            "max_body_bytes",
        ),
        (client().get(&url), 405, "not allowed"),
        (
            client().get(format!("{}/v2/nothing", gw.url())),
            404,
            "no endpoint",
        ),
    ];
    for (req, status, needle) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{needle}");
        let v: Value = r.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg} should contain {needle}");
        assert!(v["error"]["type"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_requests_are_all_traced_by_conversation() {
    let up = mock(&[]);
    let backup = mock(&[]);
    let gw = gateway(&reference_config(&up, &backup, ""), &[]);
    let c = client();
    let url = format!("{}/v1/chat/completions", gw.url());
    let results = futures_util::stream::iter(0..1000)
        .map(|i| {
            let c = c.clone();
            let url = url.clone();
            async move {
                let r = c
                    .post(&url)
                    .header("x-trestle-conversation-id", format!("conv-{}", i % 10))
                    .header("x-trestle-user-id", "load-user")
                    .json(&chat_body("chat", &format!("request {i}"), i % 2 == 0))
                    .send()
                    .await
                    .unwrap();
                let id = r.headers()["x-trestle-trace-id"]
                    .to_str()
                    .unwrap()
                    .to_string();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                id
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<String>>()
        .await;
    assert_eq!(results.len(), 1000);
    let mut found = std::collections::HashSet::new();
    for _ in 0..100 {
        found.clear();
        for conv in 0..10 {
            let v: Value = get_json(&format!(
                "{}/v1/traces?conversation_id=conv-{conv}&limit=1000",
                gw.url()
            ))
            .await;
            for t in v["data"].as_array().unwrap() {
                assert_eq!(t["conversation_id"], format!("conv-{conv}"));
                found.insert(t["trace_id"].as_str().unwrap().to_string());
            }
        }
        if found.len() == 1000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected: std::collections::HashSet<String> = results.into_iter().collect();
    assert_eq!(
        found, expected,
        "every trace retrievable by conversation id"
    );
    let ready: Value = get_json(&format!("{}/ready", gw.url())).await;
    assert_eq!(ready["traces"]["dropped"], 0);
    let metrics = get_text(&format!("{}/metrics", gw.url())).await;
    for name in [
        "trestle_request_duration_seconds",
        "trestle_ttft_seconds",
        "trestle_upstream_duration_seconds",
        "trestle_gateway_overhead_seconds",
        "trestle_tokens_total",
        "trestle_cold_start_seconds",
        "trestle_request_cost_usd",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_fifty_open_streams_loses_no_trace() {
    // Streams take about 4 s (40 tokens at 10/s); the grace period is 300 ms.
    let up = mock(&[
        "--mode",
        "lorem",
        "--lorem-words",
        "40",
        "--tokens-per-sec",
        "10",
    ]);
    let backup = mock(&[]);
    let config = format!(
        "[server]\nshutdown_grace_ms = 300\n{}",
        reference_config(&up, &backup, "").replace("timeout_ms = 5000", "timeout_ms = 60000")
    );
    let mut gw = gateway(&config, &[]);
    let c = client();
    let mut streams = Vec::new();
    for i in 0..50 {
        let r = c
            .post(format!("{}/v1/chat/completions", gw.url()))
            .header("x-trestle-conversation-id", "sigterm")
            .json(&chat_body("chat", &format!("stream {i}"), true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(tokio::spawn(async move { sse(r).await }));
    }
    let status = gw.terminate(Duration::from_secs(20));
    assert!(status.success(), "clean exit: {status}");
    let mut interrupted = 0;
    for s in streams {
        let events = s.await.unwrap();
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "every stream closes cleanly"
        );
        if events.iter().any(|e| e.contains("shutting_down")) {
            interrupted += 1;
        }
    }
    assert!(
        interrupted > 0,
        "the streams outlived the grace period and were ended with an event"
    );
    let db = rusqlite::Connection::open(gw.dir.join(".trestle/trestle.db")).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM requests WHERE conversation_id = 'sigterm'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 50, "all 50 stream traces flushed on shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_walks_away_is_traced_and_cancels_upstream() {
    let up = mock(&[
        "--mode",
        "lorem",
        "--lorem-words",
        "50",
        "--tokens-per-sec",
        "20",
    ]);
    let backup = mock(&[]);
    let gw = gateway(&reference_config(&up, &backup, ""), &[]);
    let r = post(&gw, &chat_body("chat", "x", true)).await;
    let id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    let t = trace(&gw, &id).await;
    assert_eq!(t["requests"][0]["outcome"], "client_disconnected");
}

#[test]
fn config_check_reports_line_and_key() {
    let dir = temp_dir("check");
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[providers.up]\nkind = \"openai\"\n[routes.chat]\ntargets = [\"up/m1\", \"ghost/m\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("line 4: routes.chat.targets[1]: unknown provider `ghost`"),
        "{text}"
    );
    std::fs::write(&path, "[providers.up]\nkind = \"openai\"\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
