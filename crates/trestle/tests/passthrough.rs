//! Pass-through streaming end to end: the real `trestle serve` in front of a raw-socket
//! upstream that writes SSE in the shapes real providers show (events split across TCP reads,
//! multi-byte characters cut in two, `: ping` comments, `event:` lines, `\r\n` line endings,
//! an error mid-stream). A route with nothing reading its chunks is relayed as the upstream's
//! frames; a route with `confidence = true` goes through the parsed relay. Both must send the
//! client the same bytes and record the same trace.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const A: &str = r#"{"id":"chatcmpl-raw","object":"chat.completion.chunk","created":1700000000,"model":"m1-2025","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"system_fingerprint":"fp_raw","usage":null}"#;
const B1: &str = r#"{"id":"chatcmpl-raw","object":"chat.completion.chunk","created":1700000000,"model":"m1-2025","choices":[{"index":0,"delta":{"content":"Grüße aus 日本 ✓"},"finish_reason":null}],"system_fingerprint":"fp_raw","usage":null}"#;
const B2: &str = r#"{"id":"chatcmpl-raw","object":"chat.completion.chunk","created":1700000000,"model":"m1-2025","choices":[{"index":0,"delta":{"content":", said \"usage\": none"},"finish_reason":null}],"system_fingerprint":"fp_raw","usage":null}"#;
const C: &str = r#"{"id":"chatcmpl-raw","object":"chat.completion.chunk","created":1700000000,"model":"m1-2025","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"system_fingerprint":"fp_raw","usage":null}"#;
const USAGE: &str = r#"{"id":"chatcmpl-raw","object":"chat.completion.chunk","created":1700000000,"model":"m1-2025","choices":[],"usage":{"prompt_tokens":1200,"completion_tokens":900,"total_tokens":2100}}"#;
const ERROR: &str = r#"{"error":{"message":"upstream overloaded","type":"server_error"}}"#;

/// The upstream's bytes for a scenario, cut into the pieces it writes one by one.
fn scenario(name: &str) -> Vec<Vec<u8>> {
    let frame = |p: &str, nl: &str| format!("data: {p}{nl}{nl}");
    let mut cut_at: Vec<usize> = Vec::new();
    let text = match name {
        // The gateway's own form, one frame to a write: relayed byte for byte.
        "plain" => {
            let parts = [A, B1, B2, C, USAGE, "[DONE]"].map(|p| frame(p, "\n"));
            return parts.iter().map(|p| p.as_bytes().to_vec()).collect();
        }
        "split" => {
            let t = format!(
                ": ping\n\n{}{}event: message\nid: 3\n{}{}{}{}",
                frame(A, "\n"),
                frame(B1, "\n"),
                frame(B2, "\n"),
                frame(C, "\n"),
                frame(USAGE, "\n"),
                frame("[DONE]", "\n"),
            );
            // Inside `ü` and `日`, between a frame's two newlines, inside `data: `.
            cut_at.push(t.find('ü').unwrap() + 1);
            cut_at.push(t.find('日').unwrap() + 2);
            cut_at.push(t.find(&frame(C, "\n")).unwrap() + frame(C, "\n").len() - 1);
            cut_at.push(t.find(&frame(USAGE, "\n")).unwrap() + 3);
            t
        }
        "crlf" => {
            let t = format!(
                ": ping\r\n\r\n{}{}{}{}{}{}",
                frame(A, "\r\n"),
                frame(B1, "\r\n"),
                frame(B2, "\r\n"),
                frame(C, "\r\n"),
                frame(USAGE, "\r\n"),
                frame("[DONE]", "\r\n"),
            );
            // Between `\r` and `\n`, and inside `ü`.
            cut_at.push(t.find(&frame(B1, "\r\n")).unwrap() + frame(B1, "\r\n").len() - 1);
            cut_at.push(t.find('ü').unwrap() + 1);
            t
        }
        "error" => {
            let t = format!(
                "{}{}{}",
                frame(A, "\n"),
                frame(B1, "\n"),
                frame(ERROR, "\n")
            );
            cut_at.push(t.find(ERROR).unwrap() + 5);
            t
        }
        other => panic!("no scenario {other}"),
    };
    cut_at.sort_unstable();
    let bytes = text.into_bytes();
    let mut pieces = Vec::new();
    let mut from = 0;
    for at in cut_at {
        pieces.push(bytes[from..at].to_vec());
        from = at;
    }
    pieces.push(bytes[from..].to_vec());
    pieces
}

/// When set, the raw upstream answers 500 to everything.
static DOWN: AtomicBool = AtomicBool::new(false);

