//! Token budgets end to end with the real binary: a route's `max_input_tokens` trims the
//! oldest turns (a tool call with its result going together) before the upstream sees them —
//! the placeholder's `transcript` model answers with the messages it received — and says so
//! in `x-trestle-trimmed`, the trace and `/metrics`; `trim = "reject"` and a last turn that
//! cannot fit answer 400 `context_length_exceeded` naming the limit and the counts.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};

const CONFIG: &str = r#"
[store]
path = "traces.db"
flush_interval_ms = 5
[providers.local]
kind = "placeholder"
[models."local/transcript"]
tokenizer = "o200k_base"
[routes.chat]
targets = ["local/transcript"]
max_input_tokens = 30
[routes.strict]
targets = ["local/transcript"]
max_input_tokens = 30
trim = "reject"
[routes.tiny]
targets = ["local/transcript"]
max_input_tokens = 20
[routes.open]
targets = ["local/transcript"]
"#;

/// Counted with OpenAI's Python `tiktoken` (o200k_base), 3 tokens of framing per message,
/// a tool call's name and arguments + 3, and 3 to prime the reply: system 10, user 14, the
/// tool call 13, its result 9, the answer 9, the last user message 13 — 71 in all; the
/// system prompt and the last user message alone are 26.
fn conversation(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "The quick brown fox jumps over the lazy dog."},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"fox\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "The fox is brown."},
            {"role": "assistant", "content": "The fox is brown."},
            {"role": "user", "content": "Hello, world! How are you today?"}
        ]
    })
}

async fn post(gw: &Proc, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn trace_id(r: &reqwest::Response) -> String {
    r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_oldest_turns_are_trimmed_before_the_upstream_sees_them() {
    let gw = gateway(CONFIG, &[]);

    let r = post(&gw, &conversation("chat")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-trestle-trimmed"], "4");
    let id = trace_id(&r);
    let answer: Value = r.json().await.unwrap();
    // The upstream got the system prompt and the last user message, nothing between.
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "system: You are a helpful assistant.\nuser: Hello, world! How are you today?"
    );
    let t = trace(&gw, &id).await;
    let req = &t["requests"][0];
    assert_eq!(req["input_tokens_before"], 71);
    assert_eq!(req["input_tokens_after"], 26);
    assert_eq!(req["trimmed_messages"], 4);
    assert_eq!(req["tokenizer"], "o200k_base");
    // The trace keeps the request as the client sent it.
    assert_eq!(req["request"]["messages"].as_array().unwrap().len(), 6);

    // Within the budget: nothing dropped, no header, the count still on the trace.
    let short = json!({"model": "chat", "messages": [{"role": "user", "content": "Hello, world! How are you today?"}]});
    let r = post(&gw, &short).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-trestle-trimmed").is_none());
    let t = trace(&gw, &trace_id(&r)).await;
    assert_eq!(t["requests"][0]["input_tokens_before"], 16);
    assert_eq!(t["requests"][0]["input_tokens_after"], 16);
    assert_eq!(t["requests"][0]["trimmed_messages"], 0);

    // A route without a budget counts nothing.
    let r = post(&gw, &conversation("open")).await;
    assert_eq!(r.status(), 200);
    let t = trace(&gw, &trace_id(&r)).await;
    assert!(t["requests"][0]["tokenizer"].is_null());
    assert!(t["requests"][0]["input_tokens_before"].is_null());

    let metrics = get_text(&format!("{}/metrics", gw.url())).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("trestle_context_trimmed_total{route=\"chat\"} 1")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_budget_without_trimming_is_a_400_naming_the_limit_and_the_count() {
    let gw = gateway(CONFIG, &[]);

    let r = post(&gw, &conversation("strict")).await;
    assert_eq!(r.status(), 400);
    let id = trace_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    assert_eq!(body["error"]["param"], "messages");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("71 input tokens")
            && message.contains("limit of 30")
            && message.contains("routes.strict.max_input_tokens"),
        "{message}"
    );
    let t = trace(&gw, &id).await;
    assert_eq!(t["requests"][0]["status"], 400);
    assert_eq!(t["requests"][0]["input_tokens_before"], 71);

    // The system prompt and the last user message alone (26) are over 20: nothing to trim.
    let r = post(&gw, &conversation("tiny")).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "context_length_exceeded");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("take 26") && message.contains("limit of 20"),
        "{message}"
    );
}

#[test]
fn config_check_names_a_bad_budget_key() {
    let dir = temp_dir("budget-check");
    let file = dir.join("trestle.toml");
    let check = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["config", "check"])
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, out) = check(CONFIG);
    assert!(ok, "{out}");
    let (ok, out) = check(&CONFIG.replace("max_input_tokens = 20", "max_input_tokens = 0"));
    assert!(
        !ok && out.contains("routes.tiny.max_input_tokens: must be above 0"),
        "{out}"
    );
    let (ok, out) = check(&CONFIG.replace("trim = \"reject\"", "trim = \"newest\""));
    assert!(!ok && out.contains("`trim` must be"), "{out}");
    let (ok, out) = check(&CONFIG.replace("\"o200k_base\"", "\"llama3\""));
    assert!(!ok && out.contains("`tokenizer` must be"), "{out}");
    let (ok, out) = check(&CONFIG.replace("\"o200k_base\"", "\"tok/tokenizer.json\""));
    assert!(
        !ok && out.contains("models.\"local/transcript\".tokenizer: no tokenizer file at"),
        "{out}"
    );
    // A file that is there but is not a tokenizer fails when the runtime loads it.
    std::fs::create_dir_all(dir.join("tok")).unwrap();
    std::fs::write(dir.join("tok/tokenizer.json"), "{}").unwrap();
    let (ok, out) = check(&CONFIG.replace("\"o200k_base\"", "\"tok/tokenizer.json\""));
    assert!(
        !ok && out.contains("models.\"local/transcript\".tokenizer: cannot load tokenizer"),
        "{out}"
    );
}
