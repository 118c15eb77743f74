//! Drift and alerts end to end with the real binary: a trace store holding two windows with a
//! known shift and a pair without one, read through `GET /v1/drift` and `trestle drift
//! report`; and a mock upstream whose `system_fingerprint` changes, which fires one alert to a
//! real webhook receiver, keeps it firing without sending it again, and resolves it.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const MINUTE: i64 = 60_000;

/// A small seeded generator (xorshift), so the windows are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[((self.next() * items.len() as f64) as usize).min(items.len() - 1)]
    }
}

const SHIPPING: &[&str] = &[
    "where is my parcel",
    "my order has not arrived yet",
    "I need the tracking number for my delivery",
    "when will the package ship",
    "the courier lost my box",
];
const BILLING: &[&str] = &[
    "please refund my payment, I was charged twice on my card last month",
    "the invoice you sent me is wrong and I would like a corrected one",
    "cancel my subscription and stop billing my credit card immediately",
    "why was I billed for a plan I never signed up for",
];
const GERMAN: &[&str] = &[
    "wo ist mein Paket, es sollte schon vor zwei Tagen ankommen",
    "meine Bestellung ist immer noch nicht angekommen, bitte helfen Sie mir",
    "ich brauche die Sendungsnummer für meine Lieferung so schnell wie möglich",
];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Writes `n` requests of `route` spread over `[start, start + span)` into the store.
#[allow(clippy::too_many_arguments)]
fn write_window(
    db: &rusqlite::Connection,
    rng: &mut Rng,
    route: &str,
    start: i64,
    span: i64,
    n: usize,
    shifted: bool,
) {
    for i in 0..n {
        let text = if !shifted {
            rng.pick(SHIPPING).to_string()
        } else if rng.next() < 0.5 {
            rng.pick(BILLING).to_string()
        } else {
            rng.pick(GERMAN).to_string()
        };
        let refused = rng.next() < if shifted { 0.3 } else { 0.02 };
        let answer = if refused {
            "I'm sorry, but I can't help with that."
        } else {
            "Your parcel ships tomorrow."
        };
        let tokens_out = if shifted { 80.0 } else { 30.0 } + rng.next() * 30.0;
        let fallback = if rng.next() < if shifted { 0.3 } else { 0.02 } {
            "model"
        } else {
            "primary"
        };
        let request = json!({"model": route, "messages": [{"role": "user", "content": text}]});
        let response = json!({"choices": [{"message": {"role": "assistant", "content": answer}}]});
        db.execute(
            "INSERT INTO requests (span_id, trace_id, started_at_ms, duration_ms, route, class, stream, status,
                outcome, fallback_level, served_by, tokens_in, tokens_out, tokens_cached, cost_usd, attempts,
                request, response, guardrails, response_model, system_fingerprint)
             VALUES (?1, ?1, ?2, 12.5, ?3, 'progressive', 0, 200, 'ok', ?4, 'up/m1', ?5, ?6, 0, 0, 1, ?7, ?8,
                '[]', 'm1', 'fp_a')",
            rusqlite::params![
                format!("{route}-{start}-{i}"),
                start + span * i as i64 / n as i64,
                route,
                fallback,
                (text.len() / 4 + 1) as i64,
                tokens_out as i64,
                request.to_string(),
                response.to_string(),
            ],
        )
        .unwrap();
    }
}

