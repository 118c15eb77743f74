//! Tenant and route budgets end to end with the real binary: a tenant's budget, spent by
//! one of its keys, stops another key of the tenant; a route's budget stops unkeyed
//! requests; both answer 429 `budget_exceeded` naming what is spent, with the reset time;
//! a soft alert reaches `[alerts] webhook` once; a request whose estimated cost (input and
//! max_tokens at the route's price) would pass a budget is refused before the call.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

async fn call(gw: &Proc, key: Option<&str>, route: &str) -> (u16, Option<String>, Value) {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&chat_body(route, "hello there", false));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let reset = r
        .headers()
        .get("x-trestle-budget-reset")
        .map(|v| v.to_str().unwrap().to_string());
    (status, reset, r.json().await.unwrap_or(Value::Null))
}

/// Calls until refused (the spend is settled just after an answer, so a request or two
/// may slip by), and returns the refusal.
async fn refused(gw: &Proc, key: Option<&str>, route: &str) -> (Option<String>, Value) {
    for _ in 0..20 {
        let (status, reset, body) = call(gw, key, route).await;
        if status == 429 {
            return (reset, body);
        }
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never refused");
}

/// A webhook receiver on a free port: every POST's body, answered 200.
fn receiver() -> (u16, Arc<Mutex<Vec<Value>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = conn.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        break Some(buf[end + 4..end + 4 + length].to_vec());
                    }
                }
            };
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .ok();
            if let Some(body) = body {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
        }
    });
    (port, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_and_route_budgets_refuse_and_alert() {
    let dir = temp_dir("budgets");
    let db = dir.join("traces.db");
    let first = keys_cli(&db, &["create", "--name", "one", "--tenant", "acme"]);
    let second = keys_cli(&db, &["create", "--name", "two", "--tenant", "acme"]);
    let other = keys_cli(&db, &["create", "--name", "three", "--tenant", "beta"]);
    let (port, alerts) = receiver();
    // A request is estimated at about $0.0007 before the call (a few input tokens and the
    // routes' cap of 4 output tokens, at 100 USD per million tokens each way), within each
    // budget; it really costs more than $0.001 (the placeholder counts its prompt with its
    // framing): over each budget with the first request, past the alert share too.
    let config = format!(
        r#"
[store]
path = "{}"
flush_interval_ms = 5
[auth]
required = false
refresh_ms = 200
[alerts]
webhook = "http://127.0.0.1:{port}/hook"
timeout_ms = 2000
[tenants.acme]
budget_usd = "day:0.001"
alert_at = 0.5
[providers.local]
kind = "placeholder"
[routes.chat]
targets = ["local/echo"]
max_tokens = 4
[routes.capped]
targets = ["local/echo"]
max_tokens = 4
budget_usd = "month:0.001"
[routes.estimated]
targets = ["local/echo"]
budget_usd = "day:1"
[models."local/echo"]
price = {{ input = 100.0, output = 100.0 }}
"#,
        db.display()
    );
    let gw = gateway(&config, &[]);

    // The tenant: one key spends, the other is refused.
    assert_eq!(call(&gw, Some(&first), "chat").await.0, 200);
    let (reset, body) = refused(&gw, Some(&second), "chat").await;
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    assert_eq!(body["error"]["type"], "budget_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("tenant acme"), "{message}");
    assert!(reset.unwrap().ends_with("T00:00:00Z"));
    // Another tenant, and unkeyed requests, are not touched.
    assert_eq!(call(&gw, Some(&other), "chat").await.0, 200);
    assert_eq!(call(&gw, None, "chat").await.0, 200);

    // The route: unkeyed requests spend it, then are refused.
    assert_eq!(call(&gw, None, "capped").await.0, 200);
    let (reset, body) = refused(&gw, None, "capped").await;
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("route capped") && message.contains("monthly"),
        "{message}"
    );
    assert!(reset.is_some());
    // Keyed ones too.
    assert_eq!(call(&gw, Some(&other), "capped").await.0, 429);

    // An estimate over what is left is refused before the call, and says what to do: 100,000
    // output tokens may cost $10 of the $1; 1,000 fit.
    let ask = |max_tokens: u32| {
        let mut body = chat_body("estimated", "hello there", false);
        body["max_tokens"] = max_tokens.into();
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&body)
            .send()
    };
    let r = ask(100_000).await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("route estimated has $1.0000 left")
            && message.contains("may cost up to $10.00")
            && message.contains("lower max_tokens"),
        "{message}"
    );
    assert_eq!(ask(1_000).await.unwrap().status().as_u16(), 200);

    // One soft alert, for the tenant, however many requests went past the share.
    let deadline = Instant::now() + Duration::from_secs(10);
    while alerts.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no alert reached the webhook");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = alerts.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let alert = &got[0];
    assert_eq!(alert["kind"], "budget");
    assert_eq!(alert["scope"], "tenant");
    assert_eq!(alert["name"], "acme");
    assert_eq!(alert["period"], "day");
    assert_eq!(alert["limit_usd"], 0.001);
    assert_eq!(alert["share"], 0.5);
    assert!(alert["spent_usd"].as_f64().unwrap() > 0.0005, "{alert}");
    assert!(alert["reset_at"].as_str().unwrap().ends_with("T00:00:00Z"));

    // A gateway started on the same store knows what the tenant and the route spent.
    drop(gw);
    let again = gateway(&config, &[]);
    assert_eq!(call(&again, None, "capped").await.0, 429);
    assert_eq!(call(&again, Some(&second), "chat").await.0, 429);
    assert_eq!(call(&again, Some(&other), "chat").await.0, 200);
}
