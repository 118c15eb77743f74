//! The chaos suite: two `trestle mock` upstreams inject 500, 429, hangs, slow tokens,
//! malformed bodies and mid-stream disconnects at a combined 30% rate; 2,000 mixed streamed
//! and non-streamed requests go through two routes with a template fallback (one hedged,
//! with capability levels). Every answer must be OpenAI-shaped, every trace must be kept,
//! and no request may outlive its route's budget by more than `MARGIN`.
//!
//! The figures (valid-response rate, fallback levels, latency against the budget) are
//! printed and written to `$CARGO_TARGET_TMPDIR/chaos-report.json`.

// Test code: a failed expectation is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};

const REQUESTS: usize = 2_000;
const CONCURRENCY: usize = 32;
/// The routes' whole-request budget (`timeout_ms`).
const BUDGET: Duration = Duration::from_millis(2_000);
/// How far past the budget a request may end: scheduling on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(300);
/// Distinct prompts: repeats let the `cache` level serve.
const PROMPTS: usize = 150;

fn config(a: &Proc, b: &Proc) -> String {
    let route = |name: &str, extra: &str| {
        format!(
            r#"
[routes.{name}]
class = "progressive"
targets = ["a/m1", "b/m1"]
timeout_ms = {budget}
ttft_timeout_ms = 400
attempt_timeout_ms = 500
retries = 1
backoff_ms = 20
backoff_max_ms = 300
{extra}
[routes.{name}.fallback]
template = "The assistant is busy. A safe answer to: {{{{ last_user_message }}}}"
"#,
            budget = BUDGET.as_millis()
        )
    };
    format!(
        r#"
[server]
shutdown_grace_ms = 2000
[providers.a]
kind = "openai"
base_url = "{a}/v1"
[providers.b]
kind = "openai"
base_url = "{b}/v1"
{plain}
{hedged}
[routes.hedged.capability]
window_ms = 5000
min_requests = 20
"#,
        a = a.url(),
        b = b.url(),
        plain = route("chaos", ""),
        hedged = route("hedged", "hedge = true\nhedge_after_ms = 150"),
    )
}

/// What one request saw.
#[derive(Debug)]
#[allow(dead_code)] // `route` and `status` are read through `Debug` in failure messages.
struct Seen {
    route: &'static str,
    stream: bool,
    status: u16,
    level: String,
    capability: String,
    trace_id: String,
    elapsed: Duration,
    /// `None` when valid; else what was wrong.
    invalid: Option<String>,
    /// A stream that failed after its first tokens and ended with an error event.
    interrupted: bool,
}

/// Checks an answer's shape: a chat.completion, or chunks ending in `[DONE]` (an error event
/// may come just before it).
fn check(stream: bool, status: u16, content_type: &str, body: &str) -> Result<bool, String> {
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    if !stream {
        let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
        if v["object"] != "chat.completion" || !v["choices"][0]["message"]["content"].is_string() {
            return Err(format!("not a chat.completion: {body}"));
        }
        return Ok(false);
    }
    if !content_type.starts_with("text/event-stream") {
        return Err(format!("stream answered as {content_type}"));
    }
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.strip_prefix("data: ")
                .ok_or_else(|| format!("bad SSE frame {e:?}"))
        })
        .collect::<Result<_, _>>()?;
    if events.last() != Some(&"[DONE]") {
        return Err(format!("stream did not end with [DONE]: {body}"));
    }
    let mut interrupted = false;
    let n = events.len();
    for (i, e) in events[..n - 1].iter().enumerate() {
        let v: Value = serde_json::from_str(e).map_err(|err| format!("bad event {e}: {err}"))?;
        if let Some(err) = v.get("error") {
            if i != n - 2 || !err["message"].is_string() || !err["code"].is_string() {
                return Err(format!("misplaced or malformed error event: {e}"));
            }
            interrupted = true;
        } else if v["object"] != "chat.completion.chunk" {
            return Err(format!("not a chunk: {e}"));
        }
    }
    if n < 3 && !interrupted {
        return Err(format!("empty stream: {body}"));
    }
    Ok(interrupted)
}

