//! Prompts, experiments and feedback end to end with the real binary: prompt files rendered
//! into requests (the placeholder's `transcript` model answers with what it received),
//! labels moved by API and kept across restarts, sticky variants with their headers,
//! feedback checked and tied to the answer, the Bayesian readout, a bad canary stopped and
//! staying stopped after a restart, and regenerations recorded as feedback.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const PROMPT: &str = r#"description = "Answers support questions"
variables = { shop = { type = "string", required = true } }
[[versions]]
version = 1
system = "You are a helpful support agent for {{ shop }}."
[[versions]]
version = 2
system = "You are a concise support agent for {{ shop }}. Answer in one sentence."
[labels]
production = 1
"#;

fn config(extra: &str) -> String {
    format!(
        r#"
[store]
path = "traces.db"
flush_interval_ms = 5
[prompts]
dir = "prompts"
[feedback.thumbs]
type = "boolean"
[feedback.stars]
type = "number"
min = 1
max = 5
[providers.local]
kind = "placeholder"
[routes.chat]
targets = ["local/transcript"]
prompt = "support-answer"
{extra}
"#
    )
}

/// A gateway whose folder has `prompts/support-answer.toml`.
fn gateway_with_prompts(config_text: &str, dir: Option<&Path>) -> Proc {
    let port = free_port();
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| temp_dir("prompts"));
    std::fs::create_dir_all(dir.join("prompts")).unwrap();
    std::fs::write(dir.join("prompts/support-answer.toml"), PROMPT).unwrap();
    std::fs::write(dir.join("trestle.toml"), config_text).unwrap();
    let log = std::fs::File::create(dir.join(format!("trestle-{port}.log"))).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--config",
            "trestle.toml",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(&dir)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    common::wait_ready(port, &mut child)
        .unwrap_or_else(|status| panic!("the gateway exited ({status}); see {}", dir.display()));
    Proc { child, port, dir }
}

