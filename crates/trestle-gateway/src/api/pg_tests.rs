//! Two gateways on one PostgreSQL database, through their HTTP endpoints: a label moved on
//! one is seen by the other, and experiment readouts, online evals, drift, alerts and their
//! UI pages are read from PostgreSQL.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::state::SharedState;

const SUPPORT: &str = "variables = { shop = { type = \"string\", required = true } }\n\
[[versions]]\nversion = 1\nsystem = \"You are a helpful support agent for {{ shop }}.\"\n\
[[versions]]\nversion = 2\nsystem = \"You are a concise support agent for {{ shop }}.\"\n\
[labels]\nproduction = 1\n";

fn config(url: &str, prompts: &std::path::Path) -> trestle_core::Config {
    let text = format!(
        r#"
[store]
kind = "postgres"
url = "{url}"
flush_interval_ms = 20

[prompts]
dir = "{dir}"

[feedback.thumbs]
type = "boolean"

[providers.local]
kind = "placeholder"

[routes.chat]
targets = ["local/transcript"]
prompt = "support-answer"

[experiments.tone]
route = "chat"
variants = {{ control = "support-answer@1", concise = "support-answer@2" }}
metrics = ["thumbs", "online_eval"]

[evals.online]
sample = 1.0
assert = [{{ type = "not_contains", value = "as an AI" }}]
"#,
        dir = prompts.display()
    );
    trestle_core::Config::parse(&text, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

/// A gateway's state, built as `serve` builds it: on the runtime's blocking pool (so the
/// online evaluator gets the runtime), never on an async task.
async fn gateway(config: trestle_core::Config) -> (SharedState, String) {
    let state = tokio::task::spawn_blocking(move || crate::server::build_state(config, None, None))
        .await
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(crate::server::serve(
        state.clone(),
        listener,
        std::future::pending(),
    ));
    (state, url)
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn get_json(url: &str) -> Value {
    let (status, body) = get(url).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `url` until `done` holds for its JSON (traces and scores are written a moment
/// after the answer).
async fn eventually(url: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get_json(url).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{url} never got there: {v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn two_gateways_share_labels_readouts_evals_and_alerts_on_postgres() {
    let Some(db_url) = crate::store::pg_server::database() else {
        return;
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(two_gateways(db_url));
}

async fn two_gateways(db_url: String) {
    crate::providers::install_tls();
    let dir = std::env::temp_dir().join(format!(
        "trestle-api-pg-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("support-answer.toml"), SUPPORT).unwrap();
    let (_a, a) = gateway(config(&db_url, &dir)).await;
    let (b_state, b) = gateway(config(&db_url, &dir)).await;
    let client = reqwest::Client::new();
    for i in 0..20 {
        let r = client
            .post(format!("{a}/v1/chat/completions"))
            .header("x-trestle-user-id", format!("user-{i}"))
            .header("content-type", "application/json")
            .body(json!({"model": "chat", "messages": [{"role": "user", "content": "Where is my parcel?"}],
                "prompt_variables": {"shop": "Acme"}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }
    // A label moved on gateway a reaches gateway b within its refresh.
    let moved = client
        .post(format!("{a}/v1/prompts/support-answer/labels"))
        .header("content-type", "application/json")
        .body(json!({"label": "production", "version": 2, "by": "ana"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200, "{}", moved.text().await.unwrap());
    let on_b = eventually(&format!("{b}/v1/prompts/support-answer"), |v| {
        v["labels"]["production"] == 2
    })
    .await;
    let history = on_b["history"].as_array().unwrap();
    assert!(
        history.iter().any(|m| m["by"] == "ana" && m["to"] == 2),
        "{on_b:#}"
    );
    // Gateway b reads the experiment's traffic and online evals that a served.
    let readout = eventually(&format!("{b}/v1/experiments/tone"), |v| {
        let requests: u64 = v["variants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["traffic"]["requests"].as_u64())
            .sum();
        requests == 20
    })
    .await;
    assert_eq!(readout["control"], "control");
    let online = eventually(&format!("{b}/v1/evals/online?days=2"), |v| {
        v["days"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    assert_eq!(online["days"][0]["scored"], 20, "{online:#}");
    // Drift and alerts are read from PostgreSQL too.
    let drift = get_json(&format!("{b}/v1/drift?window=1h&reference=1h")).await;
    assert_eq!(drift["current"]["requests"], 20, "{drift:#}");
    let alerts = get_json(&format!("{b}/v1/alerts")).await;
    assert_eq!(alerts["object"], "list");
    // A stop made on b is persisted for a.
    b_state
        .experiments
        .stop("tone", "concise", "stopped by the test");
    let stopped = eventually(&format!("{a}/v1/experiments/tone"), |v| {
        v["status"] == "stopped"
    })
    .await;
    assert_eq!(stopped["stops"][0]["variant"], "concise");
    for page in ["/ui/drift", "/ui/evals", "/ui/experiments"] {
        let (status, body) = get(&format!("{b}{page}")).await;
        assert_eq!(status, 200, "{page}: {body}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
