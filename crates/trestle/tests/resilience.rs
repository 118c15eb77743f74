//! End-to-end resilience: the fallback hierarchy, breakers, capacity overflow, hedging,
//! capability levels and hot reload, with the real `trestle serve` in front of real
//! `trestle mock` upstreams over loopback.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A port nothing listens on: connections are refused at once.
const DEAD: &str = "http://127.0.0.1:9/v1";

async fn ask(gw: &Proc, model: &str, text: &str, stream: bool) -> reqwest::Response {
    post_with(
        gw,
        &chat_body(model, text, stream),
        &[("x-trestle-user-id", "ada")],
    )
    .await
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

fn trace_id(r: &reqwest::Response) -> String {
    header(r, "x-trestle-trace-id").to_string()
}

fn reload_cli(gw: &Proc) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["reload", "--url", &gw.url()])
        .output()
        .expect("trestle reload");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn fallback_config(up_url: &str) -> String {
    format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{up_url}"
[providers.dead]
kind = "openai"
base_url = "{DEAD}"
[routes.answers]
class = "sync"
targets = ["up/m1"]
retries = 0
[routes.answers.fallback]
template = "Sorry {{{{ user_id }}}}, answers are paused. You asked: {{{{ last_user_message }}}}"
[routes.hidden]
targets = ["dead/m1"]
retries = 0
fallback = {{ cache = false, omitted = true, omitted_status = 503 }}
[routes.plain]
targets = ["dead/m1"]
retries = 0
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn fallback_levels_cache_template_omitted_and_hot_reload() {
    let up = mock(&[]);
    let gw = gateway(&fallback_config(&format!("{}/v1", up.url())), &[]);
    let config_file = gw.dir.join("trestle.toml");

    // Primary serves, and the answer is remembered.
    let r = ask(&gw, "answers", "What is Trestle?", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-trestle-fallback-level"), "primary");
    assert_eq!(answer_text(r).await, "What is Trestle?");

    // omitted: a structured feature_unavailable error with the configured status.
    let r = ask(&gw, "hidden", "x", false).await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "x-trestle-fallback-level"), "omitted");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "feature_unavailable");
    assert_eq!(v["error"]["code"], "feature_unavailable");
    // No fallback configured: the upstream error, as before.
    let r = ask(&gw, "plain", "x", false).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "upstream_error");

    // Reload onto a dead upstream: in-flight config swaps, health and memory carry over.
    std::fs::write(&config_file, fallback_config(DEAD)).unwrap();
    let (ok, out) = reload_cli(&gw);
    assert!(ok, "{out}");
    assert!(out.contains("routes: answers, hidden, plain"), "{out}");

    // cache: the same normalized request gets the remembered answer, marked stale.
    for stream in [false, true] {
        let r = ask(&gw, "answers", "  what is   TRESTLE? ", stream).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-trestle-fallback-level"), "cache");
        assert_eq!(header(&r, "x-trestle-cache"), "exact");
        assert_eq!(header(&r, "x-trestle-cache-stale"), "true");
        assert!(header(&r, "age").parse::<u64>().is_ok());
        let id = trace_id(&r);
        assert_eq!(answer_text(r).await, "What is Trestle?", "stream {stream}");
        let t = trace(&gw, &id).await;
        assert_eq!(t["requests"][0]["fallback_level"], "cache");
        assert_eq!(t["requests"][0]["served_by"], "up/m1");
        assert_eq!(t["requests"][0]["attempts"][0]["status"], "error");
    }

    // template: a request never answered before gets the rendered template.
    for stream in [false, true] {
        let r = ask(&gw, "answers", "Something new", stream).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-trestle-fallback-level"), "template");
        assert_eq!(
            answer_text(r).await,
            "Sorry ada, answers are paused. You asked: Something new"
        );
    }

    // A bad config is rejected with its line and key; the old one keeps serving.
    std::fs::write(
        &config_file,
        fallback_config(DEAD).replace("retries = 0", "retrys = 0"),
    )
    .unwrap();
    let (ok, out) = reload_cli(&gw);
    assert!(!ok);
    assert!(
        out.contains("rejected") && out.contains("retrys") && out.contains("line"),
        "{out}"
    );
    let r = ask(&gw, "answers", "Something new", false).await;
    assert_eq!(header(&r, "x-trestle-fallback-level"), "template");

    // SIGHUP reloads too: back onto the live upstream.
    std::fs::write(&config_file, fallback_config(&format!("{}/v1", up.url()))).unwrap();
    Command::new("kill")
        .args(["-HUP", &gw.child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ask(&gw, "answers", "Something new", false).await;
        if header(&r, "x-trestle-fallback-level") == "primary" {
            assert_eq!(answer_text(r).await, "Something new");
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP reload never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_breaker_opens_skips_the_target_and_probes_after_open_ms() {
    let up = mock(&["--fault-rate", "1", "--faults", "500"]);
    let backup = mock(&[]);
    let config = format!(
        "{}\n[models.\"up/m1\".breaker]\nconsecutive_failures = 3\nopen_ms = 400\n",
        reference_config(&up, &backup, "").replace("retries = 1", "retries = 0")
    );
    let gw = gateway(&config, &[]);
    for _ in 0..3 {
        let r = ask(&gw, "chat", "x", false).await;
        assert_eq!(header(&r, "x-trestle-fallback-level"), "model");
    }
    let r = ask(&gw, "chat", "x", false).await;
    assert_eq!(header(&r, "x-trestle-fallback-level"), "model");
    let t = trace(&gw, &trace_id(&r)).await;
    let first = &t["requests"][0]["attempts"][0];
    assert_eq!(first["status"], "skipped", "{t}");
    assert!(
        first["error"].as_str().unwrap().contains("circuit open"),
        "{first}"
    );
    let metrics = get_text(&format!("{}/metrics", gw.url())).await;
    assert!(
        metrics.contains(r#"trestle_breaker_state{target="up/m1"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains("trestle_targets_skipped_total"));

    // After open_ms one probe goes out; it fails, so the breaker opens again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let r = ask(&gw, "chat", "x", false).await;
    let t = trace(&gw, &trace_id(&r)).await;
    assert_eq!(t["requests"][0]["attempts"][0]["status"], "error", "{t}");
    let r = ask(&gw, "chat", "x", false).await;
    let t = trace(&gw, &trace_id(&r)).await;
    assert_eq!(t["requests"][0]["attempts"][0]["status"], "skipped", "{t}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_target_overflows_to_the_next_instead_of_queueing() {
    let up = mock(&["--ttft-ms", "400"]);
    let backup = mock(&[]);
    let config = format!(
        "{}\n[models.\"backup/m1\"]\nmax_concurrency = 100\n",
        reference_config(&up, &backup, "").replace(
            "[models.\"up/m1\"]\n",
            "[models.\"up/m1\"]\nmax_concurrency = 2\n"
        )
    );
    let gw = gateway(&config, &[]);
    let asks = (0..6).map(|i| {
        let gw_url = gw.url();
        async move {
            let r = client()
                .post(format!("{gw_url}/v1/chat/completions"))
                .json(&chat_body("chat", &format!("q{i}"), false))
                .send()
                .await
                .unwrap();
            let level = header(&r, "x-trestle-fallback-level").to_string();
            let id = trace_id(&r);
            assert_eq!(r.status(), 200);
            (level, id)
        }
    });
    let started = Instant::now();
    let results = futures_util::future::join_all(asks).await;
    let primary = results.iter().filter(|(l, _)| l == "primary").count();
    assert_eq!(primary, 2, "{results:?}");
    // The overflow did not wait for the slow, full target.
    assert!(started.elapsed() < Duration::from_millis(1_500));
    let (_, id) = results.iter().find(|(l, _)| l == "model").unwrap();
    let t = trace(&gw, id).await;
    let first = &t["requests"][0]["attempts"][0];
    assert_eq!(first["status"], "skipped");
    assert!(first["error"].as_str().unwrap().contains("max_concurrency"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hedged_request_takes_the_faster_target_and_cancels_the_slow_one() {
    let up = mock(&["--ttft-ms", "1500"]);
    let backup = mock(&[]);
    let gw = gateway(
        &reference_config(&up, &backup, "hedge = true\nhedge_after_ms = 100"),
        &[],
    );
    for stream in [false, true] {
        let started = Instant::now();
        let r = ask(&gw, "chat", "hedge me", stream).await;
        assert_eq!(header(&r, "x-trestle-fallback-level"), "model");
        let id = trace_id(&r);
        assert_eq!(answer_text(r).await, "hedge me");
        assert!(
            started.elapsed() < Duration::from_millis(1_000),
            "{:?}",
            started.elapsed()
        );
        let t = trace(&gw, &id).await;
        let attempts = t["requests"][0]["attempts"].as_array().unwrap();
        let status = |target: &str| {
            attempts
                .iter()
                .find(|a| a["target"] == target)
                .map(|a| a["status"].as_str().unwrap().to_string())
        };
        assert_eq!(status("backup/m1").as_deref(), Some("ok"), "{attempts:?}");
        assert_eq!(
            status("up/m1").as_deref(),
            Some("cancelled"),
            "{attempts:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn capability_levels_fall_with_health_survive_reload_and_recover() {
    let broken = mock(&["--fault-rate", "1", "--faults", "500"]);
    let healthy = mock(&[]);
    let config = |url: &str| {
        format!(
            r#"
[providers.up]
kind = "openai"
base_url = "{url}/v1"
[models."up/m1".breaker]
enabled = false
[routes.r]
targets = ["up/m1"]
retries = 1
backoff_ms = 1
[routes.r.fallback]
template = "limited"
[routes.r.capability]
window_ms = 5000
min_requests = 4
step_ms = 0
recover_ms = 1500
min_level = 2
[routes.r.capability.levels.4]
max_tokens = 5
"#
        )
    };
    let gw = gateway(&config(&broken.url()), &[]);
    let mut levels = Vec::new();
    for _ in 0..10 {
        let r = ask(&gw, "r", "one two three four five six seven", false).await;
        assert_eq!(r.status(), 200);
        levels.push(header(&r, "x-trestle-capability-level").to_string());
    }
    // Two bad attempts per request, four per step: 5 5 4 4 3 3 2 2 2 2.
    assert_eq!(
        levels,
        ["5", "5", "4", "4", "3", "3", "2", "2", "2", "2"],
        "{levels:?}"
    );
    // Level 2 serves fallbacks only: no call went out.
    let r = ask(&gw, "r", "x", false).await;
    assert_eq!(header(&r, "x-trestle-fallback-level"), "template");
    let t = trace(&gw, &trace_id(&r)).await;
    assert_eq!(t["requests"][0]["attempts"], json!([]));
    assert_eq!(t["requests"][0]["capability_level"], 2);

    // Reload onto a healthy upstream: the level carries over, then climbs a step per
    // recover_ms of health. Level 4 caps max_tokens at 5.
    std::fs::write(gw.dir.join("trestle.toml"), config(&healthy.url())).unwrap();
    assert!(reload_cli(&gw).0);
    let r = ask(&gw, "r", "x", false).await;
    assert_eq!(header(&r, "x-trestle-capability-level"), "2");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let r = ask(&gw, "r", "one two three four five six seven", false).await;
        let level = header(&r, "x-trestle-capability-level").to_string();
        let text = answer_text(r).await;
        if level == "4" {
            assert_eq!(text, "one two three four five", "level 4 caps max_tokens");
        }
        if seen.last() != Some(&level) {
            seen.push(level.clone());
        }
        if level == "5" {
            assert_eq!(text, "one two three four five six seven");
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, ["2", "3", "4", "5"]);
    let metrics = get_text(&format!("{}/metrics", gw.url())).await;
    assert!(
        metrics.contains(r#"trestle_capability_level{route="r"} 5"#),
        "{metrics}"
    );
}

#[test]
fn the_resilience_example_passes_config_check() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/resilient.toml");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("ok (2 providers, 2 routes"), "{stdout}");

    // A template that does not compile is caught by config check, with the route named.
    let dir = temp_dir("badtemplate");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("{% endif %}", ""),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("routes.support") && stdout.contains("template"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_every_target_unavailable_a_request_waits_for_the_soonest_within_its_budget() {
    let up = mock(&[]);
    let config = format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{}/v1"
[models."up/m1".breaker]
consecutive_failures = 2
open_ms = 300
[routes.chat]
class = "async"
targets = ["up/m1"]
retries = 0
[routes.chat.fallback]
template = "busy"
"#,
        up.url()
    );
    let gw = gateway(&config, &[]);
    // Two forced failures open the only target's breaker (the template answers them).
    for _ in 0..2 {
        let r = ask(&gw, "chat", "[fault:500] x", false).await;
        assert_eq!(header(&r, "x-trestle-fallback-level"), "template");
    }
    // The next request finds no target available, waits out the open breaker (well inside
    // the 20 s async budget) and is served by the probe instead of the template.
    let started = Instant::now();
    let r = ask(&gw, "chat", "after the outage", false).await;
    let waited = started.elapsed();
    assert_eq!(header(&r, "x-trestle-fallback-level"), "primary");
    let id = trace_id(&r);
    assert_eq!(answer_text(r).await, "after the outage");
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    let t = trace(&gw, &id).await;
    let statuses = attempt_statuses(&t);
    assert_eq!(statuses, ["skipped", "waited", "ok"], "{t}");

    // A sync route whose budget cannot cover the wait falls back at once instead.
    let short = config
        .replace("class = \"async\"", "class = \"sync\"")
        .replace("open_ms = 300", "open_ms = 5000");
    let gw = gateway(&short, &[]);
    for _ in 0..2 {
        ask(&gw, "chat", "[fault:500] x", false).await;
    }
    let started = Instant::now();
    let r = ask(&gw, "chat", "during the outage", false).await;
    assert_eq!(header(&r, "x-trestle-fallback-level"), "template");
    assert!(started.elapsed() < Duration::from_millis(500));
}

fn semantic_fallback_config(up_url: &str, embed_url: &str) -> String {
    format!(
        r#"
[providers.up]
kind = "openai"
base_url = "{up_url}"
[providers.emb]
kind = "openai"
base_url = "{embed_url}"
[embedders.mock]
kind = "provider"
target = "emb/embed"
[routes.answers]
targets = ["up/m1"]
retries = 0
[routes.answers.cache]
semantic = {{ embedder = "mock", threshold = 0.8 }}
[routes.answers.fallback]
cache_semantic = true
cache_semantic_threshold = 0.9
[routes.exact-only]
targets = ["up/m1"]
retries = 0
[routes.exact-only.cache]
semantic = {{ embedder = "mock", threshold = 0.8 }}
"#
    )
}

/// The `cache` level serves a semantic neighbour's answer, only where turned on, above its
/// stricter threshold, and says so. The response cache itself is off (`mode` defaults to
/// "off"): the answers are kept, and their queries indexed, for the fallback alone. The mock's
/// pseudo-embeddings count shared words: "Please how do I reset my password" is at about 0.93
/// of "How do I reset my password", "How do I change my password" at about 0.83.
#[tokio::test(flavor = "multi_thread")]
async fn the_cache_level_serves_a_close_semantic_neighbour_when_turned_on() {
    let up = mock(&[]);
    let embed = format!("{}/v1", up.url());
    let gw = gateway(
        &semantic_fallback_config(&format!("{}/v1", up.url()), &embed),
        &[],
    );
    for route in ["answers", "exact-only"] {
        let r = ask(&gw, route, "How do I reset my password", false).await;
        assert_eq!(header(&r, "x-trestle-fallback-level"), "primary");
        assert_eq!(header(&r, "x-trestle-cache"), "miss");
    }
    // The index is written off the request path.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Every target fails from now on; the embedder still answers.
    std::fs::write(
        gw.dir.join("trestle.toml"),
        semantic_fallback_config(DEAD, &embed),
    )
    .unwrap();
    let (ok, out) = reload_cli(&gw);
    assert!(ok, "{out}");

    for stream in [false, true] {
        let r = ask(&gw, "answers", "Please how do I reset my password", stream).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-trestle-fallback-level"), "cache");
        assert_eq!(header(&r, "x-trestle-cache"), "semantic");
        assert_eq!(header(&r, "x-trestle-cache-stale"), "true");
        let id = trace_id(&r);
        assert_eq!(answer_text(r).await, "How do I reset my password");
        let t = trace(&gw, &id).await;
        let req = &t["requests"][0];
        assert_eq!(req["fallback_level"], "cache", "{req}");
        assert_eq!(req["cache"], "semantic", "{req}");
        assert_eq!(req["served_by"], "up/m1");
        let similarity = req["cache_similarity"].as_f64().unwrap();
        assert!((0.9..1.0).contains(&similarity), "{similarity}");
    }

    // Close enough for the route's semantic cache, not for the stricter fallback threshold.
    let r = ask(&gw, "answers", "How do I change my password", false).await;
    assert_eq!(r.status(), 502);
    assert_eq!(header(&r, "x-trestle-cache"), "miss");

    // Off by default: the same neighbour on a route without `cache_semantic`.
    let r = ask(
        &gw,
        "exact-only",
        "Please how do I reset my password",
        false,
    )
    .await;
    assert_eq!(r.status(), 502);
    // The exact answer is still the `cache` level's.
    let r = ask(&gw, "exact-only", "how do I reset my password", false).await;
    assert_eq!(header(&r, "x-trestle-fallback-level"), "cache");
    assert_eq!(header(&r, "x-trestle-cache"), "exact");
}
