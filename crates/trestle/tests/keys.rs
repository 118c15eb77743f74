//! Client keys end to end with the real binary: keys made with `trestle keys`, required once
//! one exists; a missing, malformed, wrong or revoked key gets 401, a route outside the
//! key's list 403, a spent budget 429 `budget_exceeded` with its reset time, a per-minute
//! limit 429 with `Retry-After`; a tenant reads only its own traces (by id, by
//! conversation, in the UI); admin endpoints need an admin key.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

async fn call(gw: &Proc, key: Option<&str>, route: &str, conversation: &str) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-trestle-conversation-id", conversation)
        .json(&chat_body(route, "hello there", false));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

async fn get(gw: &Proc, key: Option<&str>, path: &str) -> (u16, Value) {
    let mut req = client().get(format!("{}{path}", gw.url()));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Waits for the store to have a trace (traces are written within a moment).
async fn stored(gw: &Proc, key: &str, trace: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = get(gw, Some(key), &format!("/v1/traces/{trace}")).await;
        if status == 200 {
            return body;
        }
        assert!(Instant::now() < deadline, "trace {trace} never stored");
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_gate_the_api_and_tenants_see_only_their_own() {
    let dir = temp_dir("keys");
    let db = dir.join("traces.db");
    let admin = keys_cli(
        &db,
        &["create", "--name", "ops", "--tenant", "ops", "--admin"],
    );
    let acme = keys_cli(
        &db,
        &[
            "create",
            "--name",
            "acme-app",
            "--tenant",
            "acme",
            "--routes",
            "chat",
            "--budget-usd",
            "day:0.001",
        ],
    );
    let beta = keys_cli(
        &db,
        &[
            "create", "--name", "beta-app", "--tenant", "beta", "--rpm", "3",
        ],
    );
    assert!(acme.starts_with("tk_") && acme.len() == 56, "{acme}");
    let listed = keys_cli(&db, &["list"]);
    assert!(
        listed.contains("acme-app") && !listed.contains(&acme[16..]),
        "{listed}"
    );

    let gw = gateway(
        &format!(
            r#"
[store]
path = "{}"
flush_interval_ms = 5
[auth]
refresh_ms = 200
[providers.local]
kind = "placeholder"
[routes.chat]
targets = ["local/echo"]
# Estimated at under $0.001 before the call (4 output tokens at most), a request really
# costs more: acme's first request spends its $0.001.
max_tokens = 4
[routes.other]
targets = ["local/echo"]
[models."local/echo"]
price = {{ input = 100.0, output = 100.0 }}
"#,
            db.display()
        ),
        &[],
    );

    // No key, a malformed one, a well-formed stranger: 401, OpenAI-shaped.
    let r = call(&gw, None, "chat", "c0").await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing API key")
    );
    let r = call(&gw, Some("sk-not-ours"), "chat", "c0").await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed")
    );
    let stranger = format!("tk_{}_{}", "a".repeat(12), "b".repeat(40));
    assert_eq!(call(&gw, Some(&stranger), "chat", "c0").await.status(), 401);

    // A route outside the key's list: 403.
    let r = call(&gw, Some(&acme), "other", "conv-a").await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_allowed");

    // Each tenant's traffic.
    let r = call(&gw, Some(&acme), "chat", "conv-a").await;
    assert_eq!(r.status(), 200);
    let acme_trace = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let r = call(&gw, Some(&beta), "chat", "conv-b").await;
    assert_eq!(r.status(), 200);
    let beta_trace = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mine = stored(&gw, &beta, &beta_trace).await;
    assert_eq!(mine["requests"][0]["tenant"], "beta");
    assert!(mine["requests"][0]["key_id"].as_str().unwrap().len() == 12);
    stored(&gw, &acme, &acme_trace).await;

    // Another tenant's trace: 404 by id, nothing by conversation, in the list or the UI.
    let (status, _) = get(&gw, Some(&acme), &format!("/v1/traces/{beta_trace}")).await;
    assert_eq!(status, 404);
    let (status, _) = get(&gw, Some(&acme), "/v1/conversations/conv-b").await;
    assert_eq!(status, 404);
    let (_, list) = get(&gw, Some(&acme), "/v1/traces?conversation_id=conv-b").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let (_, list) = get(&gw, Some(&acme), "/v1/traces").await;
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["trace_id"] != beta_trace.as_str())
    );
    let ui = client()
        .get(format!("{}/ui/traces/{beta_trace}", gw.url()))
        .header("cookie", format!("trestle_key={acme}"))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), 404);
    // Feedback on another tenant's answer: as if the trace did not exist.
    let fb = client()
        .post(format!("{}/v1/feedback", gw.url()))
        .bearer_auth(&acme)
        .json(&json!({"trace_id": beta_trace, "name": "thumbs", "value": true}))
        .send()
        .await
        .unwrap();
    assert!(fb.status() == 404 || fb.status() == 400, "{}", fb.status());
    // The admin key reads everything.
    let (status, _) = get(&gw, Some(&admin), &format!("/v1/traces/{beta_trace}")).await;
    assert_eq!(status, 200);

    // The UI without a key goes to the login page; with the tenant's cookie it shows only
    // the tenant's traces.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect
        .get(format!("{}/ui", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/ui/login")
    );
    let page = client()
        .get(format!("{}/ui", gw.url()))
        .header("cookie", format!("trestle_key={beta}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&beta_trace[..12]) && !page.contains(&acme_trace[..12]));

    // Admin endpoints: an admin key, not a tenant's.
    let (status, body) = get(&gw, Some(&acme), "/metrics").await;
    assert_eq!(status, 403, "{body}");
    let metrics = client()
        .get(format!("{}/metrics", gw.url()))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let reload = |k: &str| {
        client()
            .post(format!("{}/admin/reload", gw.url()))
            .bearer_auth(k.to_string())
            .send()
    };
    assert_eq!(reload(&beta).await.unwrap().status(), 403);
    assert_eq!(reload(&admin).await.unwrap().status(), 200);
    let (status, report) = get(&gw, Some(&admin), "/v1/keys").await;
    assert_eq!(status, 200);
    assert!(report["tenants"].as_array().unwrap().len() >= 3);

    // The budget: acme's first answer cost more than its $0.001 a day.
    let r = call(&gw, Some(&acme), "chat", "conv-a").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("x-trestle-budget-reset"));
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "budget_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resets at")
    );

    // Three requests a minute for beta (one made above).
    assert_eq!(call(&gw, Some(&beta), "chat", "conv-b").await.status(), 200);
    assert_eq!(call(&gw, Some(&beta), "chat", "conv-b").await.status(), 200);
    let r = call(&gw, Some(&beta), "chat", "conv-b").await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    // Revoked: refused within the refresh interval.
    keys_cli(&db, &["revoke", "beta-app"]);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = get(&gw, Some(&beta), "/v1/traces").await;
        if status == 401 {
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("revoked")
            );
            break;
        }
        assert!(Instant::now() < deadline, "a revoked key still works");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_api_is_open_and_bad_key_flags_are_named() {
    let dir = temp_dir("nokeys");
    let db = dir.join("traces.db");
    for (args, needle) in [
        (vec!["--budget-usd", "week:5"], "--budget-usd"),
        (vec!["--budget-usd", "day:5,00"], "not a positive number"),
        (vec!["--expires", "someday"], "--expires"),
        (vec!["--rpm", "0"], "--rpm"),
    ] {
        let out = Command::new(BIN)
            .args(["keys", "create", "--name", "x", "--tenant", "t"])
            .args(&args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let gw = gateway(
        &format!(
            "[store]\npath = \"{}\"\n[providers.local]\nkind = \"placeholder\"\n[routes.chat]\ntargets = [\"local/echo\"]\n",
            db.display()
        ),
        &[],
    );
    // An SDK's placeholder key is ignored when no key is required.
    assert_eq!(call(&gw, Some("unused"), "chat", "c").await.status(), 200);
    assert_eq!(call(&gw, None, "chat", "c").await.status(), 200);
    let (status, _) = get(&gw, None, "/metrics").await;
    assert_eq!(status, 200);
    std::fs::remove_dir_all(dir).ok();
}
