//! The judge against a real HTTP fake of an OpenAI-compatible upstream, on an ephemeral port:
//! it answers from the questions (`yes` when both mention the same fruit), slowly when asked
//! about "slow", and counts its calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use trestle_core::Config;

use super::*;
use crate::resilience::Registry;
use crate::runtime::Runtime;

#[test]
fn parses_yes_and_no_however_they_come() {
    for reply in [
        "yes",
        "Yes.",
        " YES",
        "**Yes**",
        "\"yes\"",
        "Yes, they do.",
        "y",
        "same",
    ] {
        assert_eq!(parse(reply), Some(true), "{reply:?}");
    }
    for reply in [
        "no",
        "No.",
        "NO!",
        "`no`",
        "No, one asks about days.",
        "different",
        "n",
    ] {
        assert_eq!(parse(reply), Some(false), "{reply:?}");
    }
    for reply in ["", "   ", "maybe", "I cannot tell", "42", "Yesterday"] {
        assert_eq!(parse(reply), None, "{reply:?}");
    }
}

#[test]
fn the_request_is_deterministic_and_short() {
    let req = request("small", "Can I return shoes?", "Can I return boots?").unwrap();
    assert_eq!(req.temperature, Some(0.0));
    assert_eq!(req.max_tokens, Some(3));
    let text = serde_json::to_string(&req).unwrap();
    assert!(text.contains("Question 1: Can I return shoes?"), "{text}");
    assert!(text.contains("Question 2: Can I return boots?"), "{text}");
}

/// The fake judge: `yes` when both questions name the same fruit, else `no`; "slow" in a
/// question makes it wait two seconds; "babble" makes it answer neither.
async fn fake_judge() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                assert_eq!(body["temperature"].as_f64(), Some(0.0));
                assert_eq!(body["max_tokens"], json!(3));
                let user = body["messages"][1]["content"].as_str().unwrap_or_default();
                let fruit = |line: &str| {
                    ["apple", "pear", "plum"]
                        .into_iter()
                        .find(|f| line.contains(f))
                };
                let mut lines = user.lines();
                let (q1, q2) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
                if user.contains("slow") {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                let reply = if user.contains("babble") {
                    "Let me think about it"
                } else if fruit(q1) == fruit(q2) {
                    "Yes."
                } else {
                    "no"
                };
                axum::Json(json!({
                    "id": "c1", "object": "chat.completion", "created": 0, "model": "judge",
                    "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": reply}}],
                    "usage": {"prompt_tokens": 40, "completion_tokens": 1, "total_tokens": 41}
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, calls)
}

fn runtime(url: &str) -> Runtime {
    let text = format!(
        "[providers.fake]\nkind = \"openai\"\nbase_url = \"{url}\"\napi_key = \"k\"\n\
         [routes.judge]\ntargets = [\"fake/judge\"]\n"
    );
    let config: Config = Config::parse(&text, &|_| None).unwrap().config;
    let registry = Arc::new(Registry::new(&config.cache));
    Runtime::build(config, registry).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn asks_over_http_remembers_verdicts_and_times_out_as_a_miss() {
    let (url, calls) = fake_judge().await;
    let rt = runtime(&url);
    let target = rt.resolve("judge").unwrap().targets[0].clone();
    let verdicts = Verdicts::new();
    let wait = Duration::from_millis(500);

    let a = verdicts
        .ask(&target, "Is an apple sweet?", "Are apples sweet?", wait)
        .await;
    assert_eq!(a.verdict, Verdict::Same);
    assert!(a.took.is_some());
    let b = verdicts
        .ask(&target, "Is an apple sweet?", "Is a pear sweet?", wait)
        .await;
    assert_eq!(b.verdict, Verdict::Different);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Remembered: no second call, no time.
    let again = verdicts
        .ask(&target, "Is an apple sweet?", "Is a pear sweet?", wait)
        .await;
    assert_eq!((again.verdict, again.took), (Verdict::Different, None));
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // Too slow: a timeout, within the time allowed, and not remembered.
    let started = std::time::Instant::now();
    let slow = verdicts
        .ask(&target, "slow apple", "slow apple pie", wait)
        .await;
    assert_eq!(slow.verdict, Verdict::Timeout);
    assert!(started.elapsed() < Duration::from_millis(1_500));
    assert_eq!(
        verdicts
            .cache
            .get(&pair_key(&target.name, "slow apple", "slow apple pie")),
        None
    );

    // Neither yes nor no: unclear, with what it said.
    let babble = verdicts.ask(&target, "babble", "babble", wait).await;
    assert_eq!(babble.verdict, Verdict::Unclear);
    assert!(babble.error.unwrap().contains("Let me think"));

    // A judge that cannot be reached is an error, never a panic or a hang.
    let dead = runtime("http://127.0.0.1:9/v1");
    let dead = dead.resolve("judge").unwrap().targets[0].clone();
    let e = verdicts.ask(&dead, "apple", "apple", wait).await;
    assert!(
        matches!(e.verdict, Verdict::Error | Verdict::Timeout),
        "{e:?}"
    );
}