async fn one(gw_url: String, i: usize) -> Seen {
    let route = if i.is_multiple_of(2) {
        "chaos"
    } else {
        "hedged"
    };
    let stream = (i / 2).is_multiple_of(2);
    let body = chat_body(route, &format!("chaos question {}", i % PROMPTS), stream);
    let started = Instant::now();
    let sent = client()
        .post(format!("{gw_url}/v1/chat/completions"))
        .timeout(Duration::from_secs(30))
        .json(&body)
        .send()
        .await;
    let r = match sent {
        Ok(r) => r,
        Err(e) => {
            return Seen {
                route,
                stream,
                status: 0,
                level: String::new(),
                capability: String::new(),
                trace_id: String::new(),
                elapsed: started.elapsed(),
                invalid: Some(format!("transport: {e}")),
                interrupted: false,
            };
        }
    };
    let h = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (level, capability, trace_id, content_type) = (
        h("x-trestle-fallback-level"),
        h("x-trestle-capability-level"),
        h("x-trestle-trace-id"),
        h("content-type"),
    );
    let status = r.status().as_u16();
    let text = r.text().await;
    let elapsed = started.elapsed();
    let (invalid, interrupted) = match text {
        Err(e) => (Some(format!("body: {e}")), false),
        Ok(text) => match check(stream, status, &content_type, &text) {
            Ok(interrupted) => (None, interrupted),
            Err(why) => (Some(why), false),
        },
    };
    Seen {
        route,
        stream,
        status,
        level,
        capability,
        trace_id,
        elapsed,
        invalid,
        interrupted,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_requests_through_thirty_percent_faults() {
    let faults = "500,429,hang,slow,malformed,disconnect";
    let faulty = |seed: &str| {
        mock(&[
            "--fault-rate",
            "0.3",
            "--faults",
            faults,
            "--retry-after",
            "0.05",
            "--seed",
            seed,
        ])
    };
    let (a, b) = (faulty("1"), faulty("2"));
    let mut gw = gateway(&config(&a, &b), &[]);
    let url = gw.url();

    let started = Instant::now();
    let seen: Vec<Seen> = futures_util::stream::iter(0..REQUESTS)
        .map(|i| one(url.clone(), i))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let wall = started.elapsed();

    let ready = get_json(&format!("{url}/ready")).await;
    let exit = gw.terminate(Duration::from_secs(30));
    assert!(exit.success(), "gateway exit: {exit}");

    // Every trace was kept, with the level the client saw.
    let db = rusqlite::Connection::open(gw.dir.join(".trestle/trestle.db")).unwrap();
    let stored: BTreeMap<String, String> = db
        .prepare("SELECT trace_id, fallback_level FROM requests")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();

    let attempts: BTreeMap<String, i64> = db
        .prepare(
            "SELECT CASE WHEN status = 'skipped' THEN 'skipped: ' || \
             rtrim(substr(error, 1, instr(error || '(', '(') - 1)) ELSE status END, COUNT(*) \
             FROM attempts GROUP BY 1",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();

    // Figures.
    let invalid: Vec<&Seen> = seen.iter().filter(|s| s.invalid.is_some()).collect();
    let interrupted = seen.iter().filter(|s| s.interrupted).count();
    let mut levels: BTreeMap<String, usize> = BTreeMap::new();
    let mut capability: BTreeMap<String, usize> = BTreeMap::new();
    for s in &seen {
        *levels.entry(s.level.clone()).or_default() += 1;
        *capability.entry(s.capability.clone()).or_default() += 1;
    }
    let mut latency = BTreeMap::new();
    for (name, pick) in [
        ("all", None),
        ("non-streamed", Some(false)),
        ("streamed", Some(true)),
    ] {
        let mut d: Vec<Duration> = seen
            .iter()
            .filter(|s| pick.is_none_or(|p| s.stream == p))
            .map(|s| s.elapsed)
            .collect();
        d.sort();
        latency.insert(
            name,
            json!({"p50_ms": percentile(&d, 0.5), "p90_ms": percentile(&d, 0.9),
                "p99_ms": percentile(&d, 0.99), "max_ms": percentile(&d, 1.0)}),
        );
    }
    let over_budget: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.elapsed > BUDGET + MARGIN)
        .collect();
    let mismatched = seen
        .iter()
        .filter(|s| stored.get(&s.trace_id) != Some(&s.level))
        .count();
    let report = json!({
        "requests": REQUESTS,
        "concurrency": CONCURRENCY,
        "fault_rate": 0.3,
        "faults": faults,
        "wall_s": wall.as_secs_f64(),
        "valid": REQUESTS - invalid.len(),
        "valid_rate": (REQUESTS - invalid.len()) as f64 / REQUESTS as f64,
        "streams_interrupted_after_first_token": interrupted,
        "fallback_levels": levels,
        "attempts": attempts,
        "capability_levels": capability,
        "latency": latency,
        "budget_ms": BUDGET.as_millis() as u64,
        "margin_ms": MARGIN.as_millis() as u64,
        "over_budget_plus_margin": over_budget.len(),
        "traces_stored": stored.len(),
        "traces_dropped": ready["traces"]["dropped"],
        "trace_level_mismatches": mismatched,
    });
    let text = serde_json::to_string_pretty(&report).unwrap();
    eprintln!("chaos report:\n{text}");
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-report.json"),
        &text,
    );

    assert!(
        invalid.is_empty(),
        "{} answers were not OpenAI-shaped, e.g. {:?}",
        invalid.len(),
        &invalid[..invalid.len().min(3)]
    );
    assert!(
        seen.iter().all(|s| s.status == 200),
        "a template route answers every request"
    );
    assert!(
        over_budget.is_empty(),
        "{} requests outlived the budget + margin, e.g. {:?}",
        over_budget.len(),
        &over_budget[..over_budget.len().min(3)]
    );
    assert_eq!(stored.len(), REQUESTS, "every trace is stored");
    assert_eq!(ready["traces"]["dropped"], 0);
    assert_eq!(mismatched, 0, "the trace records the level the client saw");
    // The faults were real: the levels below primary all served some requests.
    for level in ["primary", "model"] {
        assert!(levels.get(level).copied().unwrap_or(0) > 0, "{levels:?}");
    }
    assert!(
        levels.get("cache").copied().unwrap_or(0) + levels.get("template").copied().unwrap_or(0)
            > 0,
        "{levels:?}"
    );
    assert!(
        interrupted > 0,
        "some streams broke after their first token"
    );
}
