//! Anomaly flags on traces (docs/observability.md, "Anomaly flags"), set by the trace
//! writer before a batch is stored, so the request path does none of this work:
//!
//! - `tool_failure_unmentioned`: the request ends with a tool result that failed, and the
//!   answer says nothing of a failure (the model confabulated around it);
//! - `tool_loop`: the conversation so far calls one tool with the same arguments three or
//!   more times;
//! - `grounding`: a grounding guardrail found claims the context does not support;
//! - `over_budget`: the answer took longer than its interaction class's budget (sync 1 s;
//!   progressive first token 500 ms or total 5 s; async 20 s).
//!
//! The same checks run over the app's OTLP spans when a trace or conversation is shown
//! ([`span_flags`]): a tool span with an error status followed by an answer that does not
//! mention it, and one tool called with the same arguments three or more times.

use std::collections::HashMap;

use serde_json::Value;

use crate::store::{Body, Trace};

pub const TOOL_FAILURE_UNMENTIONED: &str = "tool_failure_unmentioned";
pub const TOOL_LOOP: &str = "tool_loop";
pub const GROUNDING: &str = "grounding";
pub const OVER_BUDGET: &str = "over_budget";

/// Every flag, for the UI's filter.
pub const ALL: [&str; 4] = [TOOL_FAILURE_UNMENTIONED, TOOL_LOOP, GROUNDING, OVER_BUDGET];

/// How many identical tool calls make a loop.
const LOOP_CALLS: usize = 3;

/// Sets `flags` on each trace of a batch.
pub fn flag_all(traces: &mut [Trace]) {
    for t in traces {
        t.flags = flags(t);
    }
}

/// The flags a trace earns.
pub fn flags(t: &Trace) -> Vec<String> {
    let mut out = Vec::new();
    if over_budget(&t.class, t.duration_ms, t.ttft_ms) {
        out.push(OVER_BUDGET.to_string());
    }
    if t.guardrails
        .iter()
        .any(|g| g.kind == "grounding" && g.outcome != "pass")
    {
        out.push(GROUNDING.to_string());
    }
    let Some(request) = t.request.as_ref() else {
        return out;
    };
    let text = request.to_text();
    // Most requests carry no tools: skip the parse.
    if !text.contains("\"tool") {
        return out;
    }
    let Ok(body) = serde_json::from_str::<Value>(&text) else {
        return out;
    };
    let messages = body["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if repeated_calls(messages.iter().flat_map(message_tool_calls)) >= LOOP_CALLS {
        out.push(TOOL_LOOP.to_string());
    }
    let failed_tool = messages
        .iter()
        .rev()
        .take_while(|m| m["role"] == "tool")
        .any(|m| failed(&m["content"]));
    if failed_tool {
        let answer = t.response.as_ref().map(answer_text).unwrap_or_default();
        if !answer.is_empty() && !mentions_failure(&answer) {
            out.push(TOOL_FAILURE_UNMENTIONED.to_string());
        }
    }
    out
}

/// Whether a request ran past its class's budget.
pub fn over_budget(class: &str, duration_ms: f64, ttft_ms: Option<f64>) -> bool {
    match class {
        "sync" => duration_ms > 1_000.0,
        "progressive" => duration_ms > 5_000.0 || ttft_ms.is_some_and(|t| t > 500.0),
        "async" => duration_ms > 20_000.0,
        _ => false,
    }
}

/// `(name, arguments)` of each tool call an assistant message made; arguments compared
/// as parsed JSON, so spacing and key order do not hide a repeat.
fn message_tool_calls(m: &Value) -> Vec<(String, String)> {
    m["tool_calls"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let f = &c["function"];
            (
                f["name"].as_str().unwrap_or_default().to_string(),
                canonical_args(&f["arguments"]),
            )
        })
        .collect()
}

fn canonical_args(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::from_str::<Value>(s)
            .map(|p| sorted(&p).to_string())
            .unwrap_or_else(|_| s.trim().to_string()),
        other => sorted(other).to_string(),
    }
}

