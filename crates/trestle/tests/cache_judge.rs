//! The semantic cache's judge end to end: the gateway (the real binary) with the mock's
//! pseudo-embeddings and a fake judge over a real socket (an OpenAI-compatible server in the
//! test that says yes when both questions name the same fruit). A candidate the threshold
//! would not serve is served when the judge says yes, and is a miss when it says no or does
//! not answer in time; the trace and the metrics say so.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// The fake judge: yes when both questions name the same fruit; two seconds late when a
/// question says "slowly".
async fn fake_judge() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                let user = body["messages"][1]["content"].as_str().unwrap_or_default();
                let fruit = |line: &str| ["apple", "pear"].into_iter().find(|f| line.contains(f));
                let mut lines = user.lines();
                let (q1, q2) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
                if user.contains("slowly") {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                let reply = if fruit(q1) == fruit(q2) { "Yes" } else { "No." };
                axum::Json(json!({
                    "id": "j", "object": "chat.completion", "created": 0, "model": "small",
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": reply}}],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 1, "total_tokens": 51}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

async fn ask(gw: &Proc, text: &str) -> (String, String, String) {
    let r = post_with(gw, &chat_body("support", text, false), &[]).await;
    let cache = r.headers()["x-trestle-cache"].to_str().unwrap().to_string();
    let id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    (cache, id, answer_text(r).await)
}

/// The judge's record on a trace, once the trace is written.
async fn judged(gw: &Proc, id: &str) -> Value {
    for _ in 0..50 {
        let t = trace(gw, id).await;
        if let Some(g) = t["requests"][0]["guardrails"].as_array()
            && let Some(r) = g.iter().find(|r| r["kind"] == "cache_judge")
        {
            return r.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no judge record on trace {id}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_judged_candidate_is_served_and_a_rejected_one_is_a_miss() {
    let (judge_url, calls) = fake_judge().await;
    let up = mock(&[]);
    let config = format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{url}/v1"
[providers.judge]
kind = "openai"
base_url = "{judge_url}"
[embedders.mock]
kind = "provider"
target = "up/embed"
[routes.support]
targets = ["up/m1"]
[routes.support.cache]
mode = "on"
semantic = {{ embedder = "mock", threshold = 0.99, learn = false, judge = "judge/small", judge_from = 0.3, judge_timeout_ms = 500 }}
"#,
        url = up.url()
    );
    let gw = gateway(&config, &[]);
    let (cache, _, _) = ask(&gw, "how do i reset the apple password on my account").await;
    assert_eq!(cache, "miss");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Below the threshold, the judge says yes: served from the cache.
    let (cache, id, answer) = ask(&gw, "how can i reset the apple password on my account").await;
    assert_eq!(cache, "semantic");
    assert_eq!(answer, "how do i reset the apple password on my account");
    let r = judged(&gw, &id).await;
    assert_eq!(r["outcome"], "same", "{r}");
    assert_eq!(r["action"], "serve", "{r}");
    assert_eq!(r["guardrail"], "judge/small");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Another fruit: the judge says no, and the model answers.
    let (cache, id, answer) = ask(&gw, "how do i reset the pear password on my account").await;
    assert_eq!(cache, "miss");
    assert_eq!(answer, "how do i reset the pear password on my account");
    let r = judged(&gw, &id).await;
    assert_eq!(
        (r["outcome"].as_str(), r["action"].as_str()),
        (Some("different"), Some("miss"))
    );

    // A judge too slow is a miss, not an error.
    let (cache, id, _) = ask(
        &gw,
        "how do i reset the apple password on my account slowly",
    )
    .await;
    assert_eq!(cache, "miss");
    assert_eq!(judged(&gw, &id).await["outcome"], "timeout");

    // The verdict is remembered: the same question again costs no judge call.
    let before = calls.load(Ordering::SeqCst);
    let (cache, id, _) = ask(&gw, "how can i reset the apple password on my account").await;
    assert_eq!(cache, "semantic");
    let r = judged(&gw, &id).await;
    assert_eq!(r["outcome"], "same");
    assert!(r["detail"].as_str().unwrap().contains("remembered"), "{r}");
    assert_eq!(calls.load(Ordering::SeqCst), before);

    let metrics = get_text(&format!("{}/metrics", gw.url())).await;
    assert!(metrics.contains("trestle_cache_judge_total"), "{metrics}");
    assert!(
        metrics.contains("verdict=\"same\""),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("judge"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