async fn ask(gw: &Proc, user: &str, body_extra: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut body =
        json!({"model": "chat", "messages": [{"role": "user", "content": "Where is my parcel?"}]});
    for (k, v) in body_extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-trestle-user-id", user)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

async fn post(gw: &Proc, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}{path}", gw.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_render_into_requests_and_labels_move_and_stay() {
    let gw = gateway_with_prompts(&config(""), None);
    let (status, h, v) = ask(&gw, "ana", json!({"prompt_variables": {"shop": "Acme"}})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(header(&h, "x-trestle-prompt-version"), "support-answer@1");
    assert_eq!(
        content(&v),
        "system: You are a helpful support agent for Acme.\nuser: Where is my parcel?"
    );

    // A missing or mistyped variable is a 400 naming it; so is one the prompt does not declare.
    let (status, _, v) = ask(&gw, "ana", json!({})).await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("prompt_variables.shop")),
        "{v}"
    );
    let (status, _, v) = ask(&gw, "ana", json!({"prompt_variables": {"shop": 3}})).await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("must be a string"),
        "{v}"
    );
    let (_, _, v) = ask(
        &gw,
        "ana",
        json!({"prompt_variables": {"shop": "A", "shp": "B"}}),
    )
    .await;
    assert_eq!(v["error"]["param"], "prompt_variables.shp");

    // The trace records the version; the label moves by API, recorded, and takes effect now.
    let (status, m) = post(
        &gw,
        "/v1/prompts/support-answer/labels",
        json!({"label": "production", "version": 2, "by": "ana"}),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(
        (m["move"]["from"].as_u64(), m["move"]["to"].as_u64()),
        (Some(1), Some(2))
    );
    let (_, h, v) = ask(&gw, "ana", json!({"prompt_variables": {"shop": "Acme"}})).await;
    assert_eq!(header(&h, "x-trestle-prompt-version"), "support-answer@2");
    assert!(content(&v).contains("concise support agent for Acme"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let trace = trace(&gw, header(&h, "x-trestle-trace-id")).await;
    assert_eq!(
        trace["requests"][0]["prompt_version"], "support-answer@2",
        "{trace}"
    );
    let (status, bad) = post(
        &gw,
        "/v1/prompts/support-answer/labels",
        json!({"label": "production", "version": 9}),
    )
    .await;
    assert_eq!(status, 400, "{bad}");

    // A request (an eval of a candidate) can pin a version; a version that does not exist is
    // a 400 naming the field.
    let (_, h, _) = ask(
        &gw,
        "ana",
        json!({"prompt_variables": {"shop": "Acme"}, "prompt_version": "support-answer@1"}),
    )
    .await;
    assert_eq!(header(&h, "x-trestle-prompt-version"), "support-answer@1");
    let (status, _, v) = ask(
        &gw,
        "ana",
        json!({"prompt_variables": {"shop": "Acme"}, "prompt_version": "support-answer@7"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("prompt_version")),
        "{v}"
    );
    // A suite runs a prompt version that no label points at yet.
    std::fs::write(
        gw.dir.join("golden.jsonl"),
        "{\"id\": \"a\", \"input\": \"Where is my parcel?\", \"metadata\": {\"prompt_variables\": {\"shop\": \"Acme\"}}, \"assert\": [{\"type\": \"contains\", \"value\": \"helpful support agent for Acme\"}]}\n",
    )
    .unwrap();
    std::fs::write(gw.dir.join("suite.toml"), "dataset = \"golden.jsonl\"\nroute = \"chat\"\nprompt = \"support-answer@1\"\n[gates]\ndefault = { min_pass_rate = 1.0 }\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "eval",
            "run",
            "suite.toml",
            "--url",
            &gw.url(),
            "--db",
            "evals.db",
        ])
        .current_dir(&gw.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A restart keeps the API's move; the history says who moved what.
    let dir = gw.dir.clone();
    drop(gw);
    let gw = gateway_with_prompts(&config(""), Some(&dir));
    let (_, h, _) = ask(&gw, "ana", json!({"prompt_variables": {"shop": "Acme"}})).await;
    assert_eq!(header(&h, "x-trestle-prompt-version"), "support-answer@2");
    let p = get_json(&format!("{}/v1/prompts/support-answer", gw.url())).await;
    let moves = p["history"].as_array().unwrap();
    assert!(
        moves
            .iter()
            .any(|m| m["by"] == "ana" && m["to"] == 2 && m["source"] == "api"),
        "{p}"
    );

    // Editing a version that was served is refused at the next start... by config check too.
    std::fs::write(
        dir.join("prompts/support-answer.toml"),
        PROMPT.replace("helpful support", "cheerful support"),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["prompt", "list", "--config", "trestle.toml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("versions are immutable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_prompt_files_fail_config_check_with_their_line() {
    let dir = temp_dir("bad-prompts");
    std::fs::create_dir_all(dir.join("prompts")).unwrap();
    std::fs::write(dir.join("trestle.toml"), config("")).unwrap();
    for (text, want) in [
        (
            "[[versions]]\nversion = 1\nsystem = \"Hi {{ shopp }}\"\n",
            "support-answer.toml:2: version 1 uses undeclared variable(s) shopp",
        ),
        (
            "variables = { shop = { type = \"string\" } }\n[[versions]]\nversion = 1\nsystem = \"Hi {% if %}\"\n",
            "support-answer.toml:3: version 1: the template does not compile",
        ),
        (
            "[[versions]]\nversion = 1\nsystem = \"Hi\"\n[[versions]]\nversion = 2\nsystem = \"Hi\"\n",
            "support-answer.toml:5: version 2 has the same content as version 1",
        ),
    ] {
        std::fs::write(dir.join("prompts/support-answer.toml"), text).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["config", "check", "trestle.toml"])
            .current_dir(&dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success() && stdout.contains(want), "{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiments_assign_sticky_variants_and_read_out_feedback() {
    let gw = gateway_with_prompts(
        &config(
            r#"[experiments.tone]
route = "chat"
unit = "user"
variants = { control = "support-answer@1", concise = "support-answer@2" }
traffic = { control = 50, concise = 50 }
metrics = ["thumbs", "regenerated", "online_eval", "quality_engagement", "latency_ms"]
min_duration_h = 0
[evals.online]
sample = 1.0
max_per_minute = 10000
assert = [{ type = "contains", value = "concise" }]"#,
        ),
        None,
    );
    // Each user sees one variant, every time; the header and the rendered prompt agree.
    let mut seen: std::collections::HashMap<String, (String, String)> =
        std::collections::HashMap::new();
    for round in 0..2 {
        for u in 0..120 {
            let user = format!("user-{u}");
            let (status, h, v) =
                ask(&gw, &user, json!({"prompt_variables": {"shop": "Acme"}})).await;
            assert_eq!(status, 200);
            let variant = header(&h, "x-trestle-variant").to_string();
            let version = header(&h, "x-trestle-prompt-version").to_string();
            assert_eq!(
                version,
                if variant == "control" {
                    "support-answer@1"
                } else {
                    "support-answer@2"
                }
            );
            assert_eq!(content(&v).contains("concise"), variant == "concise");
            if round == 0 {
                seen.insert(
                    user,
                    (variant, header(&h, "x-trestle-trace-id").to_string()),
                );
            } else {
                assert_eq!(seen[&user].0, variant, "{user} flipped variant");
            }
        }
    }
    let concise = seen.values().filter(|(v, _)| v == "concise").count();
    assert!(
        (35..=85).contains(&concise),
        "a 50/50 split gave {concise}/120"
    );

    // Feedback: checked, idempotent, tied to the variant. Concise users are happier.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (first_user, (_, first_trace)) = seen.iter().next().unwrap();
    let (status, v) = post(
        &gw,
        "/v1/feedback",
        json!({"trace_id": first_trace, "name": "thumbs", "value": "yes"}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("value")),
        "{v}"
    );
    let (status, v) = post(
        &gw,
        "/v1/feedback",
        json!({"trace_id": first_trace, "name": "likes", "value": true}),
    )
    .await;
    assert_eq!(
        (status, v["error"]["param"].as_str()),
        (400, Some("name")),
        "{v}"
    );
    let (status, _) = post(
        &gw,
        "/v1/feedback",
        json!({"trace_id": "0123456789abcdef0123456789abcdef", "name": "thumbs", "value": true}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &gw,
        "/v1/feedback",
        json!({"trace_id": first_trace, "name": "stars", "value": 9}),
    )
    .await;
    assert_eq!(status, 400);
    for (i, (_, (variant, trace_id))) in seen.iter().enumerate() {
        let up = if variant == "concise" {
            i % 10 != 0
        } else {
            i % 10 < 4
        };
        let body =
            json!({"trace_id": trace_id, "name": "thumbs", "value": up, "id": format!("fb-{i}")});
        let (status, v) = post(&gw, "/v1/feedback", body.clone()).await;
        assert_eq!(status, 201, "{v}");
        if i == 0 {
            let (again, v) = post(&gw, "/v1/feedback", body).await;
            assert_eq!(
                (again, &v["created"]),
                (200, &json!(false)),
                "a retry with the same id is not counted twice"
            );
        }
    }
    let listed = get_json(&format!("{}/v1/feedback?trace_id={first_trace}", gw.url())).await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        1,
        "{listed} ({first_user})"
    );
    assert_eq!(listed["data"][0]["variant"], seen[first_user].0.as_str());

    let r = get_json(&format!("{}/v1/experiments/tone", gw.url())).await;
    assert_eq!(r["name"], "tone");
    assert_eq!(r["status"], "running");
    let variants = r["variants"].as_array().unwrap();
    let by = |n: &str| variants.iter().find(|v| v["name"] == n).unwrap().clone();
    let (c, k) = (by("control"), by("concise"));
    assert_eq!(
        c["n"].as_u64().unwrap() + k["n"].as_u64().unwrap(),
        120,
        "{r}"
    );
    assert!(
        k["mean"].as_f64().unwrap() > 0.8 && c["mean"].as_f64().unwrap() < 0.5,
        "{r}"
    );
    assert!(k["prob_best"].as_f64().unwrap() > 0.99, "{r}");
    assert!(
        k["ci_low"].as_f64().unwrap() < k["mean"].as_f64().unwrap()
            && k["mean"].as_f64().unwrap() < k["ci_high"].as_f64().unwrap()
    );
    assert!(c["expected_loss"].as_f64().unwrap() > k["expected_loss"].as_f64().unwrap());
    assert!(
        r["decision"].as_str().unwrap().starts_with("ship concise"),
        "{r}"
    );
    // Every configured metric is read out: online evals (here: "is the answer concise")
    // pass only for the concise variant, and quality-gated engagement needs both.
    let m = &r["metrics"];
    let arm = |metric: &str, v: &str| {
        m[metric]["variants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == v)
            .unwrap()
            .clone()
    };
    assert_eq!(arm("online_eval", "concise")["mean"], 1.0, "{m}");
    assert_eq!(arm("online_eval", "control")["mean"], 0.0);
    assert!(
        arm("online_eval", "control")["n"].as_u64().unwrap() >= 40,
        "{m}"
    );
    // Half the answers got feedback (the first of each user's two), nearly all of it up.
    let engaged = arm("quality_engagement", "concise")["mean"]
        .as_f64()
        .unwrap();
    assert!((0.4..0.5).contains(&engaged), "{m}");
    assert_eq!(
        arm("quality_engagement", "control")["mean"],
        0.0,
        "thumbs up on failing answers do not count"
    );
    assert_eq!(arm("regenerated", "control")["mean"], 0.0);
    assert_eq!(m["latency_ms"]["higher_is_better"], false);

    // Shipping moves the label, so the route's default becomes the winner.
    let (status, m) = post(
        &gw,
        "/v1/experiments/tone/ship",
        json!({"variant": "concise"}),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["move"]["to"], 2);
    let out = std::process::Command::new(BIN)
        .args(["experiment", "show", "tone", "--url", &gw.url()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("concise") && table.contains("decision: ship concise"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_stopped_and_stays_stopped() {
    let bad = mock(&["--fault-rate", "0.3", "--faults", "500"]);
    let extra = format!(
        r#"[providers.bad]
kind = "openai"
base_url = "{}/v1"
[routes.plain]
targets = ["local/echo"]
retries = 0
[experiments.canary]
route = "plain"
unit = "request"
control = "stable"
variants = {{ stable = {{ params = {{ temperature = 0 }} }}, canary = {{ targets = ["bad/echo"] }} }}
traffic = {{ stable = 80, canary = 20 }}
min_duration_h = 0"#,
        bad.url()
    );
    let gw = gateway_with_prompts(&config(&extra), None);
    let n = std::sync::atomic::AtomicU64::new(0);
    let send = async |gw: &Proc| {
        // A new question each time: a cached answer would hide the failures as fallbacks.
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": "plain", "messages": [{"role": "user", "content": format!("question {i}")}]}))
            .send()
            .await
            .unwrap();
        header(r.headers(), "x-trestle-variant").to_string()
    };
    let mut stopped_after = None;
    for i in 1..=800 {
        send(&gw).await;
        let r = get_json(&format!("{}/v1/experiments/canary", gw.url())).await;
        if i % 20 == 0 && r["status"] == "stopped" {
            stopped_after = Some(i);
            assert!(
                r["decision"].as_str().unwrap().contains("stopped canary"),
                "{r}"
            );
            break;
        }
    }
    let at = stopped_after.expect("the canary was not stopped");
    assert!(at <= 600, "stopped after {at} requests");
    // Everything goes to control now, also after a restart.
    for _ in 0..30 {
        assert_eq!(send(&gw).await, "stable");
    }
    let dir = gw.dir.clone();
    drop(gw);
    let gw = gateway_with_prompts(&config(&extra), Some(&dir));
    for _ in 0..30 {
        assert_eq!(send(&gw).await, "stable");
    }
    let r = get_json(&format!("{}/v1/experiments/canary", gw.url())).await;
    assert_eq!(r["status"], "stopped", "{r}");
    assert!(
        r["stops"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("error"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regenerated_answer_is_recorded_as_feedback() {
    let gw = gateway_with_prompts(&config(""), None);
    let ask_in = async |text: &str| {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .header("x-trestle-conversation-id", "conv-1")
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": text}], "prompt_variables": {"shop": "Acme"}}))
            .send()
            .await
            .unwrap();
        header(r.headers(), "x-trestle-trace-id").to_string()
    };
    let first = ask_in("Where is my parcel?").await;
    let second = ask_in("Where is my parcel?").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fb = get_json(&format!("{}/v1/feedback?conversation_id=conv-1", gw.url())).await;
    let rows = fb["data"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{fb}");
    assert_eq!(
        (
            rows[0]["trace_id"].as_str(),
            rows[0]["name"].as_str(),
            rows[0]["source"].as_str()
        ),
        (Some(first.as_str()), Some("regenerated"), Some("implicit"))
    );
    assert_ne!(first, second);
}