fn signals<'a>(report: &'a Value, status: &str) -> Vec<&'a str> {
    ["inputs", "outputs"]
        .iter()
        .flat_map(|s| report[*s].as_array().unwrap())
        .filter(|s| s["status"] == status)
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_report_flags_the_shift_and_not_the_null() {
    let gw = gateway(
        "[store]\npath = \"traces.db\"\n[providers.local]\nkind = \"placeholder\"\n[routes.chat]\ntargets = [\"local/echo\"]\n",
        &[],
    );
    // The windows go into the gateway's store (its schema made by the store itself).
    let path = gw.dir.join("traces.db");
    drop(trestle_gateway::store::SqliteStore::open(&path).unwrap());
    let db = rusqlite::Connection::open(&path).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let now = now_ms();
    let mut rng = Rng(0x5eed_1234);
    // Reference: the hour before the last one; current: the last hour.
    for (route, shifted) in [("steady", false), ("moved", true)] {
        write_window(
            &db,
            &mut rng,
            route,
            now - 115 * MINUTE,
            50 * MINUTE,
            400,
            false,
        );
        write_window(
            &db,
            &mut rng,
            route,
            now - 55 * MINUTE,
            50 * MINUTE,
            400,
            shifted,
        );
    }

    let url = |route: &str| format!("{}/v1/drift?window=1h&reference=1h&route={route}", gw.url());
    let null = get_json(&url("steady")).await;
    assert_eq!(null["object"], "drift_report", "{null}");
    assert_eq!(null["current"]["requests"], 400, "{null}");
    assert_eq!(null["reference"]["requests"], 400, "{null}");
    assert_eq!(null["drifted"], 0, "{null:#}");
    assert!(signals(&null, "drifted").is_empty(), "{null:#}");
    let judged = signals(&null, "ok");
    for name in [
        "input_length_psi",
        "input_tokens_wasserstein",
        "language_js",
        "topic_auc",
        "refusal_rate",
        "fallback_rate",
        "output_length_psi",
    ] {
        assert!(judged.contains(&name), "{name} has no verdict: {null:#}");
    }

    let shift = get_json(&url("moved")).await;
    let drifted = signals(&shift, "drifted");
    for name in [
        "input_length_psi",
        "input_length_wasserstein",
        "input_tokens_psi",
        "input_tokens_wasserstein",
        "language_js",
        "topic_auc",
        "output_length_psi",
        "output_length_wasserstein",
        "refusal_rate",
        "fallback_rate",
    ] {
        assert!(drifted.contains(&name), "{name} not flagged: {shift:#}");
    }
    assert!(!drifted.contains(&"guardrail_rate"), "{shift:#}");
    let psi = shift["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "input_length_psi")
        .unwrap();
    assert_eq!(psi["method"], "psi");
    assert_eq!(psi["scope"], "route:moved");
    assert!(psi["value"].as_f64().unwrap() > psi["threshold"].as_f64().unwrap());
    assert_eq!(
        (psi["reference_n"].as_u64(), psi["current_n"].as_u64()),
        (Some(400), Some(400))
    );

    // A window with little traffic gives no verdict.
    write_window(
        &db,
        &mut rng,
        "quiet",
        now - 115 * MINUTE,
        50 * MINUTE,
        5,
        false,
    );
    write_window(
        &db,
        &mut rng,
        "quiet",
        now - 55 * MINUTE,
        50 * MINUTE,
        5,
        true,
    );
    let quiet = get_json(&url("quiet")).await;
    assert!(signals(&quiet, "drifted").is_empty(), "{quiet:#}");
    assert!(!signals(&quiet, "not_enough_data").is_empty(), "{quiet:#}");

    // Bad windows are 400s that say why.
    let r = client()
        .get(format!("{}/v1/drift?window=7 days", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The command line: from the gateway, and from the store of the config.
    let out = std::process::Command::new(BIN)
        .args([
            "drift",
            "report",
            "--window",
            "1h",
            "--reference",
            "1h",
            "--route",
            "moved",
            "--url",
        ])
        .arg(gw.url())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("INPUTS") && text.contains("OUTPUTS") && text.contains("PROVIDERS"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("input_length_psi") && l.contains("DRIFTED")),
        "{text}"
    );
    let out = std::process::Command::new(BIN)
        .args([
            "drift",
            "report",
            "--config",
            "trestle.toml",
            "--window",
            "1h",
            "--reference",
            "1h",
            "--route",
            "steady",
            "--json",
        ])
        .current_dir(&gw.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(local["drifted"], 0, "{local:#}");
    assert_eq!(local["current"]["requests"], 400);
}

/// Receives webhook posts.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), got)
}

async fn ask(gw: &Proc, stream: bool) -> String {
    let r = post_with(gw, &chat_body("chat", "hello there", stream), &[]).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-trestle-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    answer_text(r).await;
    id
}

fn events(got: &Arc<Mutex<Vec<Value>>>, event: &str) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|v| v["event"] == event)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fingerprint_change_fires_one_alert_and_resolves() {
    let (hook, got) = receiver().await;
    let up = mock(&["--system-fingerprint", "fp_a"]);
    let config = format!(
        r#"
[store]
path = "traces.db"
flush_interval_ms = 5
[providers.up]
kind = "openai"
base_url = "{}/v1"
[routes.chat]
targets = ["up/gpt-4o-mini"]
[drift]
window = "2s"
reference = "60s"
interval = "300ms"
# Only the provider signal has enough data for a verdict here.
min_samples = 100000
[alerts]
webhook = "{hook}"
ui_url = "http://ui.test"
"#,
        up.url()
    );
    let gw = gateway(&config, &[]);

    // The route targets an unpinned alias: config check says so, and still passes.
    let out = std::process::Command::new(BIN)
        .args(["config", "check", "trestle.toml"])
        .current_dir(&gw.dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("routes.chat.targets[0]: `up/gpt-4o-mini` is an unpinned alias"),
        "{text}"
    );

    // What the upstream reports is on the trace, streamed or not.
    let started = Instant::now();
    for stream in [false, true] {
        let id = ask(&gw, stream).await;
        let t = trace(&gw, &id).await;
        assert_eq!(t["requests"][0]["response_model"], "gpt-4o-mini", "{t:#}");
        assert_eq!(t["requests"][0]["system_fingerprint"], "fp_a", "{t:#}");
    }
    // fp_a for 2.5 s: then the reference window holds it.
    while started.elapsed() < Duration::from_millis(2500) {
        ask(&gw, false).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        got.lock().unwrap().is_empty(),
        "nothing changed yet: {:?}",
        got.lock().unwrap()
    );

    // The provider rolls out a new backend under the same model name.
    let r = client()
        .post(format!("{}/mock/fingerprint", up.url()))
        .json(&json!({"system_fingerprint": "fp_b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let switched = Instant::now();
    let key = "provider_fingerprint:target:up/gpt-4o-mini";
    let mut fired_at = None;
    let mut resolved = false;
    while switched.elapsed() < Duration::from_secs(20) {
        ask(&gw, switched.elapsed().as_millis().is_multiple_of(2)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if fired_at.is_none() && !events(&got, "alert.firing").is_empty() {
            fired_at = Some(switched.elapsed());
            // While it fires, the list has it.
            let alerts = get_json(&format!("{}/v1/alerts?state=firing", gw.url())).await;
            assert_eq!(alerts["object"], "list");
            let a = &alerts["data"][0];
            assert_eq!(
                (a["id"].as_str(), a["state"].as_str()),
                (Some(key), Some("firing")),
                "{alerts:#}"
            );
        }
        if !events(&got, "alert.resolved").is_empty() {
            resolved = true;
            break;
        }
    }
    let fired = events(&got, "alert.firing");
    assert_eq!(fired.len(), 1, "one firing, not one per report: {fired:#?}");
    let alert = &fired[0];
    assert_eq!(alert["id"], key, "{alert:#}");
    assert_eq!(alert["signal"], "provider_fingerprint");
    assert_eq!(alert["scope"], "target:up/gpt-4o-mini");
    assert_eq!(alert["link"], "http://ui.test/ui/drift");
    assert!(
        alert["detail"].as_str().unwrap().contains("fp_b"),
        "{alert:#}"
    );
    assert!(
        fired_at.is_some_and(|t| t < Duration::from_secs(3)),
        "fired at {fired_at:?}"
    );
    assert!(resolved, "never resolved: {:#?}", got.lock().unwrap());
    let resolved = events(&got, "alert.resolved");
    assert_eq!(resolved.len(), 1, "{resolved:#?}");
    assert_eq!(resolved[0]["id"], key);
    assert!(resolved[0]["resolved_at_ms"].as_i64().is_some());

    // The list: resolved, seen by more than one report while it fired.
    let alerts = get_json(&format!("{}/v1/alerts", gw.url())).await;
    let a = alerts["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == key)
        .unwrap();
    assert_eq!(a["state"], "resolved", "{alerts:#}");
    assert!(
        a["last_seen_ms"].as_i64().unwrap() > a["first_seen_ms"].as_i64().unwrap(),
        "dedup was not exercised: {a:#}"
    );
    // The change is in the report too.
    let report = get_json(&format!("{}/v1/drift?window=1m&reference=1m", gw.url())).await;
    let changes = report["providers"]["changes"].as_array().unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c["from"]["system_fingerprint"] == "fp_a"
                && c["to"]["system_fingerprint"] == "fp_b"),
        "{report:#}"
    );
    let metrics = get_text(&format!("{}/metrics", gw.url())).await;
    assert!(
        metrics.contains("trestle_alerts_total{state=\"firing\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("trestle_alerts_total{state=\"resolved\"} 1"),
        "{metrics}"
    );
}
