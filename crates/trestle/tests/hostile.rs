//! Hostile peers: upstreams that send a line with no end, an endless stream or a body of
//! unbounded size, and clients that trickle their headers or body (slow loris). Each gets a
//! bounded-memory error, never an OOM or a stuck connection.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a hostile upstream sends after reading a request.
#[derive(Clone, Copy)]
enum Endless {
    /// SSE headers, `data: ` and then 100 MB of `x` with no newline.
    Line,
    /// Valid chunks as fast as the socket takes them, never `[DONE]`.
    Stream,
    /// A 200 JSON answer with no length, then bytes forever.
    Body,
}

/// Serves `kind` on a loopback port; returns the base URL and a counter of bytes sent.
async fn hostile(kind: Endless) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move { serve_hostile(sock, kind, counter).await });
        }
    });
    (url, sent)
}

async fn serve_hostile(
    mut sock: TcpStream,
    kind: Endless,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    // Read the request head and its body (Content-Length).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Ok(n) = sock.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    let (head, piece): (&str, Vec<u8>) = match kind {
        Endless::Line => (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: ",
            vec![b'x'; 64 * 1024],
        ),
        Endless::Stream => (
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n",
            br#"data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"m","choices":[{"index":0,"delta":{"content":"and more "},"finish_reason":null}]}

"#
            .repeat(200),
        ),
        Endless::Body => (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"id\":\"",
            vec![b'y'; 64 * 1024],
        ),
    };
    if sock.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    // At most 100 MB, stopping as soon as the gateway hangs up.
    let limit = 100 * 1024 * 1024;
    let mut total = 0;
    while total < limit {
        if sock.write_all(&piece).await.is_err() {
            return;
        }
        total += piece.len();
        sent.fetch_add(piece.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

fn config(url: &str) -> String {
    format!(
        r#"
[server]
header_read_timeout_ms = 1000
body_read_timeout_ms = 1000
[providers.bad]
kind = "openai"
base_url = "{url}"
max_response_bytes = 2000000
max_event_bytes = 100000
[routes.chat]
class = "async"
targets = ["bad/m"]
retries = 0
"#
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn runaway_upstreams_get_a_bounded_error_not_an_oom() {
    for (kind, stream, what) in [
        (Endless::Line, true, "max_event_bytes"),
        (Endless::Stream, true, "max_response_bytes"),
        (Endless::Body, false, "max_response_bytes"),
    ] {
        let (url, sent) = hostile(kind).await;
        let gw = gateway(&config(&url), &[]);
        let started = Instant::now();
        let r = post_with(&gw, &chat_body("chat", "hello", stream), &[]).await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(15), "{what}: took {took:?}");
        if stream && status == 200 {
            // The stream had started: it ends with an error event naming the limit.
            let last_error = body
                .split("\n\n")
                .filter_map(|e| e.strip_prefix("data: "))
                .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                .find(|v| v.get("error").is_some())
                .unwrap_or_else(|| panic!("{what}: no error event in {}", body.len()));
            assert!(
                last_error["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(what),
                "{last_error}"
            );
            assert!(body.ends_with("data: [DONE]\n\n"));
        } else {
            assert_eq!(status, 502, "{what}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(
                v["error"]["message"].as_str().unwrap().contains(what),
                "{v}"
            );
        }
        let rss = rss_kib(gw.child.id());
        let upstream_sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "{what}: upstream sent {} KiB before the cut; gateway RSS {rss} KiB",
            upstream_sent / 1024
        );
        assert!(upstream_sent < 100 * 1024 * 1024, "the gateway hung up");
        assert!(rss < 100 * 1024, "gateway RSS {rss} KiB");
        // The gateway still serves.
        let h = get_json(&format!("{}/health", gw.url())).await;
        assert_eq!(h["status"], "ok");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_loris_clients_are_cut_off() {
    let up = mock(&[]);
    let gw = gateway(&config(&format!("{}/v1", up.url())), &[]);
    let addr = format!("127.0.0.1:{}", gw.port);

    // Headers one byte at a time: the connection is closed after header_read_timeout_ms.
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n";
    let mut closed = false;
    for b in head.iter().cycle().take(60) {
        if sock.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        let mut byte = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), sock.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "a trickling client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );

    // A body one byte at a time: 408 with an OpenAI-shaped error after body_read_timeout_ms.
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    let body = br#"{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    for b in body.iter() {
        if sock.write_all(&[*b]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(250), sock.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout_ms"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Both refusals are counted.
    let metrics = get_text(&format!("{}/metrics", gw.url())).await;
    for reason in ["header_timeout", "body_timeout"] {
        assert!(
            metrics.contains(&format!(
                "trestle_requests_refused_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {metrics}"
        );
    }

    // And a normal client is served as usual.
    let r = post_with(&gw, &chat_body("chat", "hello", false), &[]).await;
    assert_eq!(r.status(), 200);
}