/// A JSON value with object keys in order.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                keys.into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The most times any one call repeats.
fn repeated_calls(calls: impl Iterator<Item = (String, String)>) -> usize {
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for c in calls {
        *counts.entry(c).or_default() += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

/// Whether a tool result reads as a failure: a JSON object with an `error` (or a
/// false `ok`/`success`, or a 4xx/5xx `status`), or text that says so.
fn failed(content: &Value) -> bool {
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => return false,
    };
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&text) {
        return obj.get("error").is_some_and(|e| !e.is_null() && e != false)
            || obj.get("ok") == Some(&Value::Bool(false))
            || obj.get("success") == Some(&Value::Bool(false))
            || obj
                .get("status")
                .and_then(Value::as_u64)
                .is_some_and(|s| s >= 400);
    }
    let lower = text.to_lowercase();
    [
        "error",
        "failed",
        "exception",
        "timed out",
        "timeout",
        "traceback",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// Whether an answer admits a failure.
pub fn mentions_failure(answer: &str) -> bool {
    let lower = answer.to_lowercase();
    [
        "error",
        "fail",
        "unable",
        "couldn't",
        "could not",
        "can't",
        "cannot",
        "problem",
        "issue",
        "unavailable",
        "not available",
        "try again",
        "sorry",
        "didn't work",
        "did not work",
    ]
    .iter()
    .any(|w| lower.contains(w))
}

/// The assistant's text in a stored response body.
fn answer_text(body: &Body) -> String {
    match body {
        Body::Completion(c) => c
            .choices
            .first()
            .and_then(|ch| ch.message.content.clone())
            .unwrap_or_default(),
        Body::Raw(_) | Body::Frames(_) => {
            let v: Value = serde_json::from_str(&body.to_text()).unwrap_or_default();
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    }
}

/// Flags over the app's OTLP spans of one trace or conversation (as `GET /v1/traces/{id}`
/// returns them, oldest first) and the gateway's answers after them (`(time in ms,
/// answer)`): failed tool spans the next answer ignores, and repeated tool calls.
pub fn span_flags(spans: &[Value], answers: &[(f64, String)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let tool = |s: &Value| -> Option<(String, String)> {
        let attrs = &s["attributes"];
        let name = attrs["gen_ai.tool.name"]
            .as_str()
            .or_else(|| attrs["tool.name"].as_str())
            .map(str::to_string)
            .or_else(|| {
                let n = s["name"].as_str()?;
                n.strip_prefix("execute_tool ")
                    .or_else(|| n.strip_prefix("tool "))
                    .map(str::to_string)
            })?;
        let args = attrs["gen_ai.tool.call.arguments"]
            .as_str()
            .or_else(|| attrs["tool.arguments"].as_str())
            .or_else(|| attrs["input.value"].as_str())
            .map(|a| canonical_args(&Value::String(a.to_string())))
            .unwrap_or_default();
        Some((name, args))
    };
    let calls: Vec<_> = spans.iter().filter_map(tool).collect();
    if repeated_calls(calls.into_iter()) >= LOOP_CALLS {
        out.push((
            TOOL_LOOP.to_string(),
            "one tool called with the same arguments 3 or more times".to_string(),
        ));
    }
    for s in spans {
        // Status code 2 is ERROR in OTLP.
        if s["status_code"] != 2 || tool(s).is_none() {
            continue;
        }
        let end = s["end_ms"].as_f64().unwrap_or(0.0);
        let next = answers.iter().find(|(at, _)| *at >= end);
        if let Some((_, answer)) = next
            && !mentions_failure(answer)
        {
            out.push((
                TOOL_FAILURE_UNMENTIONED.to_string(),
                format!(
                    "tool span `{}` failed and the next answer does not mention it",
                    s["name"].as_str().unwrap_or("?")
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite_sample;
    use bytes::Bytes;

    fn with_bodies(request: &str, answer: &str) -> Trace {
        let mut t = sqlite_sample("t", "s", "c");
        t.class = "sync".into();
        t.duration_ms = 10.0;
        t.request = Some(Body::Raw(Bytes::from(request.to_string())));
        t.response = Some(Body::Raw(Bytes::from(
            serde_json::json!({"choices": [{"message": {"role": "assistant", "content": answer}}]})
                .to_string(),
        )));
        t
    }

    const FAILED_TOOL: &str = r#"{"model":"chat","messages":[
        {"role":"user","content":"weather in Oslo?"},
        {"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}}]},
        {"role":"tool","tool_call_id":"1","content":"{\"error\":\"upstream timeout\"}"}]}"#;

    #[test]
    fn a_failed_tool_the_answer_ignores_is_flagged_and_one_it_admits_is_not() {
        let ignored = with_bodies(FAILED_TOOL, "It is 21°C and sunny in Oslo.");
        assert_eq!(flags(&ignored), vec![TOOL_FAILURE_UNMENTIONED]);
        let admitted = with_bodies(FAILED_TOOL, "Sorry, the weather service failed.");
        assert!(flags(&admitted).is_empty());
        let ok_tool =
            FAILED_TOOL.replace(r#"{\"error\":\"upstream timeout\"}"#, r#"{\"temp\":21}"#);
        assert!(flags(&with_bodies(&ok_tool, "21°C in Oslo.")).is_empty());
    }

    #[test]
    fn three_identical_tool_calls_are_a_loop_two_are_not() {
        let call = |args: &str| {
            format!(
                r#"{{"role":"assistant","tool_calls":[{{"id":"x","type":"function","function":{{"name":"search","arguments":{}}}}}]}},{{"role":"tool","tool_call_id":"x","content":"[]"}}"#,
                serde_json::to_string(args).unwrap()
            )
        };
        let body = |calls: Vec<String>| {
            format!(
                r#"{{"model":"chat","messages":[{{"role":"user","content":"find"}},{}]}}"#,
                calls.join(",")
            )
        };
        // Key order and spacing differ; the call is the same.
        let three = body(vec![
            call(r#"{"q":"a","n":1}"#),
            call(r#"{"n": 1, "q": "a"}"#),
            call(r#"{"q":"a","n":1}"#),
        ]);
        assert_eq!(flags(&with_bodies(&three, "none")), vec![TOOL_LOOP]);
        let varied = body(vec![
            call(r#"{"q":"a"}"#),
            call(r#"{"q":"b"}"#),
            call(r#"{"q":"a"}"#),
        ]);
        assert!(flags(&with_bodies(&varied, "none")).is_empty());
    }

    #[test]
    fn over_budget_follows_the_interaction_class() {
        assert!(over_budget("sync", 1_200.0, None));
        assert!(!over_budget("sync", 900.0, None));
        assert!(over_budget("progressive", 1_000.0, Some(700.0)));
        assert!(!over_budget("progressive", 4_000.0, Some(300.0)));
        assert!(!over_budget("async", 19_000.0, None));
        let mut t = sqlite_sample("t", "s", "c");
        t.class = "sync".into();
        t.duration_ms = 1_500.0;
        assert_eq!(flags(&t), vec![OVER_BUDGET]);
    }

    #[test]
    fn app_spans_flag_an_ignored_tool_error_and_a_loop() {
        let span = |name: &str, args: &str, status: i32, end: f64| {
            serde_json::json!({"name": name, "status_code": status, "end_ms": end,
                "attributes": {"gen_ai.tool.name": "lookup", "gen_ai.tool.call.arguments": args}})
        };
        let spans = vec![span("execute_tool lookup", "{\"id\":1}", 2, 10.0)];
        let flagged = span_flags(&spans, &[(20.0, "Your order shipped.".into())]);
        assert_eq!(flagged.len(), 1);
        assert_eq!(flagged[0].0, TOOL_FAILURE_UNMENTIONED);
        assert!(span_flags(&spans, &[(20.0, "The lookup failed.".into())]).is_empty());
        let looped: Vec<_> = (0..3)
            .map(|i| span("execute_tool lookup", "{\"id\":1}", 1, f64::from(i)))
            .collect();
        assert_eq!(span_flags(&looped, &[])[0].0, TOOL_LOOP);
    }
}