/// An OpenAI-compatible upstream on a raw socket: reads one request, picks the scenario named
/// in its last user message, writes it piece by piece (with pauses, so each piece is its own
/// TCP read) and closes.
async fn raw_upstream() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            sock.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                let body = loop {
                    let n = sock.read(&mut buf).await.unwrap();
                    assert!(n > 0, "the request ended early");
                    req.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&req).to_string();
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let length: usize = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if req.len() >= head_end + 4 + length {
                            break req[head_end + 4..head_end + 4 + length].to_vec();
                        }
                    }
                };
                if DOWN.load(Ordering::SeqCst) {
                    let _ = sock
                        .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let body: Value = serde_json::from_slice(&body).unwrap();
                let name = body["messages"][0]["content"].as_str().unwrap().to_string();
                sock.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n",
                )
                .await
                .unwrap();
                for piece in scenario(&name) {
                    sock.write_all(&piece).await.unwrap();
                    sock.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

struct Answer {
    body: Vec<u8>,
    headers: Vec<(String, String)>,
    trace: Value,
}

async fn ask(gw: &Proc, route: &str, scenario: &str, include_usage: bool) -> Answer {
    let mut body = chat_body(route, scenario, true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut headers: Vec<(String, String)> = r
        .headers()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "x-trestle-trace-id" | "traceparent" | "date" | "x-trestle-confidence"
            )
        })
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
        .collect();
    headers.sort();
    let body = r.bytes().await.unwrap().to_vec();
    let trace = trace(gw, &id).await["requests"][0].clone();
    Answer {
        body,
        headers,
        trace,
    }
}

/// The trace fields that must not depend on the relay.
fn recorded(t: &Value) -> Value {
    json!({
        "status": t["status"], "outcome": t["outcome"], "error": t["error"],
        "response": t["response"], "cost_usd": t["cost_usd"],
        "served_by": t["served_by"], "response_model": t["response_model"],
        "system_fingerprint": t["system_fingerprint"], "stream": t["stream"],
        "tokens": t["attempts"].as_array().unwrap().iter()
            .map(|a| json!([a["status"], a["tokens_in"], a["tokens_out"], a["cost_usd"]]))
            .collect::<Vec<_>>(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn pass_through_sends_and_records_what_the_parsed_relay_does() {
    let up = raw_upstream().await;
    let gw = gateway(
        &format!(
            r#"
[providers.raw]
kind = "openai"
base_url = "{up}/v1"

[models."raw/m1"]
price = {{ input = 0.15, output = 0.60 }}

[routes.plain]
targets = ["raw/m1"]
retries = 0

[routes.parsed]
targets = ["raw/m1"]
retries = 0
confidence = true
"#
        ),
        &[],
    );
    for name in ["plain", "split", "crlf", "error"] {
        for include_usage in [false, true] {
            let plain = ask(&gw, "plain", name, include_usage).await;
            let parsed = ask(&gw, "parsed", name, include_usage).await;
            let what = format!("{name}, include_usage {include_usage}");
            assert_eq!(
                String::from_utf8_lossy(&plain.body),
                String::from_utf8_lossy(&parsed.body),
                "{what}: the client gets the same bytes"
            );
            assert_eq!(plain.headers, parsed.headers, "{what}");
            assert_eq!(
                recorded(&plain.trace),
                recorded(&parsed.trace),
                "{what}: the same trace"
            );
            assert!(plain.trace["ttft_ms"].as_f64().is_some(), "{what}");
            let text = String::from_utf8(plain.body).unwrap();
            assert!(text.ends_with("data: [DONE]\n\n"), "{what}: {text}");
            assert_eq!(
                text.contains("\"usage\":{"),
                include_usage && name != "error",
                "{what}: usage only when asked for"
            );
            if name == "error" {
                assert_eq!(plain.trace["outcome"], "stream_error", "{what}");
                assert!(text.contains("upstream overloaded"), "{what}: {text}");
                assert!(text.contains("Grüße aus 日本 ✓"), "{what}: {text}");
            } else {
                let t = &plain.trace;
                assert_eq!(t["outcome"], "ok", "{what}");
                assert_eq!(
                    t["response"]["choices"][0]["message"]["content"],
                    "Grüße aus 日本 ✓, said \"usage\": none",
                    "{what}: the trace holds the answer"
                );
                assert_eq!(t["response"]["usage"]["completion_tokens"], 900, "{what}");
                assert_eq!(t["system_fingerprint"], "fp_raw", "{what}");
                assert_eq!(t["response_model"], "m1-2025", "{what}");
                // 1200 in at 0.15 and 900 out at 0.60 per million.
                let cost = t["cost_usd"].as_f64().unwrap();
                assert!((cost - 0.000_72).abs() < 1e-12, "{what}: cost {cost}");
            }
            if name == "plain" && include_usage {
                // The upstream's own bytes, up to its `[DONE]`, and the gateway's `[DONE]`.
                let upstream: String = [A, B1, B2, C, USAGE, "[DONE]"]
                    .iter()
                    .map(|p| format!("data: {p}\n\n"))
                    .collect();
                assert_eq!(text, upstream, "byte for byte");
            }
        }
    }

    // The `cache` fallback level kept the passed-through answer: with the upstream down, the
    // same request is served from it, as the parsed relay's is.
    DOWN.store(true, Ordering::SeqCst);
    for route in ["plain", "parsed"] {
        let a = ask(&gw, route, "split", false).await;
        let fallback = a
            .headers
            .iter()
            .find(|(k, _)| k == "x-trestle-fallback-level");
        assert_eq!(
            fallback.map(|(_, v)| v.as_str()),
            Some("cache"),
            "{route}: {:?}",
            a.headers
        );
        let text = String::from_utf8(a.body).unwrap();
        let content: String = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(
            content, "Grüße aus 日本 ✓, said \"usage\": none",
            "{route}: {text}"
        );
    }
}
