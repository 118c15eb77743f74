//! Provider translation end to end: what a provider cannot take is said, never dropped
//! silently (`x-trestle-dropped-params`, the trace). Fake Gemini and Anthropic servers answer
//! with the wire formats of the vendors' public references. A proxy named in the environment
//! is honoured.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The request bodies a fake upstream received.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// A Gemini `generateContent` answer, for every request; the request bodies are kept.
async fn fake_gemini() -> (String, Seen) {
    let answer = json!({
        "candidates": [{"content": {"parts": [{"text": "Bonjour"}], "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1, "totalTokenCount": 6},
        "modelVersion": "gemini-2.0-flash"
    });
    let (url, seen) = fake_upstream(answer).await;
    (format!("{url}/v1beta"), seen)
}

/// An Anthropic Messages answer, for every request; the request bodies are kept.
async fn fake_anthropic() -> (String, Seen) {
    fake_upstream(json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "Bonjour"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 1}
    }))
    .await
}

/// An HTTP/1.1 server answering `answer` as JSON to every POST; the request bodies are kept.
async fn fake_upstream(answer: Value) -> (String, Seen) {
    let answer = answer.to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let kept = kept.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body: Value = serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap();
                    kept.lock().unwrap().push(body);
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = sock.write_all(response.as_bytes()).await;
                    buf.clear();
                }
            });
        }
    });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_a_provider_cannot_take_are_named_not_dropped_silently() {
    let (url, seen) = fake_gemini().await;
    let gw = gateway(
        &format!(
            "[providers.gem]\nkind = \"gemini\"\nbase_url = \"{url}\"\napi_key = \"k\"\n\
             [routes.chat]\ntargets = [\"gem/gemini-2.0-flash\"]\n"
        ),
        &[],
    );
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "Say hi in French"}],
        "seed": 7, "frequency_penalty": 0.5, "logit_bias": {"50256": -100}, "user": "u-1",
        "service_tier": "auto"});
    let r = post_with(&gw, &body, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-trestle-dropped-params"],
        "logit_bias, service_tier, user"
    );
    let id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(answer_text(r).await, "Bonjour");
    let t = trace(&gw, &id).await;
    assert_eq!(
        t["requests"][0]["dropped_params"],
        json!(["logit_bias", "service_tier", "user"])
    );
    // What is mapped arrives under Gemini's names.
    let sent = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent["generationConfig"]["seed"], 7);
    assert_eq!(sent["generationConfig"]["frequencyPenalty"], 0.5);
    // What is named is not sent.
    for name in [
        "logit_bias",
        "service_tier",
        "user",
        "seed",
        "frequency_penalty",
    ] {
        assert!(sent.get(name).is_none(), "`{name}` reached Gemini: {sent}");
    }
    // A request with nothing to drop carries no header.
    let r = post_with(&gw, &chat_body("chat", "again", false), &[]).await;
    assert!(r.headers().get("x-trestle-dropped-params").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn parameters_anthropic_cannot_take_are_named_in_the_header_and_the_trace() {
    let (url, seen) = fake_anthropic().await;
    let gw = gateway(
        &format!(
            "[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{url}\"\napi_key = \"k\"\n\
             [routes.chat]\ntargets = [\"claude/claude-sonnet-4-5\"]\n"
        ),
        &[],
    );
    let body = json!({"model": "chat", "messages": [{"role": "user", "content": "Say hi in French"}],
        "seed": 7, "presence_penalty": 0.5, "logit_bias": {"50256": -100}, "n": 1,
        "metadata": {"team": "a"}, "reasoning_effort": "low", "user": "u-1", "top_k": 5,
        "temperature": 1.5});
    let r = post_with(&gw, &body, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-trestle-dropped-params"],
        "logit_bias, metadata, n, presence_penalty, reasoning_effort, seed"
    );
    let id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(answer_text(r).await, "Bonjour");
    let t = trace(&gw, &id).await;
    assert_eq!(
        t["requests"][0]["dropped_params"],
        json!([
            "logit_bias",
            "metadata",
            "n",
            "presence_penalty",
            "reasoning_effort",
            "seed"
        ])
    );
    // What is mapped arrives under Anthropic's names; what is named is not sent.
    let sent = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent["metadata"], json!({"user_id": "u-1"}));
    assert_eq!(sent["top_k"], 5);
    assert_eq!(sent["temperature"], 1.0);
    for name in [
        "logit_bias",
        "n",
        "presence_penalty",
        "reasoning_effort",
        "seed",
        "user",
    ] {
        assert!(
            sent.get(name).is_none(),
            "`{name}` reached Anthropic: {sent}"
        );
    }
    // A request with nothing to drop carries no header.
    let r = post_with(&gw, &chat_body("chat", "again", false), &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-trestle-dropped-params").is_none());
}

/// With a proxy named in the environment, upstream calls go through it (reqwest's transport,
/// which honours `HTTP_PROXY`): the upstream's own address here is one nothing listens on, so
/// only the proxy (the mock, which also answers absolute-form requests) can answer.
#[tokio::test]
async fn upstream_calls_go_through_a_proxy_named_in_the_environment() {
    let up = mock(&[]);
    let dead = free_port();
    let gw = gateway(
        &format!(
            "[providers.up]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{dead}/v1\"\n[routes.chat]\ntargets = [\"up/m1\"]\nretries = 0\n"
        ),
        &[("HTTP_PROXY", &up.url()), ("NO_PROXY", "")],
    );
    for stream in [false, true] {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&chat_body("chat", "through the proxy", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "stream: {stream}");
        let text = r.text().await.unwrap();
        assert!(text.contains("chat.completion"), "{text}");
    }
    // Without it, the same config cannot reach the upstream.
    let direct = gateway(
        &format!(
            "[providers.up]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{dead}/v1\"\n[routes.chat]\ntargets = [\"up/m1\"]\nretries = 0\n"
        ),
        &[],
    );
    let r = client()
        .post(format!("{}/v1/chat/completions", direct.url()))
        .json(&chat_body("chat", "direct", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}
